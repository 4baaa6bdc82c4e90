"""The training recipe's schedule and logit adjustment (issue 16): by hand, and in behaviour."""

from __future__ import annotations

import math

import pytest
import torch

from stealkit.attacks.base import TrainRecipe, logit_shift, one_cycle, train_surrogate
from stealkit.models import build_model


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
