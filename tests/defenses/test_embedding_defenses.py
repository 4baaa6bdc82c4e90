"""Embedding defences: the maths keeps its promises (k entries kept, rounding error bounded,
seeded noise), and the wrapper keeps the oracle interface and charges the inner ledger once."""

from __future__ import annotations

import pytest
import torch

from stealkit.defenses import (
    DefendedOracle,
    EmbeddingNoise,
    EmbeddingRounding,
    EmbeddingTopK,
    NoDefense,
    TopK,
    build_defense,
    defense_names,
)
from stealkit.defenses.embedding import embedding_noise, embedding_round, embedding_topk
from stealkit.errors import BudgetExceeded
from stealkit.oracle import OutputKind, Response


def _z(seed: int = 0, n: int = 5, d: int = 9) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("k", [1, 3, 9, 20])
@pytest.mark.parametrize("magnitude", [False, True])
def test_topk_keeps_exactly_the_k_largest_entries(k: int, magnitude: bool) -> None:
    z = _z()
    out = embedding_topk(z, k, magnitude=magnitude)
    kept = out != 0
    assert (kept.sum(1) == min(k, z.shape[1])).all()
    assert torch.equal(out[kept], z[kept])  # kept values are untouched
    key = z.abs() if magnitude else z
    smallest_kept = key.masked_fill(~kept, float("inf")).amin(1)
    largest_dropped = key.masked_fill(kept, float("-inf")).amax(1)
    assert (smallest_kept >= largest_dropped).all()


def test_rounding_is_idempotent_and_bounded() -> None:
    z = _z() * 10
    for d in (0, 1, 2):
        r = embedding_round(z, d)
        assert torch.equal(embedding_round(r, d), r)
        assert float((r - z).abs().max()) <= 0.5 * 10**-d + 1e-5


def test_noise_is_seeded_scaled_and_zero_at_sigma_zero() -> None:
    z = _z(n=200, d=64) * 5
    assert torch.equal(embedding_noise(z, 0.0), z)
    a = embedding_noise(z, 0.3, generator=torch.Generator().manual_seed(1))
    b = embedding_noise(z, 0.3, generator=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    assert float((a - z).std()) == pytest.approx(0.3, rel=0.05)
    rel = embedding_noise(z, 0.1, relative=True, generator=torch.Generator().manual_seed(1))
    rms = z.pow(2).mean(1).sqrt().mean()
    assert float((rel - z).std()) == pytest.approx(0.1 * float(rms), rel=0.1)
    with pytest.raises(ValueError):
        embedding_noise(z, -1.0)


@pytest.mark.parametrize(
    "defense",
    [NoDefense(), EmbeddingNoise(sigma=0.5), EmbeddingTopK(k=2), EmbeddingRounding(decimals=0)],
    ids=["none", "noise", "topk", "rounding"],
)
def test_wrapper_keeps_interface_and_charges_once(make_oracle, images8, defense) -> None:
    inner = make_oracle("embedding", budget=10)
    oracle = DefendedOracle(inner, defense)
    assert oracle.output is OutputKind.EMBEDDING
    assert oracle.input_spec == inner.input_spec and oracle.ledger is inner.ledger
    assert oracle.output_dim == 4
    r = oracle.query(images8)
    assert r.kind is OutputKind.EMBEDDING and r.values.shape == (6, 4)
    assert inner.ledger.spent == 6 and inner.ledger.calls == 1
    with pytest.raises(BudgetExceeded):
        oracle.query(images8)
    assert inner.ledger.spent == 6


def test_noise_wrapper_repeats_after_reset(make_oracle, images8) -> None:
    oracle = DefendedOracle(make_oracle("embedding"), EmbeddingNoise(sigma=1.0, seed=3))
    first = oracle.query(images8).values
    assert not torch.equal(first, oracle.query(images8).values)
    oracle.defense.reset()
    assert torch.equal(first, oracle.query(images8).values)


def test_wrappers_refuse_the_wrong_kind_of_oracle_or_defence(make_oracle) -> None:
    with pytest.raises(ValueError, match="answers embedding, not probabilities"):
        DefendedOracle(make_oracle("probabilities"), EmbeddingTopK(k=1))
    with pytest.raises(ValueError, match="probabilities or logits, not embedding"):
        DefendedOracle(make_oracle("embedding"), TopK(k=1))
    with pytest.raises(TypeError, match="embeddings"):
        EmbeddingTopK(k=1).apply(Response(OutputKind.PROBABILITIES, torch.ones(1, 2) / 2, 2))


def test_registry_builds_them_and_validates() -> None:
    assert {"embedding_noise", "embedding_topk", "embedding_rounding"} <= set(defense_names())
    assert repr(build_defense("embedding_topk", k=3)) == "EmbeddingTopK(k=3, magnitude=False)"
    assert "sigma=0.2" in repr(build_defense("embedding_noise", sigma=0.2, relative=True))
    assert repr(build_defense("embedding_rounding", decimals=2)) == "EmbeddingRounding(decimals=2)"
    for bad in [
        lambda: EmbeddingTopK(k=0),
        lambda: EmbeddingNoise(sigma=-0.1),
        lambda: EmbeddingRounding(decimals=1.5),  # type: ignore[arg-type]
    ]:
        with pytest.raises(ValueError):
            bad()
