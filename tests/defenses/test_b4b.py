"""B4B (Dubinski et al., NeurIPS 2023): coverage by LSH buckets kept per client, noise that
grows with coverage, and a per-client orthogonal map that only the owner can undo."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from stealkit.defenses import DefendedOracle
from stealkit.defenses.b4b import (
    B4B,
    client_transform,
    lsh_buckets,
    lsh_hyperplanes,
    noise_scale,
    running_coverage,
)
from stealkit.oracle import InputSpec, Ledger, LocalOracle, OutputKind, Response
from toys import RowBands

SPEC = InputSpec(1, 8, 8)
CENTER = torch.full((64,), 0.5)  # the mean "embedding" of uniform images under nn.Flatten


def _api(defense: B4B, client: str = "thief") -> DefendedOracle:
    inner = LocalOracle(nn.Flatten(), SPEC, output="embedding", ledger=Ledger())
    inner.client = client
    return DefendedOracle(inner, defense)


def _honest(n: int, seed: int = 0) -> torch.Tensor:
    """``n`` images close to one prototype: a user in one region of the space."""
    g = torch.Generator().manual_seed(seed)
    proto = torch.rand(1, 1, 8, 8, generator=g)
    return (proto + 0.01 * torch.randn(n, 1, 8, 8, generator=g)).clamp(0, 1)


def _covering(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8, generator=torch.Generator().manual_seed(seed))


def test_noise_scale_is_zero_at_no_coverage_alpha_at_beta_and_increasing() -> None:
    lam, alpha, beta = 1e-3, 2.0, 0.5
    assert float(noise_scale(0.0, lam=lam, alpha=alpha, beta=beta)) == 0.0
    at_beta = float(noise_scale(beta, lam=lam, alpha=alpha, beta=beta))
    assert at_beta == pytest.approx(alpha - lam)  # lam * (alpha / lam - 1)
    c = torch.linspace(0, 1, 101)
    s = noise_scale(c, lam=lam, alpha=alpha, beta=beta)
    assert bool((s.diff() > 0).all())
    hand = lam * (math.exp(math.log(alpha / lam) * 0.25 / beta) - 1)
    assert float(s[25]) == pytest.approx(hand)
    for bad in ({"lam": 0.0}, {"alpha": 1e-4}, {"beta": 0.0}, {"beta": 1.5}):
        with pytest.raises(ValueError):
            noise_scale(0.1, **{"lam": lam, "alpha": alpha, "beta": beta, **bad})


def test_buckets_match_a_hand_computation_and_coverage_counts_new_ones() -> None:
    planes = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0], [2.0, 3.0]])
    assert lsh_buckets(z, planes).tolist() == [3, 2, 1, 0, 3]
    assert lsh_buckets(z, planes, center=torch.tensor([1.5, 0.0])).tolist() == [2, 2, 0, 0, 3]
    occupied = torch.zeros(4, dtype=torch.bool)
    cov = running_coverage(lsh_buckets(z, planes), occupied)
    assert cov.tolist() == [0.25, 0.5, 0.75, 1.0, 1.0] and bool(occupied.all())
    assert lsh_hyperplanes(5, 3, seed=2).shape == (3, 5)
    assert torch.equal(lsh_hyperplanes(5, 3, seed=2), lsh_hyperplanes(5, 3, seed=2))


def test_an_in_region_user_gets_nearly_clean_answers_and_a_covering_one_does_not() -> None:
    b4b = B4B(hyperplanes=8, lam=1e-4, alpha=1.0, beta=0.5, center=CENTER, seed=0)
    honest, thief = _api(b4b, "honest"), _api(b4b, "thief")
    xh, xt = _honest(500), _covering(500)
    zh, zt = honest.query(xh).values, thief.query(xt).values
    assert b4b.coverage("honest") < 0.05 < 0.5 < b4b.coverage("thief")
    assert b4b.last_sigma("honest") < 1e-3 < 1.0 < b4b.last_sigma("thief")
    clean_h, clean_t = xh.flatten(1), xt.flatten(1)
    err_h = (b4b.untransform(zh, "honest") - clean_h).norm(dim=1) / clean_h.norm(dim=1)
    err_t = (b4b.untransform(zt, "thief") - clean_t).norm(dim=1) / clean_t.norm(dim=1)
    assert float(err_h.max()) < 1e-3
    assert float(err_t[-100:].mean()) > 0.5  # the last answers, bought at high coverage
    assert not torch.allclose(zh, clean_h, atol=0.1)  # the answers themselves are transformed


def test_state_is_kept_per_client_and_reset_repeats_every_answer() -> None:
    b4b = B4B(hyperplanes=8, lam=1e-4, alpha=1.0, beta=0.5, center=CENTER, seed=0)
    a, b = _api(b4b, "a"), _api(b4b, "b")  # (wrapping an oracle resets the defence)
    x = _covering(300)
    first = a.query(x).values
    assert b4b.coverage("a") > 0.5 and b4b.coverage("b") == 0.0
    b_first = b.query(x[:10]).values  # b starts from no coverage of its own
    assert 0 < b4b.coverage("b") < 0.1 and b4b.last_sigma("b") < b4b.last_sigma("a")
    b4b.reset()
    assert b4b.coverage("a") == 0.0
    assert torch.equal(a.query(x).values, first)
    assert torch.equal(b.query(x[:10]).values, b_first)
    with pytest.raises(ValueError, match="not been answered"):
        b4b.untransform(first, "nobody")


def test_transforms_are_orthogonal_per_client_and_deterministic_in_client_and_seed() -> None:
    t = client_transform(16, "alice", seed=3)
    assert torch.allclose(t.rotation @ t.rotation.T, torch.eye(16), atol=1e-5)
    assert torch.equal(client_transform(16, "alice", seed=3).rotation, t.rotation)
    assert not torch.allclose(client_transform(16, "bob", seed=3).rotation, t.rotation)
    assert not torch.allclose(client_transform(16, "alice", seed=4).rotation, t.rotation)
    z = torch.randn(20, 16, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(t.invert(t.apply(z)), z, atol=1e-5)
    d = torch.cdist(z, z)
    assert torch.allclose(torch.cdist(t.apply(z), t.apply(z)), d, atol=1e-4)  # distances kept
    b4b = B4B(hyperplanes=6, alpha=1.0, lam=1e-6, beta=1.0, seed=0)  # noise ~0 at low coverage
    x = _honest(5)
    alice, bob = _api(b4b, "alice"), _api(b4b, "bob")
    za, zb = alice.query(x).values, bob.query(x).values
    assert (za - zb).abs().max() > 0.1  # two accounts' answers do not merge as they are
    torch.testing.assert_close(b4b.untransform(za, "alice"), b4b.untransform(zb, "bob"))


def test_transform_off_answers_in_the_victims_coordinates() -> None:
    b4b = B4B(hyperplanes=6, transform=False, seed=0)
    x = _honest(8)
    torch.testing.assert_close(_api(b4b).query(x).values, x.flatten(1))


def test_b4b_wraps_only_encoders_and_validates_its_settings() -> None:
    b4b = B4B()
    assert b4b.accepts(OutputKind.EMBEDDING) and not b4b.accepts(OutputKind.PROBABILITIES)
    with pytest.raises(ValueError, match="embedding"):
        DefendedOracle(LocalOracle(RowBands(), SPEC, ledger=Ledger()), b4b)
    with pytest.raises(TypeError, match="embeddings"):
        b4b.answer(torch.zeros(1, 1, 8, 8), Response(OutputKind.LABEL, torch.zeros(1), 4), "c")
    with pytest.raises(TypeError, match="per client"):
        b4b.apply(Response(OutputKind.EMBEDDING, torch.zeros(1, 4)))
    with pytest.raises(ValueError, match="center has 3"):
        _api(B4B(center=[0.0, 0.0, 0.0])).query(_honest(2))
    for bad in ({"hyperplanes": 0}, {"hyperplanes": 30}, {"alpha": 1e-7}, {"bias": -1.0}):
        with pytest.raises(ValueError):
            B4B(**bad)  # type: ignore[arg-type]
    assert "hyperplanes=12" in repr(b4b) and "seed=0" in repr(b4b)
