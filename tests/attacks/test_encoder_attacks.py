"""Encoder-stealing attacks on a tiny encoder victim: above chance within the budget, exactly the
budget spent, nothing spent twice for the same image, and clear refusals."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from stealkit.attacks import (
    PRESETS,
    ContSteal,
    EmbeddingCache,
    EncoderStealing,
    StolenEncoder,
    TrainRecipe,
    attack_names,
    build_attack,
)
from stealkit.attacks.encoder_common import transfer_indices
from stealkit.attacks.stolenencoder import stolenencoder_loss
from stealkit.data import load_dataset
from stealkit.data.pool import QueryPool
from stealkit.defenses import DefendedOracle, EmbeddingNoise
from stealkit.metrics import embedding_similarity, extract_features, linear_probe, probe_agreement
from stealkit.models import build_model
from stealkit.models.encoder import SurrogateEncoder
from stealkit.oracle import InputSpec, Ledger, LocalOracle

SPEC = InputSpec(channels=1, height=8, width=8)
FAST = TrainRecipe(epochs=5, min_steps=80, batch_size=64, lr=3e-3, augment=False)
BUDGET = 333  # not a multiple of the query batch: the last call must be trimmed


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


@pytest.fixture(scope="module")
def victim() -> nn.Module:
    """A fixed random two-layer encoder of 8x8 digits into 32 dimensions."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 32))
    return net.eval()


def _oracle(victim: nn.Module, budget: int | None = BUDGET) -> LocalOracle:
    return LocalOracle(
        victim, SPEC, output="embedding", ledger=Ledger(budget=budget, price_per_1k=2.0)
    )


def _surrogate() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        return build_model("cnn2-small", in_channels=1, num_classes=10, image_size=8)


# (attack, least cosine similarity to the victim's embeddings on unseen images). Contrastive losses
# fix embeddings only up to what a softmax over similarities cannot see (e.g. a shared offset), so
# for them the cosine need only beat chance; every attack must make the probes agree.
ATTACKS = [
    (EncoderStealing(loss="mse", query_batch=100, recipe=FAST), 0.7),
    (EncoderStealing(loss="cosine", query_batch=100, recipe=FAST), 0.7),
    (StolenEncoder(query_batch=100, recipe=FAST), 0.7),
    (EncoderStealing(loss="infonce", query_batch=100, recipe=FAST), None),
    (ContSteal(query_batch=100, recipe=FAST), None),
]


@pytest.mark.parametrize(
    "attack, least_cosine", ATTACKS, ids=["mse", "cosine", "stolenencoder", "infonce", "contsteal"]
)
def test_attack_beats_chance_and_spends_exactly_the_budget(attack, least_cosine, victim, digits):
    train, test = digits
    oracle = _oracle(victim)
    pool = QueryPool(train, SPEC)
    result = attack.run(oracle, pool=pool, surrogate=_surrogate(), budget=BUDGET, device="cpu")
    assert oracle.ledger.spent == BUDGET == result.queries
    assert oracle.ledger.calls == math.ceil(BUDGET / 100)
    assert oracle.ledger.cost == pytest.approx(BUDGET * 2.0 / 1000)

    x = test.images()
    target = extract_features(victim, x, device="cpu")
    stolen = extract_features(result.surrogate, x, device="cpu")
    assert stolen.shape == target.shape  # 128-d surrogate features mapped to the victim's 32
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        untrained = SurrogateEncoder(_surrogate(), SPEC.shape, 32)
    chance = embedding_similarity(extract_features(untrained, x, device="cpu"), target)["cosine"]
    cos = embedding_similarity(stolen, target)["cosine"]
    assert cos > max(chance + 0.15, least_cosine or 0.0), (cos, chance)

    def probe(enc):
        tx, ty = train.images()[:400], train.y[:400]
        return linear_probe(enc, tx, ty, x, test.y, epochs=30, batch_size=64, device="cpu")

    assert probe_agreement(probe(victim), probe(result.surrogate)) > 0.5  # chance is about 0.1


def test_a_second_pass_over_a_cached_transfer_set_buys_nothing(victim, digits) -> None:
    train, _ = digits
    pool = QueryPool(train, SPEC)
    oracle = _oracle(victim, budget=None)
    cache = EmbeddingCache()
    idx = transfer_indices(pool, 150, seed=0)
    first = cache.fetch(oracle, pool, idx, query_batch=64)
    assert oracle.ledger.spent == 150 and oracle.ledger.calls == 3
    for _ in range(2):  # later epochs over the same images
        again = cache.fetch(oracle, pool, idx, query_batch=64)
        assert torch.equal(first, again)
    assert oracle.ledger.spent == 150 and oracle.ledger.calls == 3
    torch.testing.assert_close(first, victim(pool.images(idx)).detach())

    attack = EncoderStealing(loss="cosine", query_batch=64, recipe=FAST)
    r1 = attack.run(
        oracle, pool=pool, surrogate=_surrogate(), budget=150, device="cpu", cache=cache
    )
    assert r1.queries == 0 and oracle.ledger.spent == 150  # the same 150 images: all cached
    r2 = attack.run(
        oracle, pool=pool, surrogate=_surrogate(), budget=200, device="cpu", cache=cache
    )
    assert r2.queries == 50 and oracle.ledger.spent == 200  # a larger set pays only for new images
    assert cache.count() == 200 and r2.info["cached_before"] == 150


