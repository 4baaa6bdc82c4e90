"""Defence wrappers keep the oracle interface, charge the inner ledger once, and refuse misuse."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from stealkit.defenses import (
    PRESETS,
    Argmax,
    DefendedOracle,
    Defense,
    GaussianNoise,
    NoDefense,
    ReverseSigmoid,
    Rounding,
    TopK,
    build_defense,
    defense_names,
    register_defense,
)
from stealkit.errors import BudgetExceeded, QueryRefused
from stealkit.oracle import OutputKind, Response

EXPECTED_KIND = {
    "none": OutputKind.PROBABILITIES,
    "top1": OutputKind.TOPK,
    "top2": OutputKind.TOPK,
    "round1": OutputKind.PROBABILITIES,
    "round2": OutputKind.PROBABILITIES,
    "argmax": OutputKind.LABEL,
    "noise": OutputKind.PROBABILITIES,
    "reverse-sigmoid": OutputKind.PROBABILITIES,
    "adaptive-misinformation": OutputKind.PROBABILITIES,
    "mad-0.5": OutputKind.PROBABILITIES,
    "mad-1.0": OutputKind.PROBABILITIES,
    "mad-argmax-0.5": OutputKind.PROBABILITIES,
    "mad-argmax-1.0": OutputKind.PROBABILITIES,
}
# Presets for encoder victims: they wrap an embedding oracle and keep answering embeddings.
EMBEDDING_PRESETS = {"emb-noise", "emb-top64", "emb-round1", "b4b"}


def test_every_preset_has_an_expected_kind() -> None:
    assert set(PRESETS) == set(EXPECTED_KIND) | EMBEDDING_PRESETS
    assert not set(EXPECTED_KIND) & EMBEDDING_PRESETS


@pytest.mark.parametrize("preset", sorted(EMBEDDING_PRESETS))
def test_embedding_presets_wrap_an_embedding_oracle(make_oracle, images8, preset) -> None:
    type_, params = PRESETS[preset]
    inner = make_oracle("embedding")
    oracle = DefendedOracle(inner, build_defense(type_, **params))
    r = oracle.query(images8)
    assert r.kind is OutputKind.EMBEDDING and r.values.shape == (6, 4)
    assert inner.ledger.spent == 6 and inner.ledger.calls == 1
    with pytest.raises(ValueError):
        DefendedOracle(make_oracle("probabilities"), build_defense(type_, **params))


@pytest.mark.parametrize("preset", sorted(EXPECTED_KIND))
def test_defended_oracle_keeps_the_interface(make_oracle, images8, preset) -> None:
    type_, params = PRESETS[preset]
    inner = make_oracle("probabilities")
    oracle = DefendedOracle(inner, build_defense(type_, **params))
    assert oracle.output is EXPECTED_KIND[preset]
    assert oracle.input_spec == inner.input_spec
    assert oracle.ledger is inner.ledger
    assert oracle.output_dim == oracle.num_classes == 4

    r = oracle.query(images8)
    assert r.kind is oracle.output
    assert len(r) == 6
    assert r.num_classes == 4
    assert inner.ledger.spent == 6 and inner.ledger.calls == 1
    if r.kind is not OutputKind.LABEL:
        assert r.values.shape == (6, 4)
        assert (r.values >= 0).all()


@pytest.mark.parametrize("inner_kind", ["probabilities", "logits"])
def test_defences_see_the_true_probabilities(make_oracle, toy_model, images8, inner_kind) -> None:
    oracle = DefendedOracle(make_oracle(inner_kind), TopK(k=1))
    r = oracle.query(images8)
    full = toy_model(images8).softmax(1)
    torch.testing.assert_close(r.values.max(1).values, full.max(1).values)
    assert torch.equal(r.labels(), full.argmax(1))


def test_argmax_defence_answers_the_victims_labels(make_oracle, toy_model, images8) -> None:
    r = DefendedOracle(make_oracle(), Argmax()).query(images8)
    assert r.values.dtype == torch.int64
    assert torch.equal(r.values, toy_model(images8).argmax(1))


def test_noise_defence_is_reproducible_after_reset(make_oracle, images8) -> None:
    defense = GaussianNoise(sigma=0.2, seed=3)
    oracle = DefendedOracle(make_oracle(), defense)
    first = oracle.query(images8).values
    second = oracle.query(images8).values
    assert not torch.equal(first, second)  # the generator moves on between queries
    defense.reset()
    torch.testing.assert_close(oracle.query(images8).values, first, atol=0, rtol=0)
    torch.testing.assert_close(first.sum(1), torch.ones(6))
    assert (first >= 0).all()


def test_noise_on_logits_needs_a_logit_oracle(make_oracle, images8) -> None:
    with pytest.raises(ValueError, match="logits"):
        DefendedOracle(make_oracle("probabilities"), GaussianNoise(on="logits"))
    oracle = DefendedOracle(make_oracle("logits"), GaussianNoise(on="logits", sigma=0.5))
    assert oracle.output is OutputKind.PROBABILITIES
    r = oracle.query(images8)
    torch.testing.assert_close(r.values.sum(1), torch.ones(6))


@pytest.mark.parametrize("inner_kind", ["label", "topk"])
@pytest.mark.parametrize("defense", [TopK(k=2), Rounding(decimals=2), Argmax()])
def test_refuses_oracles_without_class_scores(make_oracle, inner_kind, defense) -> None:
    with pytest.raises(ValueError, match=inner_kind):
        DefendedOracle(make_oracle(inner_kind), defense)


@pytest.mark.parametrize("inner_kind", ["label", "topk", "embedding"])
def test_no_defence_wraps_any_kind_and_changes_nothing(make_oracle, inner_kind, images8) -> None:
    inner = make_oracle(inner_kind)
    oracle = DefendedOracle(inner, NoDefense())
    assert oracle.output is inner.output
    assert torch.equal(oracle.query(images8).values, inner.query(images8).values)


def test_refused_batch_charges_nothing_and_skips_the_defence(make_oracle, images8) -> None:
    calls: list[int] = []

    class Counting(NoDefense):
        def apply(self, response: Response) -> Response:
            calls.append(len(response))
            return response

    oracle = DefendedOracle(make_oracle(budget=8), Counting())
    oracle.query(images8)
    with pytest.raises(BudgetExceeded):
        oracle.query(images8)
    assert oracle.ledger.spent == 6
    assert calls == [6]


def test_rounding_wrapper_rounds(make_oracle, images8) -> None:
    r = DefendedOracle(make_oracle(), Rounding(decimals=1)).query(images8)
    scaled = r.values.double() * 10
    assert (scaled - scaled.round()).abs().max() < 1e-4


def test_reverse_sigmoid_wrapper_gives_distributions(make_oracle, images8) -> None:
    r = DefendedOracle(make_oracle(), ReverseSigmoid(beta=0.7, gamma=0.4)).query(images8)
    assert (r.values >= 0).all()
    torch.testing.assert_close(r.values.sum(1), torch.ones(6))


@pytest.mark.parametrize(
    ("factory", "kwargs"),
    [
        (TopK, {"k": 0}),
        (Rounding, {"decimals": -1}),
        (GaussianNoise, {"sigma": -1.0}),
        (GaussianNoise, {"on": "labels"}),
        (ReverseSigmoid, {"beta": -1.0}),
        (ReverseSigmoid, {"gamma": 0.0}),
    ],
)
def test_bad_hyperparameters_raise_value_error(factory, kwargs) -> None:
    with pytest.raises(ValueError):
        factory(**kwargs)


def test_reprs_show_hyperparameters(make_oracle) -> None:
    assert repr(TopK(k=3)) == "TopK(k=3, renormalize=False)"
    assert "decimals=2" in repr(Rounding(decimals=2))
    assert "sigma=0.3" in repr(GaussianNoise(sigma=0.3, seed=7)) and "seed=7" in repr(
        GaussianNoise(sigma=0.3, seed=7)
    )
    assert "beta=0.5" in repr(ReverseSigmoid(beta=0.5))
    text = repr(DefendedOracle(make_oracle(), TopK(k=2)))
    assert "TopK(k=2" in text and "LocalOracle" in text


def test_registry_refuses_duplicates_and_unknown_names() -> None:
    assert {"none", "topk", "rounding", "argmax", "gaussian_noise", "reverse_sigmoid"} <= set(
        defense_names()
    )
    with pytest.raises(ValueError, match="already registered"):
        register_defense("topk", TopK)
    with pytest.raises(ValueError, match="registered"):
        build_defense("no-such-defence")
    assert repr(build_defense("topk", k=2)) == "TopK(k=2, renormalize=False)"


class PerClientQuota(Defense):
    """A stateful monitor: each client may have ``quota`` inputs answered, then it is refused."""

    needs = None
    gives = None

    def __init__(self, quota: int) -> None:
        self.quota = quota
        self.seen: dict[str, int] = {}
        self.queries: list[Tensor] = []

    def answer(self, x: Tensor, response: Response, client: str) -> Response:
        self.queries.append(x)
        if self.seen.get(client, 0) + len(x) > self.quota:
            raise QueryRefused(f"client {client!r} is over its quota of {self.quota}")
        self.seen[client] = self.seen.get(client, 0) + len(x)
        return response

    def apply(self, response: Response) -> Response:  # pragma: no cover - answer is overridden
        return response

    def reset(self) -> None:
        self.seen.clear()


def test_a_defence_sees_the_queries_keeps_state_per_client_and_may_refuse(
    make_oracle, images8
) -> None:
    monitor = PerClientQuota(quota=12)
    alice = DefendedOracle(make_oracle(budget=100), monitor)
    bob_inner = make_oracle(budget=100)
    bob_inner.client = "bob"
    bob = DefendedOracle(bob_inner, monitor)
    alice.query(images8)
    alice.query(images8)
    with pytest.raises(QueryRefused, match="'thief' is over its quota of 12"):
        alice.query(images8)
    assert alice.ledger.spent == 12  # the refused batch was not charged
    bob.query(images8)  # another client has its own count
    assert bob.ledger.spent == 6 and monitor.seen == {"thief": 12, "bob": 6}
    assert all(torch.equal(q, images8) for q in monitor.queries)  # it saw what was asked
