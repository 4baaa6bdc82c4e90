"""The training recipe's schedule and logit adjustment (issue 16): by hand, and in behaviour."""

from __future__ import annotations

import math

import pytest
import torch

from stealkit.attacks import KnockoffNets
from stealkit.attacks.base import (
    TrainRecipe,
    logit_adjusted,
    logit_shift,
    one_cycle,
    train_surrogate,
)
from stealkit.data import ImageDataset
from stealkit.data.pool import QueryPool
from stealkit.losses.classification import distillation_loss
from stealkit.metrics import agreement
from stealkit.models import build_model
from stealkit.train import fit, predict


def test_one_cycle_warms_up_linearly_then_falls_as_a_cosine():
    lr = one_cycle(1.0, warmup=0.2)  # total 10: warm-up over w = 2 steps
    assert [lr(s, 10) for s in (0, 1)] == pytest.approx([0.5, 1.0])
    assert lr(2, 10) == pytest.approx(1.0)  # p = 0: the peak
    assert lr(9, 10) == pytest.approx(0.5 * (1 + math.cos(math.pi * 7 / 8)))
    assert lr(0, 1) == pytest.approx(1.0)  # one step: w = 1


def test_logit_shift_is_tau_log_prior_of_labels_or_answers():
    shift = logit_shift(torch.tensor([0, 0, 1]), 3, tau=2.0)
    assert shift.tolist() == pytest.approx(
        [2 * math.log(2 / 3), 2 * math.log(1 / 3), 2 * math.log(1e-4)]
    )
    soft = torch.tensor([[0.5, 0.5], [0.9, 0.1]])
    assert logit_shift(soft, 2, tau=1.0).tolist() == pytest.approx([math.log(0.7), math.log(0.3)])


def test_one_cycle_without_warm_up_is_the_cosine_schedule_fit_uses():
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=2.0)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 50)
    reference = []
    for _ in range(50):
        reference.append(opt.param_groups[0]["lr"])
        opt.step()
        cosine.step()
    lr = one_cycle(2.0, warmup=0.0)  # w = 1: step 0 is already the peak
    assert [lr(s, 51) for s in range(1, 51)] == pytest.approx(reference[:50], abs=0.07)
    assert [lr(s, 51) for s in range(1, 51)] == sorted(
        (lr(s, 51) for s in range(1, 51)), reverse=True
    )


def test_logit_adjusted_loss_is_minimised_by_the_answers_logits_minus_tau_log_prior():
    """Menon et al.: softmax(f + tau log pi) = p at the optimum, so f* = log p - tau log pi."""
    g = torch.Generator().manual_seed(3)
    p = torch.softmax(torch.randn((6, 4), generator=g), 1)
    prior = p.mean(0)
    loss = logit_adjusted(lambda lo, y: distillation_loss(lo, y, 2.0), p, tau=1.0)
    best = (p.log() - prior.log()).requires_grad_(True)
    loss(best, p).backward()
    assert best.grad is not None and best.grad.abs().max() < 1e-6
    unshifted = p.log().requires_grad_(True)  # the plain optimum is not the adjusted one
    loss(unshifted, p).backward()
    assert unshifted.grad is not None and unshifted.grad.abs().max() > 1e-3


def test_logit_adjustment_fits_labels_that_never_name_the_last_class():
    """The shift takes the surrogate's width, not the largest label bought (CopyCat, 4 classes)."""
    g = torch.Generator().manual_seed(4)
    x, y = torch.rand((64, 1, 4, 4), generator=g), torch.randint(0, 3, (64,), generator=g)
    torch.manual_seed(0)
    model = build_model("mlp", in_channels=1, num_classes=4, image_size=4)
    recipe = TrainRecipe(epochs=1, min_steps=30, batch_size=32, lr=3e-3, logit_adjust=1.0)
    losses = train_surrogate(model, x, y, recipe, hard=True, seed=0, device="cpu")
    assert all(math.isfinite(v) for v in losses)
    with torch.no_grad():
        assert (model.eval()(x).argmax(1) == 3).float().mean() < 0.05  # never bought, rarely said


