"""ActiveThief on the row-band toy victim: above chance, exactly the budget, each image bought
once; k-center, entropy and DeepFool against slow references and hand computations."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from stealkit.attacks import ActiveThief, TrainRecipe, build_attack
from stealkit.attacks.activethief import (
    STRATEGIES,
    deepfool_norms,
    entropy,
    entropy_pick,
    kcenter_greedy,
    round_sizes,
)
from stealkit.data.pool import QueryPool
from stealkit.errors import BudgetExceeded
from stealkit.metrics import agreement
from stealkit.oracle import Ledger, LocalOracle
from toys import FINAL, ROUND, SPEC, Recording, RowBands, mlp_surrogate, noise_pool


def _thief(**kw) -> ActiveThief:
    return ActiveThief(**(dict(rounds=3, round_recipe=ROUND, recipe=FINAL) | kw))


def _bought_rows(oracle: Recording, pool: QueryPool) -> list[int]:
    """Pool indices of the queried images (the noise pool's images are all distinct)."""
    flat = pool.images(torch.arange(len(pool))).flatten(1)
    queried = torch.cat(oracle.seen).flatten(1)
    hits = (queried[:, None, :] == flat[None, :, :]).all(dim=2)
    assert bool((hits.sum(dim=1) == 1).all())  # every query is one pool image
    return hits.float().argmax(dim=1).tolist()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_beats_chance_spends_exactly_the_budget_and_buys_each_image_once(strategy):
    budget = 211  # 21 at random, then 64 + 63 + 63
    pool = noise_pool(600)
    oracle = Recording(RowBands(), SPEC, output="label", ledger=Ledger(budget=budget))
    calls: list[int] = []
    result = _thief(strategy=strategy).run(
        oracle,
        pool=pool,
        surrogate=mlp_surrogate(),
        budget=budget,
        device="cpu",
        monitor=lambda s, n: calls.append(n),
    )
    assert oracle.ledger.spent == budget == result.queries
    assert oracle.ledger.refused_calls == 0
    assert calls == [21, 85, 148, 211]  # after each round, and once at the end
    rows = _bought_rows(oracle, pool)
    assert len(set(rows)) == budget  # no image bought twice
    x = torch.rand((500, 1, 8, 8), generator=torch.Generator().manual_seed(5))
    victim = RowBands()(x).argmax(1)
    assert torch.bincount(victim).max() / len(x) < 0.3  # a constant guess agrees < 30%
    with torch.no_grad():
        assert agreement(result.surrogate(x).argmax(1), victim) > 0.5  # chance: 0.25
    with pytest.raises(BudgetExceeded):
        oracle.query(x[:1])


def test_soft_answers_and_a_candidate_cap():
    pool = noise_pool(600)
    oracle = Recording(RowBands(), SPEC, output="probabilities", ledger=Ledger(budget=150))
    _thief(strategy="dfal-kcenter", candidates=100, preselect=2).run(
        oracle, pool=pool, surrogate=mlp_surrogate(), budget=150, device="cpu"
    )
    assert oracle.ledger.spent == 150
    assert len(set(_bought_rows(oracle, pool))) == 150


def test_deterministic_at_a_fixed_seed():
    runs = []
    for _ in range(2):
        pool = noise_pool(600)
        oracle = Recording(RowBands(), SPEC, output="label", ledger=Ledger(budget=120))
        r = _thief(strategy="kcenter").run(
            oracle, pool=pool, surrogate=mlp_surrogate(), budget=120, seed=7, device="cpu"
        )
        with torch.no_grad():
            runs.append((_bought_rows(oracle, pool), r.surrogate(pool.images(torch.arange(50)))))
    assert runs[0][0] == runs[1][0]
    assert torch.equal(runs[0][1], runs[1][1])


def _kcenter_reference(bought: list[list[float]], cand: list[list[float]], k: int) -> list[int]:
    """The greedy rule written out with loops."""
    centres = [list(b) for b in bought]
    picks: list[int] = []
    for _ in range(k):
        best, best_d = -1, -1.0
        for j, c in enumerate(cand):
            if j in picks:
                continue
            d = min(
                (sum((a - b) ** 2 for a, b in zip(c, z, strict=True)) ** 0.5 for z in centres),
                default=float("inf"),
            )
            if d > best_d + 1e-9:
                best, best_d = j, d
        picks.append(best)
        centres.append(cand[best])
    return picks


@settings(max_examples=60, deadline=None)
@given(
    m=st.integers(0, 4),
    n=st.integers(1, 10),
    d=st.integers(1, 3),
    frac=st.floats(0.0, 1.0),
    seed=st.integers(0, 10_000),
)
def test_kcenter_greedy_matches_a_loop_reference(m, n, d, frac, seed):
    g = torch.Generator().manual_seed(seed)
    bought, cand = torch.rand((m, d), generator=g), torch.rand((n, d), generator=g)
    k = max(1, round(frac * n))
    got = kcenter_greedy(bought, cand, k).tolist()
    assert got == _kcenter_reference(bought.tolist(), cand.tolist(), k)
    assert len(set(got)) == k


def _radius(points: torch.Tensor, centres) -> float:
    return float(torch.cdist(points, points[list(centres)]).min(dim=1).values.max())


def test_kcenter_greedy_is_within_twice_the_best_cover_radius():
    """Gonzalez's bound: the greedy centres cover every candidate within twice the radius of the
    best k of them (brute force over all k-subsets)."""
    for seed in range(10):
        cand = torch.rand((8, 2), generator=torch.Generator().manual_seed(seed))
        k = 3
        picks = kcenter_greedy(torch.empty(0, 2), cand, k)

        best = min(_radius(cand, c) for c in itertools.combinations(range(8), k))
        assert _radius(cand, picks.tolist()) <= 2 * best + 1e-6
    with pytest.raises(ValueError, match="cannot pick"):
        kcenter_greedy(torch.rand(2, 2), torch.rand(3, 2), 4)


def test_entropy_pick_picks_the_highest_entropy_rows():
    probs = torch.tensor(
        [
            [1.0, 0.0, 0.0, 0.0],  # H = 0
            [0.25, 0.25, 0.25, 0.25],  # H = log 4, the most
            [0.5, 0.5, 0.0, 0.0],  # log 2
            [0.7, 0.1, 0.1, 0.1],
            [0.4, 0.3, 0.3, 0.0],
        ]
    )
    assert entropy(probs)[1] == pytest.approx(float(torch.log(torch.tensor(4.0))))
    assert entropy(probs)[0] == 0.0
    assert entropy_pick(probs, 2).tolist() == [1, 4]
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(3 * torch.randn((50, 5), generator=g), dim=1)
    h = [-(sum(v * torch.log(v) for v in row)).item() for row in p]
    assert set(entropy_pick(p, 7).tolist()) == set(sorted(range(50), key=lambda i: -h[i])[:7])


def test_deepfool_on_a_linear_model_finds_the_nearest_boundary():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    nn.init.normal_(model[1].weight, generator=g)
    x = torch.rand((10, 1, 8, 8), generator=g)
    w, b = model[1].weight.detach(), model[1].bias.detach()
    f = x.flatten(1) @ w.T + b
    k0 = f.argmax(1)
    expected = []
    for i in range(10):  # min_k |f_k - f_k0| / ||w_k - w_k0||, by hand
        dists = [
            float((f[i, k] - f[i, k0[i]]).abs() / (w[k] - w[k0[i]]).norm())
            for k in range(4)
            if k != k0[i]
        ]
        expected.append(min(dists))
    norms = deepfool_norms(model, x, steps=5, overshoot=0.02)
    assert torch.allclose(norms, 1.02 * torch.tensor(expected), rtol=1e-4)
    model.train()
    assert torch.allclose(deepfool_norms(model, x, steps=1, overshoot=0.02), norms, rtol=1e-4)
    assert model.training  # evaluated in eval mode, the mode restored


def test_deepfool_steps_each_row_as_if_it_were_alone():
    # a non-linear model: rows cross their boundary after different numbers of steps, and the
    # rows already across must neither move nor change the others' steps
    g = torch.Generator().manual_seed(1)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 12), nn.Tanh(), nn.Linear(12, 3))
    for prm in model.parameters():
        nn.init.normal_(prm, generator=g)
    x = torch.rand((12, 1, 4, 4), generator=g)
    together = deepfool_norms(model, x, steps=6)
    alone = torch.cat([deepfool_norms(model, x[i : i + 1], steps=6) for i in range(len(x))])
    assert torch.allclose(together, alone, rtol=1e-5, atol=1e-7)
    assert len(set(together.round(decimals=4).tolist())) > 6  # the rows really differ


