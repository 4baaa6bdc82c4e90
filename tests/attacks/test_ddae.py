"""D-DAE on a tiny victim: it names the defence, undoes reverse sigmoid, leaves clean answers
alone, repeats at a fixed seed, and its maths (features, verdict, KL, top-1 lock) by hand."""

from __future__ import annotations

import math

import pytest
import torch

from stealkit.attacks.base import TrainRecipe, training_targets
from stealkit.attacks.ddae import (
    CLEAN,
    DDAE,
    Restorer,
    batch_verdict,
    detector_features,
    keep_top1,
    kl_rows,
    simulate,
)
from stealkit.defenses import DefendedOracle, GaussianNoise, ReverseSigmoid
from stealkit.models import build_model
from stealkit.oracle import InputSpec, Ledger, LocalOracle
from toys import RowBands

SPEC = InputSpec(channels=1, height=8, width=8)
N = 1200
FAST = DDAE(
    shadow_recipe=TrainRecipe(epochs=4, min_steps=150, batch_size=64, lr=3e-3),
    detector_steps=200,
    restorer_steps=300,
)
CANDIDATES = {
    "reverse_sigmoid": ReverseSigmoid(beta=0.7, gamma=0.4),
    "gaussian_noise": GaussianNoise(sigma=0.1),
}


def _shadow() -> torch.nn.Module:
    return build_model("mlp", in_channels=1, num_classes=4, image_size=8)


