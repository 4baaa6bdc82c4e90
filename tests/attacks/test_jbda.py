"""JBDA and JBDA-TR on the row-band toy victim: above chance, exactly the budget, the step maths."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stealkit.attacks import JBDA, TrainRecipe, build_attack
from stealkit.attacks.jbda import jacobian_step, lambda_schedule, random_other_classes
from stealkit.errors import BudgetExceeded
from stealkit.metrics import ConvergenceCurve, agreement
from stealkit.oracle import Ledger, LocalOracle
from toys import FINAL, ROUND, SPEC, Recording, RowBands, mlp_surrogate, noise_pool


def _jbda(**kw) -> JBDA:
    return JBDA(**(dict(seed_size=20, round_recipe=ROUND, recipe=FINAL) | kw))


def _held_out() -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.rand((500, 1, 8, 8), generator=torch.Generator().manual_seed(5))
    return x, RowBands()(x).argmax(1)


@pytest.mark.parametrize("variant", ["jbda", "jbda-tr"])
@pytest.mark.parametrize("output", ["label", "probabilities"])
def test_beats_chance_and_spends_exactly_the_budget(variant, output):
    budget = 333  # 20 -> 40 -> 80 -> 160 -> 320 -> 333: the last augmentation is truncated
    oracle = Recording(RowBands(), SPEC, output=output, ledger=Ledger(budget=budget))
    result = _jbda(variant=variant).run(
        oracle, pool=noise_pool(200), surrogate=mlp_surrogate(), budget=budget, device="cpu"
    )
    assert oracle.ledger.spent == budget == result.queries
    assert oracle.ledger.refused_calls == 0
    assert [h["set"] for h in result.history] == [20, 40, 80, 160, 320, 333]
    queried = torch.cat(oracle.seen)
    s0 = noise_pool(200).images(
        torch.randperm(len(noise_pool(200)), generator=torch.Generator().manual_seed(0))[:20]
    )
    assert torch.equal(queried[:20], s0)  # S_0: 20 pool images drawn with the run's seed
    assert float(queried.min()) >= 0.0 and float(queried.max()) <= 1.0  # clipped to the range
    x, victim = _held_out()
    assert torch.bincount(victim).max() / len(x) < 0.3  # a constant guess agrees < 30%
    with torch.no_grad():
        assert agreement(result.surrogate(x).argmax(1), victim) > 0.4  # chance: 0.25
    with pytest.raises(BudgetExceeded):
        oracle.query(x[:1])


def test_new_points_are_jacobian_steps_of_the_previous_set():
    """Each augmentation buys clip(x + lambda_rho sign(J)) of points already held: on RowBands
    every new point differs from some earlier point by exactly lambda in each unclipped pixel."""
    oracle = Recording(RowBands(), SPEC, output="label", ledger=Ledger(budget=80))
    _jbda(lam=0.05).run(
        oracle, pool=noise_pool(200), surrogate=mlp_surrogate(), budget=80, device="cpu"
    )
    queried = torch.cat(oracle.seen)
    for n in (20, 40):
        old, new = queried[:n], queried[n : 2 * n]
        d = (new - old).abs()  # S_{rho+1} = S_rho U step(S_rho), in S_rho's order
        interior = (old > 0.05) & (old < 0.95)
        assert torch.allclose(d[interior], torch.full_like(d[interior], 0.05), atol=1e-6)


def test_reservoir_augments_only_kappa_points_per_epoch():
    oracle = LocalOracle(RowBands(), SPEC, output="label", ledger=Ledger(budget=95))
    result = _jbda(reservoir=15, reservoir_after=1).run(
        oracle, pool=noise_pool(200), surrogate=mlp_surrogate(), budget=95, device="cpu"
    )
    assert [h["set"] for h in result.history] == [20, 40, 55, 70, 85, 95]
    assert oracle.ledger.spent == 95


def test_deterministic_at_a_fixed_seed():
    runs = []
    for _ in range(2):
        oracle = Recording(RowBands(), SPEC, output="probabilities", ledger=Ledger(budget=150))
        r = _jbda(variant="jbda-tr").run(
            oracle,
            pool=noise_pool(200),
            surrogate=mlp_surrogate(),
            budget=150,
            seed=3,
            device="cpu",
        )
        x, _ = _held_out()
        with torch.no_grad():
            runs.append((torch.cat(oracle.seen), r.surrogate(x)))
    assert torch.equal(runs[0][0], runs[1][0])
    assert torch.equal(runs[0][1], runs[1][1])


def test_jacobian_step_of_a_linear_model_is_the_sign_of_its_class_row():
    g = torch.Generator().manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 4))
    nn.init.normal_(model[1].weight, generator=g)
    model.train()
    x = torch.rand((6, 1, 8, 8), generator=g)
    classes = torch.tensor([0, 1, 2, 3, 1, 0])
    out = jacobian_step(model, x, classes, 0.1)
    w = model[1].weight.detach()  # d logit_c / dx = W[c]
    expected = x + 0.1 * w[classes].sign().view(6, 1, 8, 8)
    assert torch.allclose(out, expected)
    assert torch.allclose(jacobian_step(model, x, classes, -0.1), x - (expected - x))
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())  # no gradient left on the weights


def test_lambda_schedule_flips_every_tau_epochs():
    assert [lambda_schedule(r, 0.1, 3) for r in range(8)] == pytest.approx(
        [0.1, 0.1, 0.1, -0.1, -0.1, -0.1, 0.1, 0.1]
    )
    assert [lambda_schedule(r, 0.2, 1) for r in range(3)] == pytest.approx([0.2, -0.2, 0.2])
    assert all(lambda_schedule(r, 0.1, None) == 0.1 for r in range(10))


def test_random_targets_avoid_the_oracle_class_and_cover_the_others():
    labels = torch.tensor([0, 1, 2, 3] * 500)
    t = random_other_classes(labels, 4, torch.Generator().manual_seed(0))
    assert not bool((t == labels).any())
    for c in range(4):
        counts = torch.bincount(t[labels == c], minlength=4)
        assert counts[c] == 0 and bool((counts[torch.arange(4) != c] > 120).all())  # ~167 each


def test_monitor_sees_every_substitute_epoch():
    x, victim = _held_out()
    curve = ConvergenceCurve(x, None, victim, at=[20, 40, 80, 100], device="cpu")
    calls: list[int] = []

    def monitor(surrogate: nn.Module, spent: int) -> None:
        calls.append(spent)
        curve(surrogate, spent)

    oracle = LocalOracle(RowBands(), SPEC, output="label", ledger=Ledger(budget=100))
    _jbda().run(
        oracle,
        pool=noise_pool(200),
        surrogate=mlp_surrogate(),
        budget=100,
        device="cpu",
        monitor=monitor,
    )
    assert calls == [20, 40, 80, 100]
    assert [p["queries"] for p in curve.points] == [20, 40, 80, 100]


def test_refusals_come_before_any_query():
    oracle = LocalOracle(RowBands(), SPEC, output="embedding", ledger=Ledger(budget=100))
    with pytest.raises(ValueError, match="learns from"):
        _jbda().run(oracle, pool=noise_pool(200), surrogate=mlp_surrogate(), budget=50)
    oracle = LocalOracle(RowBands(), SPEC, output="label", ledger=Ledger(budget=100))
    with pytest.raises(ValueError, match="seed_size 20 exceeds the 10 images"):
        _jbda().run(oracle, pool=noise_pool(10), surrogate=mlp_surrogate(), budget=50)
    with pytest.raises(ValueError, match="pass pool="):
        _jbda().run(oracle, surrogate=mlp_surrogate(), budget=50)
    with pytest.raises(ValueError, match="exceeds the 100 queries left"):
        _jbda().run(oracle, pool=noise_pool(200), surrogate=mlp_surrogate(), budget=200)
    assert oracle.ledger.spent == 0


def test_bad_hyperparameters_raise_and_repr_names_them():
    for kw, word in [
        ({"variant": "fgsm"}, "variant"),
        ({"seed_size": 0}, "seed_size"),
        ({"lam": -0.1}, "lam"),
        ({"tau": 0}, "tau"),
        ({"reservoir": 0}, "reservoir"),
    ]:
        with pytest.raises(ValueError, match=word):
            JBDA(**kw)
    a = build_attack("jbda", variant="jbda-tr", tau=None, round_recipe={"epochs": 2})
    assert a.round_recipe == TrainRecipe(epochs=2)
    assert "variant='jbda-tr'" in repr(a) and "tau=None" in repr(a) and "lam=0.1" in repr(a)
    assert JBDA.needs_pool and JBDA.steals == "classifier"
