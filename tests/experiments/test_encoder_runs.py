"""An encoder grid end to end: embedding victim, encoder attacks, embedding defences, probes."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml

from stealkit.cli import main
from stealkit.errors import ConfigError
from stealkit.experiments.config import parse_config
from stealkit.report import render_markdown

ENCODER_MODULE = """
import torch
from torch import nn


def build(seed: int = 0):
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(),
    )
"""

CONFIG = {
    "name": "enc-smoke",
    "victim": {
        "name": "python",
        "params": {
            "target": "tiny_encoder_victim:build",
            "kind": "encoder",
            "spec": {"channels": 1, "height": 28, "width": 28},
        },
        "output": "embedding",
    },
    "pool": {"dataset": "digits", "split": "train", "limit": 300},
    "probe": {"dataset": "digits", "split": "train", "limit": 300, "epochs": 5},
    "eval": {"dataset": "digits", "split": "test", "limit": 200},
    "surrogate": {"arch": "cnn2-small"},
    "attacks": {
        "mse": {
            "type": "encoder",
            "params": {"loss": "mse", "recipe": {"epochs": 2, "min_steps": 10}},
        },
        "cs": {"type": "contsteal", "params": {"recipe": {"epochs": 2, "min_steps": 10}}},
    },
    "grid": [
        {"attacks": ["mse", "cs"], "budgets": [200]},
        {"attacks": ["mse"], "defenses": ["emb-noise", "emb-round1"], "budgets": [200]},
    ],
}


def test_encoder_grid_runs_and_is_judged_by_linear_probes(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "tiny_encoder_victim.py").write_text(ENCODER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = tmp_path / "enc.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    code = main(["run", str(cfg), "--out", str(tmp_path), "--no-progress", "--device", "cpu"])
    assert code == 0
    results = json.loads((tmp_path / "enc-smoke" / "results.json").read_text())
    victim_acc = results["victim"]["test_accuracy"]
    assert 0.3 < victim_acc <= 1.0  # a random conv encoder + linear probe beats chance on digits
    assert [(r["attack"], r["defense"]) for r in results["runs"]] == [
        ("mse", "none"),
        ("cs", "none"),
        ("mse", "emb-noise"),
        ("mse", "emb-round1"),
    ]
    for run in results["runs"]:
        assert run["status"] == "ok", run["error"]
        assert run["ledger"]["spent"] == 200
        m = run["metrics"]
        assert m["victim_accuracy"] == victim_acc
        assert 0.0 <= m["agreement"] <= 1.0 and -1.0 <= m["embedding_cosine"] <= 1.0
    utility = {d["name"]: d for d in results["defenses"]}
    assert utility["none"]["victim_accuracy"] == pytest.approx(victim_acc)
    assert utility["none"]["mean_relative_l2_change"] == pytest.approx(0.0, abs=1e-6)
    assert utility["emb-noise"]["mean_relative_l2_change"] > 0.05  # sigma 0.1 of each row's RMS
    html = (tmp_path / "enc-smoke" / "report.html").read_text()
    assert "EmbeddingNoise" in html
    assert "linear-probe" in html and "relative L2 change" in html  # encoder wording, not L1
    md = render_markdown(results)
    assert "linear-probe" in md and "relative L2 change" in md and "mean L1 change" not in md


def _with(**changes) -> dict:
    data = copy.deepcopy(CONFIG)
    data.update(changes)
    return data


@pytest.mark.parametrize(
    ("data", "says"),
    [
        (_with(probe=None), "probe:"),
        (_with(grid=[{"attacks": ["copycat"], "budgets": [10]}]), "copycat"),
        (_with(grid=[{"attacks": ["mse"], "defenses": ["top1"], "budgets": [10]}]), "top1"),
        (_with(transfer={"eps": 0.1}), "transfer"),
    ],
    ids=["no probe", "classifier attack", "classifier defence", "transfer"],
)
def test_encoder_config_mistakes_are_named(data: dict, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        parse_config(data, "enc.yaml")


def test_encoder_attacks_refuse_a_classifier_victim() -> None:
    data = _with(victim={"name": "digit-recognizer", "output": "probabilities"})
    data.pop("probe")
    with pytest.raises(ConfigError, match="steals encoders, but the victim is a classifier"):
        parse_config(data, "enc.yaml")