def test_the_default_recipe_is_the_earlier_cosine_fit():
    """New options off by default: the same weights as the plain cosine fit of before."""
    x = torch.rand((64, 1, 4, 4), generator=torch.Generator().manual_seed(5))
    y = torch.softmax(torch.randn((64, 3), generator=torch.Generator().manual_seed(6)), 1)
    recipe = TrainRecipe(epochs=2, min_steps=20, batch_size=32)
    weights = []
    for use_recipe in (True, False):
        torch.manual_seed(0)
        m = build_model("mlp", in_channels=1, num_classes=3, image_size=4)
        if use_recipe:
            train_surrogate(m, x, y, recipe, hard=False, seed=0, device="cpu")
        else:
            fit(
                m,
                x,
                y,
                loss_fn=lambda lo, p: distillation_loss(lo, p, 1.0),
                steps=20,
                batch_size=32,
                lr=2e-3,
                schedule="cosine",
                seed=0,
                device="cpu",
            )
        weights.append(torch.cat([q.flatten() for q in m.parameters()]))
    assert torch.equal(weights[0], weights[1])


def test_knockoff_with_the_issue_16_recipe_beats_chance_within_its_budget(make_oracle, spec8):
    """RowBands (4 classes): the one-cycle, T 4, logit-adjusted recipe, as the config sets it."""
    g = torch.Generator().manual_seed(7)
    pool = QueryPool(
        ImageDataset(
            "noise", torch.randint(0, 256, (600, 1, 8, 8), dtype=torch.uint8, generator=g)
        ),
        spec8,
    )
    recipe = TrainRecipe(
        epochs=5,
        min_steps=100,
        batch_size=64,
        lr=1e-2,
        schedule="onecycle",
        warmup=0.15,
        temperature=4.0,
        logit_adjust=1.0,
    )
    oracle = make_oracle(budget=300)
    torch.manual_seed(0)
    surrogate = build_model("mlp", in_channels=1, num_classes=4, image_size=8)
    result = KnockoffNets(strategy="random", online_steps=0, recipe=recipe).run(
        oracle, pool=pool, surrogate=surrogate, budget=300, seed=0, device="cpu"
    )
    assert oracle.ledger.spent == result.queries == 300
    fresh = torch.rand((500, 1, 8, 8), generator=g)
    victim = make_oracle().query(fresh).labels()
    assert agreement(predict(result.surrogate, fresh, device="cpu").argmax(1), victim) > 0.7


def _skewed_fit(recipe: TrainRecipe) -> float:
    """Share of class-1 predictions of an MLP fit on noise labelled 90% class 0, 10% class 1."""
    g = torch.Generator().manual_seed(0)
    x = torch.rand((400, 1, 4, 4), generator=g)
    y = (torch.rand(400, generator=g) < 0.1).long()
    torch.manual_seed(0)
    model = build_model("mlp", in_channels=1, num_classes=2, image_size=4)
    train_surrogate(model, x, y, recipe, hard=True, seed=0, device="cpu")
    with torch.no_grad():
        pred = model.eval()(torch.rand((2000, 1, 4, 4), generator=g)).argmax(1)
    return float((pred == 1).float().mean())


def test_logit_adjustment_removes_the_transfer_sets_class_skew():
    base = TrainRecipe(epochs=5, min_steps=150, batch_size=64, lr=3e-3)
    plain = _skewed_fit(base)
    adjusted = _skewed_fit(TrainRecipe(**{**base.__dict__, "logit_adjust": 1.0}))
    assert plain < 0.1  # the plain fit learns the skew: nearly always class 0
    assert adjusted > plain + 0.2  # the adjusted one no longer does


def test_the_same_recipe_and_seed_train_the_same_weights():
    recipe = TrainRecipe(
        epochs=2, min_steps=20, batch_size=32, schedule="onecycle", logit_adjust=1.0
    )
    x = torch.rand((64, 1, 4, 4), generator=torch.Generator().manual_seed(1))
    y = torch.softmax(torch.randn((64, 3), generator=torch.Generator().manual_seed(2)), 1)
    weights = []
    for _ in range(2):
        torch.manual_seed(0)
        m = build_model("mlp", in_channels=1, num_classes=3, image_size=4)
        train_surrogate(m, x, y, recipe, hard=False, seed=0, device="cpu")
        weights.append(torch.cat([p.flatten() for p in m.parameters()]))
    assert torch.equal(weights[0], weights[1])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"schedule": "linear"}, "schedule"),
        ({"warmup": 1.0}, "warmup"),
        ({"logit_adjust": -1}, "logit"),
    ],
)
def test_bad_recipe_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainRecipe(**kwargs)