@pytest.fixture(scope="module")
def bought():
    """N random images, the sharp toy victim's clean answers and its reverse-sigmoid ones,
    with the defended oracle's ledger."""
    x = torch.rand((N, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    victim = RowBands(scale=40.0)
    clean = LocalOracle(victim, SPEC).query(x).probs()
    ledger = Ledger()
    defended = DefendedOracle(
        LocalOracle(victim, SPEC, ledger=ledger), CANDIDATES["reverse_sigmoid"]
    )
    return x, clean, training_targets(defended.query(x)), ledger


@pytest.fixture(scope="module")
def restored_rs(bought):
    x, _, perturbed, _ = bought
    return FAST.restore(perturbed, x, _shadow, defences=CANDIDATES, seed=3, device="cpu")


def test_reverse_sigmoid_is_detected_and_undone_without_a_query(bought, restored_rs):
    x, clean, perturbed, ledger = bought
    restored, report = restored_rs
    assert report["detected"] == "reverse_sigmoid"
    assert report["confidence"] > 0.5
    before, after = kl_rows(clean, perturbed).mean(), kl_rows(clean, restored).mean()
    assert after < 0.6 * before  # the restored answers are much closer to the clean victim
    assert report["top1_kept"] > 0.99  # reverse sigmoid keeps top-1, so the restorer is locked
    assert torch.equal(restored.argmax(1), perturbed.argmax(1))
    assert torch.allclose(restored.sum(1), torch.ones(N), atol=1e-5)
    assert ledger.spent == N  # only what was bought before: D-DAE queries nothing


def test_clean_answers_are_detected_clean_and_left_alone(bought):
    x, clean, _, _ = bought
    restored, report = FAST.restore(clean, x, _shadow, defences=CANDIDATES, seed=3, device="cpu")
    assert report["detected"] == CLEAN
    assert "restorer_kl" not in report
    assert torch.allclose(restored, clean, atol=1e-6)


def test_same_seed_same_restoration(bought, restored_rs):
    x, _, perturbed, _ = bought
    again, report = FAST.restore(perturbed, x, _shadow, defences=CANDIDATES, seed=3, device="cpu")
    assert torch.equal(again, restored_rs[0])
    assert report == restored_rs[1]


def test_simulate_answers_as_the_defended_oracle_does():
    x = torch.rand((20, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    model = RowBands(scale=40.0)
    for defence in (ReverseSigmoid(beta=1.0, gamma=0.2), GaussianNoise(sigma=0.2, seed=4)):
        want = DefendedOracle(LocalOracle(model, SPEC), defence).query(x).probs()
        assert torch.allclose(simulate(defence, x, model(x)), want, atol=1e-6)
    assert torch.allclose(simulate(None, x, model(x)), model(x).softmax(1))


def test_features_ignore_and_restorer_follows_a_renaming_of_the_classes():
    q = torch.softmax(torch.randn(16, 5, generator=torch.Generator().manual_seed(2)) * 3, dim=1)
    perm = torch.tensor([3, 0, 4, 1, 2])
    assert torch.equal(detector_features(q), detector_features(q[:, perm]))
    assert torch.all(detector_features(q)[:, :4] >= detector_features(q)[:, 1:5])  # sorted
    torch.manual_seed(0)
    r = Restorer(5, hidden=16)
    assert torch.allclose(r(q[:, perm]), r(q)[:, perm], atol=1e-5)


def test_kl_rows_by_hand():
    p = torch.tensor([[0.5, 0.5, 0.0], [0.2, 0.3, 0.5]])
    q = torch.tensor([[0.25, 0.25, 0.5], [0.2, 0.3, 0.5]])
    assert torch.allclose(kl_rows(p, q), torch.tensor([math.log(2.0), 0.0]), atol=1e-6)


def test_batch_verdict_weighs_every_answer():
    """Two answers lean to 'a', one all but rules it out: the mean probability would say 'a',
    the evidence of all three (geometric means) says 'b'."""
    h = torch.tensor([[0.9, 0.1], [0.9, 0.1], [0.001, 0.999]])
    name, confidence, scores = batch_verdict(h, ["a", "b"])
    ga, gb = (0.9 * 0.9 * 0.001) ** (1 / 3), (0.1 * 0.1 * 0.999) ** (1 / 3)
    assert name == "b"
    assert h.mean(0).argmax() == 0
    assert confidence == pytest.approx(gb / (ga + gb), rel=1e-6)
    assert scores["a"] == pytest.approx(ga / (ga + gb), rel=1e-6)


def test_keep_top1_swaps_in_the_answers_top_class():
    restored = torch.tensor([[0.6, 0.3, 0.1], [0.2, 0.5, 0.3]])
    answers = torch.tensor([[0.1, 0.8, 0.1], [0.1, 0.7, 0.2]])
    out = keep_top1(restored, answers)
    assert torch.equal(out, torch.tensor([[0.3, 0.6, 0.1], [0.2, 0.5, 0.3]]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"shadow_share": 0.0}, "shadow_share"),
        ({"temperature_range": (2.0, 1.0)}, "temperature_range"),
        ({"lock_top1": 1.5}, "lock_top1"),
        ({"restorer_steps": 0}, "restorer_steps"),
    ],
)
def test_bad_hyperparameters_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DDAE(**kwargs)


def test_bad_inputs_are_refused_before_any_training():
    x = torch.rand((10, 1, 8, 8))
    y = torch.full((10, 4), 0.25)
    with pytest.raises(ValueError, match="the N images"):
        DDAE().restore(y[:9], x, _shadow)
    with pytest.raises(ValueError, match="rename that candidate"):
        DDAE().restore(y, x, _shadow, defences={CLEAN: ReverseSigmoid()})
    with pytest.raises(ValueError, match="at least one candidate"):
        DDAE().restore(y, x, _shadow, defences={})


def test_knockoff_with_recipe_undo_restores_before_training_and_buys_only_its_budget():
    """The recipe option wires D-DAE into Knockoff: behind reverse sigmoid the thief names the
    defence, and the oracle's ledger shows exactly the budget (restoring costs no query)."""
    from stealkit.attacks import KnockoffNets
    from stealkit.data.dataset import ImageDataset
    from stealkit.data.pool import QueryPool

    g = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (N, 1, 8, 8), generator=g, dtype=torch.uint8)
    pool = QueryPool(ImageDataset("noise", x), SPEC)
    ledger = Ledger(budget=N)
    oracle = DefendedOracle(
        LocalOracle(RowBands(scale=40.0), SPEC, ledger=ledger), ReverseSigmoid(beta=0.7, gamma=0.4)
    )
    recipe = TrainRecipe(epochs=4, min_steps=150, batch_size=64, lr=3e-3, undo="ddae")
    result = KnockoffNets(strategy="random", online_steps=0, recipe=recipe).run(
        oracle, pool=pool, surrogate=_shadow(), budget=N, seed=0, device="cpu"
    )
    assert ledger.spent == N == result.queries
    assert result.info["ddae"]["detected"] == "reverse_sigmoid"
    with pytest.raises(ValueError, match="undo"):
        TrainRecipe(undo="magic")