def test_round_sizes_by_hand():
    assert round_sizes(100, 10, 4) == [23, 23, 22, 22]
    assert round_sizes(5, 3, 4) == [1, 1]
    assert round_sizes(10, 10, 3) == []


def test_refusals_come_before_any_query():
    oracle = LocalOracle(RowBands(), SPEC, output="embedding", ledger=Ledger(budget=100))
    with pytest.raises(ValueError, match="learns from"):
        _thief().run(oracle, pool=noise_pool(600), surrogate=mlp_surrogate(), budget=50)
    oracle = LocalOracle(RowBands(), SPEC, output="label", ledger=Ledger(budget=100))
    with pytest.raises(ValueError, match="exceeds the 40 images"):
        _thief().run(oracle, pool=noise_pool(40), surrogate=mlp_surrogate(), budget=50)
    with pytest.raises(ValueError, match="pass pool="):
        _thief().run(oracle, surrogate=mlp_surrogate(), budget=50)
    assert oracle.ledger.spent == 0


def test_bad_hyperparameters_raise_and_repr_names_them():
    for kw, word in [
        ({"strategy": "bald"}, "strategy"),
        ({"rounds": 0}, "rounds"),
        ({"initial_fraction": 1.0}, "initial_fraction"),
        ({"candidates": 0}, "candidates"),
        ({"deepfool_steps": 0}, "deepfool_steps"),
    ]:
        with pytest.raises(ValueError, match=word):
            ActiveThief(**kw)
    a = build_attack("activethief", strategy="entropy", rounds=4, round_recipe={"epochs": 2})
    assert a.round_recipe == TrainRecipe(epochs=2)
    assert "strategy='entropy'" in repr(a) and "rounds=4" in repr(a)
    assert ActiveThief.needs_pool and ActiveThief.steals == "classifier"
