"""A query monitor in an experiment: a run it catches is recorded as 'blocked' with the queries it
took to catch it (nothing more bought), counts as done on a re-run, and shows in the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import yaml

from stealkit.attacks.base import SCORE_OUTPUTS, Attack, AttackResult
from stealkit.cli import main

pytest.importorskip("mlxtend")


class Steps(Attack):
    """Data-free and JBDA-like: 10 random seeds, then rounds of small signed steps from them."""

    needs_pool = False
    accepts = SCORE_OUTPUTS

    def run(self, oracle, *, pool=None, surrogate, budget, seed=0, device=None, monitor=None):
        self.refuse_pool(pool)
        g = torch.Generator().manual_seed(seed)
        cur = torch.rand(10, *oracle.input_spec.shape, generator=g)
        spent = 0
        while spent + len(cur) <= budget:
            oracle.query(cur)
            spent += len(cur)
            cur = (cur + 0.05 * torch.sign(torch.randn(cur.shape, generator=g))).clamp(0, 1)
        return AttackResult(surrogate=surrogate.eval(), queries=spent)

    def __repr__(self) -> str:
        return "Steps()"


def test_a_caught_run_is_blocked_recorded_and_not_rerun(
    tmp_path: Path, temp_attack, capsys
) -> None:
    temp_attack("test-steps", Steps)
    data = {
        "name": "watched",
        "victim": {"name": "digit-recognizer", "output": "probabilities"},
        "eval": {"dataset": "mnist-5k", "split": "test", "limit": 200},
        "surrogate": {"arch": "cnn2-small"},
        "attacks": {"steps": {"type": "test-steps"}},
        "defenses": {"prada": {"type": "prada", "params": {"delta": 0.9, "min_queries": 60}}},
        "grid": [{"attacks": ["steps"], "defenses": ["prada"], "budgets": [1000]}],
    }
    path = tmp_path / "watched.yaml"
    path.write_text(yaml.safe_dump(data))
    out = tmp_path / "runs"
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    assert "BLOCKED: blocked by the defence after" in capsys.readouterr().err
    results = json.loads((out / "watched" / "results.json").read_text())
    (run,) = results["runs"]
    assert run["status"] == "blocked" and 60 <= run["ledger"]["spent"] < 1000
    assert results["complete"] is True
    honest = next(d for d in results["defenses"] if d["name"] == "prada")
    assert honest["victim_accuracy"] > 0.95  # 200 natural digits from one honest user: no alarm
    page = (out / "watched" / "report.html").read_text()
    assert "Blocked and failed runs" in page and "blocked by the defence after" in page
    assert main(["run", str(path), "--out", str(out), "--no-progress"]) == 0
    assert "1 already done" in capsys.readouterr().err  # a blocked run is an outcome: not redone
