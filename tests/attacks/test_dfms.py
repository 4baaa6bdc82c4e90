"""DFMS-HL (and the GAN it learns on proxy data) on the 1x8x8 row-band toy victim."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stealkit.attacks.base import TrainRecipe
from stealkit.attacks.dfms import DFMSHL, class_diversity_loss, synthetic_shapes
from stealkit.data.dataset import ImageDataset
from stealkit.data.pool import QueryPool
from stealkit.errors import BudgetExceeded
from stealkit.metrics import agreement
from stealkit.models import build_model
from stealkit.models.gan import (
    Discriminator,
    discriminator_loss,
    fit_gan,
    gan_optimizers,
    generator_loss,
)
from toys import RowBands

NZ = 8
RECIPE = TrainRecipe(epochs=10, min_steps=150, batch_size=64)
FAST = dict(
    proxy_images=200, gan_steps=20, recipe=TrainRecipe(epochs=1, min_steps=20)
)  # no quality


def _surrogate(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", in_channels=1, num_classes=4, image_size=8)


def _pool(spec8, n: int = 600) -> QueryPool:
    """The thief's proxy images: uniform noise, nothing like the victim's bands."""
    x = torch.rand((n, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    return QueryPool(ImageDataset("noise", (x * 255).to(torch.uint8)), spec8)


def _dfms(**kw) -> DFMSHL:
    params = dict(
        query_batch=100,
        nz=NZ,
        ngf=8,
        ndf=8,
        proxy_images=500,
        gan_steps=60,
        gen_steps=2,
        clone_steps=5,
        recipe=RECIPE,
    )
    return DFMSHL(**(params | kw))


def test_class_diversity_loss_is_minimal_for_a_uniform_batch_mean():
    k = 4
    uniform = class_diversity_loss(torch.zeros(6, k))
    assert float(uniform) == pytest.approx(-math.log(k), abs=1e-6)
    # a batch of confident rows spread evenly over the classes has a uniform mean too
    spread = class_diversity_loss(20.0 * torch.eye(k).repeat(2, 1))
    assert float(spread) == pytest.approx(-math.log(k), abs=1e-5)
    collapsed = class_diversity_loss(20.0 * F.one_hot(torch.zeros(8, dtype=torch.long), k))
    assert float(collapsed) == pytest.approx(0.0, abs=1e-5)  # every row the same class
    gen = torch.Generator().manual_seed(0)
    for _ in range(50):
        logits = 3.0 * torch.randn(5, k, generator=gen)
        pbar = F.softmax(logits, 1).mean(0)
        value = float(class_diversity_loss(logits))
        assert value == pytest.approx(float((pbar * pbar.log()).sum()), abs=1e-6)
        assert value >= -math.log(k) - 1e-6


def test_spends_exactly_the_budget_on_generated_images(make_oracle, spec8):
    for variant, pool in (("proxy", _pool(spec8)), ("synthetic", None)):
        oracle = make_oracle("label", budget=333)
        sizes: list[int] = []
        query = oracle.query
        oracle.query = lambda x, q=query, s=sizes: s.append(len(x)) or q(x)  # type: ignore[method-assign]
        result = _dfms(variant=variant, **FAST).run(
            oracle, pool=pool, surrogate=_surrogate(), budget=333, device="cpu"
        )
        assert oracle.ledger.spent == 333 == result.queries
        assert sizes == [100, 100, 100, 33]  # the pool's images are never sent
        assert sum(result.info["label_histogram"]) == 333
        with pytest.raises(BudgetExceeded):
            oracle.query(torch.rand(1, 1, 8, 8))


def test_beats_chance_on_hard_labels(make_oracle, toy_model, spec8):
    oracle = make_oracle("label", budget=1000)
    result = _dfms().run(
        oracle, pool=_pool(spec8), surrogate=_surrogate(), budget=1000, device="cpu"
    )
    x = torch.rand((500, 1, 8, 8), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        victim, stolen = toy_model(x).argmax(1), result.surrogate(x).argmax(1)
    assert torch.bincount(victim).max() / len(x) < 0.3  # a constant guess agrees < 30%
    assert agreement(stolen, victim) > 0.5


def test_deterministic_at_a_fixed_seed(make_oracle):
    runs = []
    for seed in (2, 2, 3):
        result = _dfms(variant="synthetic", **FAST).run(
            make_oracle("label", budget=250), surrogate=_surrogate(), budget=250, seed=seed
        )
        runs.append(result.surrogate.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


class _Skewed(torch.nn.Module):
    """A clone that prefers class 0: the row-band scores plus a bias of 3 on class 0."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return RowBands()(x) + torch.tensor([3.0, 0.0, 0.0, 0.0])