def test_contsteal_buys_a_view_once_and_keeps_it_apart_from_originals(victim, digits) -> None:
    train, _ = digits
    pool = QueryPool(train, SPEC)
    oracle = _oracle(victim, budget=None)
    cache = EmbeddingCache()
    attack = ContSteal(query_batch=64, recipe=TrainRecipe(epochs=1, min_steps=5, batch_size=32))
    attack.run(oracle, pool=pool, surrogate=_surrogate(), budget=64, device="cpu", cache=cache)
    attack.run(oracle, pool=pool, surrogate=_surrogate(), budget=64, device="cpu", cache=cache)
    assert oracle.ledger.spent == 64 and cache.count() == 0  # views only, bought once
    assert len(cache.views()) == 1
    idx = transfer_indices(pool, 64, seed=0)
    views = cache.fetch(oracle, pool, idx, view=cache.views()[0])
    assert oracle.ledger.spent == 64
    assert not torch.allclose(views, victim(pool.images(idx)).detach())  # augmented, not originals


def test_works_through_an_embedding_defence(victim, digits) -> None:
    train, _ = digits
    oracle = DefendedOracle(_oracle(victim, budget=100), EmbeddingNoise(sigma=0.1))
    attack = StolenEncoder(views=2, recipe=TrainRecipe(epochs=1, min_steps=5, batch_size=32))
    result = attack.run(
        oracle, pool=QueryPool(train, SPEC), surrogate=_surrogate(), budget=100, device="cpu"
    )
    assert result.queries == oracle.ledger.spent == 100


def test_stolenencoder_loss_matches_its_formula() -> None:
    g = torch.Generator().manual_seed(0)
    s, v1, v2, t = (torch.randn(4, 3, generator=g) for _ in range(4))
    cos = torch.nn.functional.cosine_similarity
    expected = -cos(s, t).mean() + 0.5 * (-(cos(v1, t).mean() + cos(v2, t).mean()) / 2)
    torch.testing.assert_close(stolenencoder_loss(s, [v1, v2], t, lam=0.5), expected)
    n = torch.nn.functional.normalize
    l2 = (n(s) - n(t)).norm(dim=1).mean()
    torch.testing.assert_close(stolenencoder_loss(s, [], t, distance="l2"), l2)


def test_refusals(victim, digits, make_oracle) -> None:
    train, _ = digits
    pool = QueryPool(train, SPEC)
    attack = EncoderStealing()
    with pytest.raises(ValueError, match="embeddings"):
        attack.run(make_oracle("probabilities"), pool=pool, surrogate=_surrogate(), budget=10)
    with pytest.raises(ValueError, match="exceeds"):
        attack.run(
            _oracle(victim, budget=None), pool=pool, surrogate=_surrogate(), budget=len(pool) + 1
        )
    with pytest.raises(ValueError, match="left on the ledger"):
        attack.run(_oracle(victim, budget=5), pool=pool, surrogate=_surrogate(), budget=10)
    with pytest.raises(ValueError, match="at least 2"):
        ContSteal().run(_oracle(victim), pool=pool, surrogate=_surrogate(), budget=1)
    for bad in [
        lambda: EncoderStealing(loss="l7"),
        lambda: EncoderStealing(loss="mse", temperature=0.1),
        lambda: ContSteal(temperature=0.0),
        lambda: ContSteal(crop_scale=(0.0, 1.0)),
        lambda: StolenEncoder(distance="l3"),
        lambda: StolenEncoder(views=-1),
    ]:
        with pytest.raises(ValueError):
            bad()


def test_registry_presets_and_reprs() -> None:
    assert {"encoder", "contsteal", "stolenencoder"} <= set(attack_names())
    for name in ("encoder-mse", "encoder-cosine", "contsteal", "stolenencoder"):
        type_, params = PRESETS[name]
        build_attack(type_, **params)
    a = build_attack("encoder", loss="soft-nn", temperature=50.0, recipe={"epochs": 3})
    assert isinstance(a, EncoderStealing) and a.recipe.epochs == 3
    assert "loss='soft-nn'" in repr(a) and "temperature=50.0" in repr(a)
    assert "self_negatives=False" in repr(ContSteal(self_negatives=False))
    assert "lam=2.0" in repr(StolenEncoder(lam=2.0)) and "views=1" in repr(StolenEncoder())


def test_same_seed_same_stolen_encoder(victim, digits) -> None:
    train, test = digits
    attack = StolenEncoder(recipe=TrainRecipe(epochs=1, min_steps=10, batch_size=32))
    outs = []
    for _ in range(2):
        r = attack.run(
            _oracle(victim), pool=QueryPool(train, SPEC), surrogate=_surrogate(), budget=64, seed=3
        )
        outs.append(extract_features(r.surrogate, test.images()[:20], device="cpu"))
    assert torch.equal(outs[0], outs[1])
