"""`executor: ray`: each run a Ray task on a local instance, results streamed into the same
store, equal to the local executor's at the same seeds (and the same torch thread count)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch

from stealkit.experiments.config import parse_config
from stealkit.experiments.runner import Experiment

pytest.importorskip("mlxtend")
ray = pytest.importorskip("ray", reason="Ray is an optional extra; scripts/setup.sh installs it")

RECIPE = {"epochs": 1, "min_steps": 10}
CONFIG: dict[str, Any] = {
    "name": "grid",
    "victim": {"name": "digit-recognizer", "output": "probabilities"},
    "pool": {"dataset": "digits", "split": "train", "limit": 400},
    "eval": {"dataset": "mnist-5k", "split": "all", "limit": 200},
    "surrogate": {"arch": "cnn2-small"},
    "attacks": {
        "kr": {
            "type": "knockoff",
            "params": {"strategy": "random", "online_steps": 0, "recipe": RECIPE},
        },
        "cc": {"type": "copycat", "params": {"recipe": RECIPE}},
    },
    "grid": [
        {"attacks": ["kr"], "defenses": ["none", "top1"], "budgets": [120]},
        {"attacks": ["cc"], "budgets": [150], "seeds": [1]},
    ],
}


def _key(r: dict[str, Any]) -> tuple[Any, ...]:
    return (r["attack"], r["defense"], r["budget"], r["seed"])


def test_ray_gives_the_local_executors_records(tmp_path: Path) -> None:
    threads = torch.get_num_threads()
    local = Experiment(parse_config(CONFIG), tmp_path / "local", progress=False).run()
    data = copy.deepcopy(CONFIG)
    data["executor"] = {"kind": "ray", "cpus_per_run": threads}
    remote = Experiment(parse_config(data), tmp_path / "ray", progress=False).run()
    assert remote["complete"] is True and len(remote["runs"]) == 3
    by_key = {_key(r): r for r in local["runs"]}
    for r in remote["runs"]:
        twin = by_key[_key(r)]
        assert r["status"] == twin["status"] == "ok"
        assert r["metrics"] == twin["metrics"]  # equal, not close: same seeds, same threads
        assert r["ledger"] == twin["ledger"] and r["config_hash"] == twin["config_hash"]
        assert r["threads"] == twin["threads"] == threads
    # resume works the same way: a second Ray run skips everything and buys nothing
    again = Experiment(parse_config(data), tmp_path / "ray", progress=False).run()
    inv = again["invocations"][-1]
    assert (inv["ran"], inv["skipped"], inv["queries_bought"]) == (0, 3, 0)
    assert not ray.is_initialized()  # the local instance it started is shut down