def test_generator_steps_spread_the_clone_predictions_over_the_classes(spec8):
    attack = _dfms(diversity_weight=20.0)
    real = _pool(spec8).images(torch.arange(200))
    g, d, _ = fit_gan(real, nz=NZ, ngf=8, ndf=8, steps=20, seed=0)
    clone = _Skewed()
    z = torch.randn((256, NZ), generator=torch.Generator().manual_seed(9))

    def div() -> float:
        g.train()
        with torch.no_grad():
            return float(class_diversity_loss(clone(g(z))))

    before = div()
    opt_g, opt_d = gan_optimizers(g, d, 5e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(15):
        losses = attack.generator_step(g, d, clone, real, opt_g, opt_d, gen, torch.device("cpu"))
    assert set(losses) == {"d_loss", "g_adv_loss", "diversity_loss"}
    assert div() < before - 0.1  # the batch mean moved towards uniform (-log 4 = -1.39)


def test_gan_losses_by_hand_and_the_gan_learns_its_proxy():
    zero = torch.zeros(3)
    assert float(discriminator_loss(zero, zero)) == pytest.approx(2 * math.log(2))
    assert float(generator_loss(zero)) == pytest.approx(math.log(2))
    assert float(discriminator_loss(torch.full((3,), 30.0), torch.full((3,), -30.0))) < 1e-6
    # real images: bright top half, dark bottom half; the trained generator draws the same
    real = torch.zeros(256, 1, 8, 8)
    real[:, :, :4] = 0.9
    real += 0.05 * torch.rand(real.shape, generator=torch.Generator().manual_seed(0))
    g, d, hist = fit_gan(real, nz=NZ, ngf=8, ndf=8, steps=150, lr=2e-3, seed=0)
    with torch.no_grad():
        fake = g.train()(torch.randn(64, NZ, generator=torch.Generator().manual_seed(1)))
    assert len(hist.d_loss) == len(hist.g_loss) == 150
    assert float(fake[:, :, :4].mean() - fake[:, :, 4:].mean()) > 0.4
    with pytest.raises(ValueError, match="multiple of 4"):
        Discriminator(1, 10)


def test_synthetic_shapes_are_seeded_images_in_the_unit_range():
    a = synthetic_shapes(40, 3, 12, torch.Generator().manual_seed(0))
    b = synthetic_shapes(40, 3, 12, torch.Generator().manual_seed(0))
    assert a.shape == (40, 3, 12, 12) and torch.equal(a, b)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    spread = a.flatten(1).max(1).values - a.flatten(1).min(1).values
    assert bool((spread > 0.2).all())  # every image holds a shape brighter than its background
    assert not torch.equal(a[0], a[1])
    with pytest.raises(ValueError, match="channels"):
        synthetic_shapes(4, 2, 8, torch.Generator())


def test_variants_declare_and_enforce_their_pool(make_oracle, spec8):
    proxy, synthetic = _dfms(), _dfms(variant="synthetic")
    assert proxy.needs_pool is True and synthetic.needs_pool is False
    oracle = make_oracle("label", budget=100)
    with pytest.raises(ValueError, match="pool"):
        proxy.run(oracle, surrogate=_surrogate(), budget=100)
    with pytest.raises(ValueError, match="data-free"):
        synthetic.run(oracle, pool=_pool(spec8), surrogate=_surrogate(), budget=100)
    with pytest.raises(ValueError, match="embeddings"):
        proxy.run(
            make_oracle("embedding", budget=100),
            pool=_pool(spec8),
            surrogate=_surrogate(),
            budget=100,
        )
    assert oracle.ledger.spent == 0


def test_repr_and_bad_hyperparameters():
    text = repr(DFMSHL(variant="synthetic", diversity_weight=3.0))
    assert "variant='synthetic'" in text and "diversity_weight=3.0" in text and "recipe=" in text
    for bad, match in (
        ({"variant": "soft"}, "variant"),
        ({"query_batch": 0}, "query_batch"),
        ({"gen_steps": -1}, "gen_steps"),
        ({"diversity_weight": -1.0}, "diversity_weight"),
    ):
        with pytest.raises(ValueError, match=match):
            DFMSHL(**bad)
