"""One experiment path for every family: an attack registered in this file runs through
`stealkit run` with no change to the runner or the config code, judged by its family's judge."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from stealkit.attacks import Attack, AttackResult, TrainRecipe
from stealkit.attacks.base import SCORE_OUTPUTS, pool_spend_limit, spend_limit, train_surrogate
from stealkit.cli import main
from stealkit.oracle import OutputKind

pytest.importorskip("mlxtend")


class FirstImages(Attack):
    """A pool attack: buy the first ``budget`` pool images' answers and distil them."""

    def __init__(self, *, query_batch: int = 50, epochs: int = 2) -> None:
        if query_batch < 1:
            raise ValueError(f"query_batch must be >= 1, got {query_batch}")
        self.query_batch, self.epochs = query_batch, epochs

    def run(self, oracle, *, pool=None, surrogate, budget, seed=0, device=None, monitor=None):
        pool = self.require_pool(pool)
        budget = pool_spend_limit(oracle, pool, budget)
        xs, ys = [], []
        for i in range(0, budget, self.query_batch):
            x = pool.images(torch.arange(i, min(budget, i + self.query_batch)))
            xs.append(x)
            ys.append(oracle.query(x).probs())
        recipe = TrainRecipe(epochs=self.epochs, min_steps=10)
        train_surrogate(
            surrogate, torch.cat(xs), torch.cat(ys), recipe, hard=False, seed=seed, device=device
        )
        return AttackResult(surrogate=surrogate.eval(), queries=budget)

    def __repr__(self) -> str:
        return f"FirstImages(query_batch={self.query_batch}, epochs={self.epochs})"


class Noise(Attack):
    """A data-free attack on scores: uniform noise images, then distillation."""

    needs_pool = False
    accepts = SCORE_OUTPUTS

    def run(self, oracle, *, pool=None, surrogate, budget, seed=0, device=None, monitor=None):
        self.refuse_pool(pool)
        budget = spend_limit(oracle, budget)
        x = torch.rand(
            budget, *oracle.input_spec.shape, generator=torch.Generator().manual_seed(seed)
        )
        y = oracle.query(x).probs()
        train_surrogate(
            surrogate,
            x,
            y,
            TrainRecipe(epochs=1, min_steps=5),
            hard=False,
            seed=seed,
            device=device,
        )
        if monitor is not None:
            monitor(surrogate, budget)
        return AttackResult(surrogate=surrogate.eval(), queries=budget)

    def __repr__(self) -> str:
        return "Noise()"


def _config(tmp_path: Path, **extra: Any) -> Path:
    data = {
        "name": "toy",
        "victim": {"name": "digit-recognizer", "output": "probabilities"},
        "eval": {"dataset": "mnist-5k", "split": "all", "limit": 200},
        "surrogate": {"arch": "cnn2-small"},
        **extra,
    }
    path = tmp_path / "toy.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_toy_pool_attack_runs_through_stealkit_run(tmp_path: Path, temp_attack) -> None:
    temp_attack("test-first-images", FirstImages)
    cfg = _config(
        tmp_path,
        pool={"dataset": "digits", "split": "train", "limit": 300},
        attacks={"first": {"type": "test-first-images", "params": {"query_batch": 40}}},
        grid=[{"attacks": ["first"], "defenses": ["none", "top1"], "budgets": [120]}],
    )
    assert main(["run", str(cfg), "--out", str(tmp_path / "runs"), "--no-progress"]) == 0
    results = json.loads((tmp_path / "runs" / "toy" / "results.json").read_text())
    assert results["complete"] is True
    assert results["victim"]["kind"] == "classifier"
    assert results["victim"]["meta"]["source"] == "PyPI digit-recognizer-py==0.1.0"
    runs = {r["defense"]: r for r in results["runs"]}
    for r in runs.values():
        assert r["status"] == "ok" and r["ledger"]["spent"] == 120
        assert r["attack_repr"] == "FirstImages(query_batch=40, epochs=2)"
        assert set(r["metrics"]) >= {"agreement", "accuracy", "relative_accuracy"}
        assert 0.0 <= r["metrics"]["agreement"] <= 1.0
    assert runs["top1"]["ledger"]["calls"] == 3  # 120 queries in batches of 40


def test_a_toy_attacks_declarations_drive_the_checks(tmp_path: Path, temp_attack, capsys) -> None:
    temp_attack("test-noise", Noise)
    grid = [{"attacks": ["noise"], "budgets": [64]}]
    attacks = {"noise": {"type": "test-noise"}}
    # data-free: no pool needed; but it takes scores, so a label-only victim is refused
    bad = _config(
        tmp_path, attacks=attacks, grid=grid, victim={"name": "digit-recognizer", "output": "label"}
    )
    assert main(["run", str(bad), "--dry-run"]) == 2
    assert "grid.0: noise learns from" in capsys.readouterr().err
    good = _config(tmp_path, attacks=attacks, grid=grid, curve_every=32)
    assert main(["run", str(good), "--out", str(tmp_path / "runs"), "--no-progress"]) == 0
    (run,) = json.loads((tmp_path / "runs" / "toy" / "results.json").read_text())["runs"]
    assert run["status"] == "ok" and run["ledger"]["spent"] == 64
    assert [p["queries"] for p in run["curve"]] == [64.0]  # the monitor it was given


def test_the_family_of_the_victim_picks_the_judge(tmp_path: Path) -> None:
    from stealkit.experiments.judges import ClassifierJudge, ProbeJudge, get_family

    assert get_family("classifier").judge is ClassifierJudge
    assert get_family("encoder").judge is ProbeJudge
    assert OutputKind.EMBEDDING in get_family("encoder").outputs
    assert get_family("encoder").needs_probe and not get_family("classifier").needs_probe


def test_pool_attacks_refuse_a_missing_pool_before_buying(make_oracle) -> None:
    from stealkit.attacks import KnockoffNets

    oracle = make_oracle("probabilities", budget=10)
    with pytest.raises(ValueError, match="pass pool=QueryPool"):
        KnockoffNets().run(oracle, surrogate=torch.nn.Linear(1, 1), budget=10)
    assert oracle.ledger.spent == 0
