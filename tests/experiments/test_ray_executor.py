"""`executor: ray`: each run a Ray task on a local instance, results streamed into the same
store, equal to the local executor's at the same seeds (and the same torch thread count)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

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


def test_sigint_on_ray_records_the_run_in_flight_with_its_queries(tmp_path: Path, cli_run) -> None:
    """Through the CLI: a grid on Ray interrupted after its first run keeps what it bought."""
    data = copy.deepcopy(CONFIG)
    data["executor"] = {"kind": "ray", "cpus_per_run": 2}  # one run at a time
    slow = {"epochs": 1, "min_steps": 300}
    data["attacks"] = {
        "kr": {
            "type": "knockoff",
            "params": {"strategy": "random", "online_steps": 0, "query_batch": 10, "recipe": slow},
        }
    }
    data["grid"] = [{"attacks": ["kr"], "budgets": [100, 110, 120]}]
    path = tmp_path / "ray.yaml"
    path.write_text(yaml.safe_dump(data))
    run = cli_run(path, tmp_path / "runs", "grid")
    code, err = run.interrupt_after(1, timeout=180, pause=1.0)  # the second run is buying
    assert code == 130, err
    first = run.read()
    inv = first["invocations"][0]
    assert inv["status"] == "interrupted" and first["complete"] is False
    assert inv["queries_bought"] == sum(r["ledger"]["spent"] for r in first["runs"])
    for r in first["runs"]:
        assert r["status"] in ("ok", "interrupted")
        assert 0 < r["ledger"]["spent"] <= r["budget"]
    ok = {r["budget"] for r in first["runs"] if r["status"] == "ok"}
    again = run.again()
    assert again.returncode == 0, again.stderr
    second = run.read()
    assert second["complete"] is True
    assert second["invocations"][1]["queries_bought"] == sum({100, 110, 120} - ok)
