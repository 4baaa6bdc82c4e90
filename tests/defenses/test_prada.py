"""PRADA (Juuti et al. 2019): its pure pieces against hand computations, and the monitor: a
JBDA-like stream of small steps from a few seeds is caught and refused uncharged, per client,
while natural queries from another client pass."""

from __future__ import annotations

import math

import pytest
import torch

from stealkit.defenses import DefendedOracle, build_defense
from stealkit.defenses.prada import (
    Prada,
    _Grown,
    growth_threshold,
    min_distance,
    shapiro_w,
)
from stealkit.errors import QueryRefused
from stealkit.oracle import InputSpec, Ledger, LocalOracle
from toys import RowBands


def test_min_distance_and_threshold_by_hand() -> None:
    seen = torch.tensor([[0.0, 0.0], [3.0, 4.0]])
    assert min_distance(torch.tensor([3.0, 0.0]), seen) == pytest.approx(3.0)
    assert growth_threshold([1.0]) == 0.0
    d = [1.0, 2.0, 3.0]  # mean 2, sample std 1
    assert growth_threshold(d) == pytest.approx(1.0)
    assert growth_threshold([1.0, 9.0]) == 0.0  # mean - std < 0 is clipped


def test_the_growing_set_keeps_every_row_and_the_threshold_of_its_distances() -> None:
    gen = torch.Generator().manual_seed(3)
    rows = torch.rand(40, 5, generator=gen)
    grown = _Grown(rows[0])
    for r in rows[1:]:  # past the first buffer of 16: it must grow without losing rows
        grown.add(r)
    assert grown.n == 40 and torch.equal(grown.rows[: grown.n], rows)
    d = (torch.rand(30, generator=gen, dtype=torch.float64) * 4).tolist()
    for i, v in enumerate(d, start=1):
        grown.record(v)
        assert grown.threshold() == pytest.approx(growth_threshold(d[:i]), abs=1e-9)


def test_shapiro_w_tells_normal_from_piled_up_distances() -> None:
    g = torch.Generator().manual_seed(0)
    normal = (torch.randn(300, generator=g) + 5).tolist()
    piled = [0.1] * 250 + (torch.rand(50, generator=g) * 5 + 3).tolist()
    assert shapiro_w(normal) > 0.98
    assert shapiro_w(piled) < 0.7
    assert shapiro_w([1.0, 1.0]) == 1.0 and shapiro_w([2.0] * 5) == 0.0


def _jbda_like(seeds: torch.Tensor, rounds: int, step: float = 0.1) -> torch.Tensor:
    """Each round moves the last round's images by step * a random sign (Jacobian-style)."""
    g = torch.Generator().manual_seed(1)
    out, cur = [seeds], seeds
    for _ in range(rounds):
        cur = (cur + step * torch.sign(torch.randn(cur.shape, generator=g))).clamp(0, 1)
        out.append(cur)
    return torch.cat(out)


def test_a_synthetic_stream_is_refused_and_natural_queries_pass() -> None:
    spec = InputSpec(1, 8, 8)
    monitor = Prada(delta=0.9, min_queries=60)
    g = torch.Generator().manual_seed(0)
    natural = torch.rand(300, 1, 8, 8, generator=g)
    thief_ledger, honest_ledger = Ledger(), Ledger()
    thief_inner = LocalOracle(RowBands(), spec, ledger=thief_ledger)
    honest_inner = LocalOracle(RowBands(), spec, ledger=honest_ledger)
    thief_inner.client, honest_inner.client = "thief", "honest"
    thief, honest = DefendedOracle(thief_inner, monitor), DefendedOracle(honest_inner, monitor)
    monitor.reset = lambda: None  # type: ignore[method-assign]  # the two oracles share its state
    attack = _jbda_like(natural[:20], rounds=14)
    refused_at = None
    for i in range(0, len(attack), 20):
        try:
            thief.query(attack[i : i + 20])
        except QueryRefused:
            refused_at = i
            break
    for i in range(0, len(natural), 20):  # another key, natural images: never alarmed
        honest.query(natural[i : i + 20])
    assert refused_at is not None and refused_at < len(attack)
    assert thief_ledger.spent == refused_at  # the refused batch cost nothing
    assert "thief" in monitor.alarms and "honest" not in monitor.alarms
    w = monitor.statistic("honest")
    assert w is not None and w > 0.9 and not math.isnan(w)
    with pytest.raises(QueryRefused, match="blocked client 'thief'"):
        thief.query(natural[:5])  # blocked from now on
    honest.query(torch.rand(5, 1, 8, 8, generator=g))  # new natural images still pass


def test_flag_answers_but_records_the_alarm() -> None:
    monitor = build_defense("prada", delta=0.9, min_queries=60, action="flag")
    oracle = DefendedOracle(LocalOracle(RowBands(), InputSpec(1, 8, 8), ledger=Ledger()), monitor)
    attack = _jbda_like(torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(2)), 10)
    for i in range(0, len(attack), 22):
        oracle.query(attack[i : i + 22])
    assert oracle.ledger.spent == len(attack)  # everything answered and charged
    assert isinstance(monitor, Prada) and monitor.alarms.get("thief", 10**9) <= len(attack)


@pytest.mark.parametrize(
    ("kw", "match"),
    [({"delta": 1.5}, "delta"), ({"min_queries": 2}, "min_queries"), ({"action": "ban"}, "action")],
)
def test_bad_settings_are_refused(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Prada(**kw)


def test_a_monitor_that_blocks_the_honest_user_is_reported_not_fatal() -> None:
    from stealkit.data.dataset import ImageDataset
    from stealkit.experiments.judges import ClassifierJudge
    from stealkit.victims.base import Victim

    victim = Victim("rowbands", RowBands(), InputSpec(1, 8, 8))
    seeds = (torch.rand(10, 1, 8, 8, generator=torch.Generator().manual_seed(3)) * 255).to(
        torch.uint8
    )
    repeats = seeds.repeat(30, 1, 1, 1)  # an honest user who sends the same images again and again
    judge = ClassifierJudge(
        victim, eval_set=ImageDataset("rep", repeats), device=torch.device("cpu")
    )
    row = judge.defense_utility("prada", Prada(delta=0.9, min_queries=50))
    assert row["victim_accuracy"] is None and "PRADA blocked" in row["refused_honest_user"]
