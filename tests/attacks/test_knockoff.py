"""Knockoff Nets and CopyCat on a tiny victim: above chance, exactly the budget, the bandit maths."""

from __future__ import annotations

import math

import pytest
import torch

from stealkit.attacks import CopyCat, KnockoffNets, TrainRecipe, build_attack
from stealkit.attacks.knockoff import (
    bandit_update,
    build_hierarchy,
    certainty_reward,
    diversity_reward,
    loss_reward,
)
from stealkit.data import ImageDataset, load_dataset
from stealkit.data.pool import QueryPool
from stealkit.defenses import DefendedOracle, TopK
from stealkit.errors import BudgetExceeded
from stealkit.metrics import agreement
from stealkit.models import build_model
from stealkit.oracle import InputSpec, Ledger, LocalOracle
from stealkit.train import fit, predict

SPEC = InputSpec(channels=1, height=8, width=8)
FAST = TrainRecipe(epochs=5, min_steps=60, batch_size=64, lr=3e-3, augment=False)


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", "train"), load_dataset("digits", "test")


@pytest.fixture(scope="module")
def victim(digits):
    train, _ = digits
    torch.manual_seed(0)
    model = build_model("mlp", in_channels=1, num_classes=10, image_size=8)
    fit(
        model,
        train.images(),
        train.y,
        loss_fn=torch.nn.functional.cross_entropy,
        epochs=15,
        lr=3e-3,
        device="cpu",
    )
    return model


def _agreement(model, victim, test):
    x = test.images()
    return agreement(
        predict(model, x, device="cpu").argmax(1), predict(victim, x, device="cpu").argmax(1)
    )


@pytest.mark.parametrize(
    "attack",
    [
        KnockoffNets(strategy="random", online_steps=0, recipe=FAST),
        KnockoffNets(strategy="adaptive", reward="all", query_batch=32, recipe=FAST),
        KnockoffNets(strategy="adaptive", reward="cert", query_batch=32, recipe=FAST),
        CopyCat(query_batch=50, recipe=FAST),
    ],
    ids=["random", "adaptive-all", "adaptive-cert", "copycat"],
)
def test_attack_beats_chance_and_spends_exactly_the_budget(attack, victim, digits):
    train, test = digits
    budget = 333  # not a multiple of any query batch: the last batch must be trimmed
    oracle = LocalOracle(victim, SPEC, ledger=Ledger(budget=budget, price_per_1k=3.0))
    torch.manual_seed(1)
    surrogate = build_model("mlp", in_channels=1, num_classes=10, image_size=8)
    result = attack.run(
        oracle,
        pool=QueryPool(train, SPEC),
        surrogate=surrogate,
        budget=budget,
        seed=0,
        device="cpu",
    )
    assert oracle.ledger.spent == budget == result.queries
    assert oracle.ledger.cost == pytest.approx(budget * 3.0 / 1000)
    assert oracle.ledger.refused_calls == 0
    assert _agreement(result.surrogate, victim, test) > 0.5  # chance is 0.1
    with pytest.raises(BudgetExceeded):
        oracle.query(QueryPool(train, SPEC).images(torch.arange(1)))


def test_knockoff_learns_from_topk_and_labels(victim, digits):
    train, test = digits
    for oracle in (
        DefendedOracle(LocalOracle(victim, SPEC, ledger=Ledger(budget=400)), TopK(k=1)),
        LocalOracle(victim, SPEC, output="label", ledger=Ledger(budget=400)),
    ):
        torch.manual_seed(1)
        s = build_model("mlp", in_channels=1, num_classes=10, image_size=8)
        r = KnockoffNets(strategy="random", online_steps=0, recipe=FAST).run(
            oracle, pool=QueryPool(train, SPEC), surrogate=s, budget=400, device="cpu"
        )
        assert oracle.ledger.spent == 400
        assert _agreement(r.surrogate, victim, test) > 0.5


def test_hard_labels_from_probabilities_train_as_on_a_label_api(victim, digits):
    """The defence-aware thief (hard_labels) learns exactly what a label-only API would teach,
    whatever scores come back: argmax-preserving poisoning cannot touch it. (Random queries:
    the adaptive bandit's rewards still read the scores, so its queries differ.)"""
    from dataclasses import replace

    train, _ = digits
    weights = []
    for output, hard in (("probabilities", True), ("label", False), ("probabilities", False)):
        oracle = LocalOracle(victim, SPEC, output=output, ledger=Ledger(budget=200))
        torch.manual_seed(1)
        s = build_model("mlp", in_channels=1, num_classes=10, image_size=8)
        attack = KnockoffNets(
            strategy="random", online_steps=0, recipe=replace(FAST, hard_labels=hard)
        )
        r = attack.run(oracle, pool=QueryPool(train, SPEC), surrogate=s, budget=200, device="cpu")
        weights.append(torch.cat([p.detach().flatten() for p in r.surrogate.parameters()]))
    assert torch.equal(weights[0], weights[1])  # probabilities + hard_labels == a label API
    assert not torch.equal(weights[0], weights[2])  # and differs from learning the scores


def test_budget_larger_than_ledger_or_pool_is_refused_before_any_query(victim, digits):
    train, _ = digits
    oracle = LocalOracle(victim, SPEC, ledger=Ledger(budget=100))
    s = build_model("mlp", in_channels=1, num_classes=10, image_size=8)
    with pytest.raises(ValueError, match="exceeds the 100 queries left"):
        KnockoffNets(recipe=FAST).run(oracle, pool=QueryPool(train, SPEC), surrogate=s, budget=200)
    small = QueryPool(train.subset(torch.arange(50)), SPEC)
    with pytest.raises(ValueError, match="exceeds the 50 images"):
        CopyCat(recipe=FAST).run(LocalOracle(victim, SPEC), pool=small, surrogate=s, budget=60)
    assert oracle.ledger.spent == 0


def test_bandit_update_matches_hand_computation():
    h = torch.tensor([0.0, math.log(2.0), 0.0])  # pi = (1/4, 1/2, 1/4)
    new = bandit_update(h, action=1, reward=1.0, baseline=0.2, lr=0.5)
    step = 0.5 * (1.0 - 0.2)  # alpha (r - rbar) = 0.4
    expected = torch.tensor(
        [0.0 - step * 0.25, math.log(2.0) + step * (1 - 0.5), 0.0 - step * 0.25]
    )
    assert torch.allclose(new, expected, atol=1e-6)
    # a reward below the baseline pushes the chosen action down
    assert bandit_update(h, 0, reward=0.0, baseline=1.0, lr=0.1)[0] < h[0]


def test_rewards_by_hand():
    y = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.4, 0.2]])
    assert torch.allclose(certainty_reward(y), torch.tensor([0.5, 0.0]))
    mean = torch.tensor([0.5, 0.3, 0.2])
    assert torch.allclose(diversity_reward(y, mean), torch.tensor([0.2, 0.1]))
    logits = torch.log(torch.tensor([[0.7, 0.2, 0.1]]))
    assert torch.allclose(loss_reward(y[:1], logits), -(y[:1] * logits).sum(1), atol=1e-6)


def test_hierarchy_from_labels_and_from_kmeans(digits):
    train, _ = digits
    tree = build_hierarchy(QueryPool(train, SPEC), n_groups=3)
    assert len(tree.leaves) == 10 and sum(len(g) for g in tree.groups) == 10
    assert sum(len(leaf) for leaf in tree.leaves) == len(train)
    unlabeled = ImageDataset("u", train.x, None)
    tree = build_hierarchy(QueryPool(unlabeled, SPEC), n_leaves=6, n_groups=2)
    assert len(tree.leaves) == 6 and len(tree.groups) == 2
    assert sorted(torch.cat(tree.leaves).tolist()) == list(range(len(train)))


def test_bad_hyperparameters_raise():
    with pytest.raises(ValueError, match="strategy"):
        KnockoffNets(strategy="greedy")
    with pytest.raises(ValueError, match="reward"):
        KnockoffNets(reward="fun")
    with pytest.raises(ValueError, match="unknown attack type"):
        build_attack("nope")
    with pytest.raises(ValueError, match="recipe"):
        TrainRecipe(lr=-1.0)
    assert "strategy='adaptive'" in repr(
        build_attack("knockoff", strategy="adaptive", recipe={"epochs": 3})
    )


def test_adaptive_records_what_its_transfer_set_holds(victim, digits):
    train, _ = digits
    oracle = LocalOracle(victim, SPEC, ledger=Ledger(budget=200))
    s = build_model("mlp", in_channels=1, num_classes=10, image_size=8)
    attack = KnockoffNets(strategy="adaptive", query_batch=50, online_steps=1, recipe=FAST)
    info = attack.run(
        oracle, pool=QueryPool(train, SPEC), surrogate=s, budget=200, device="cpu"
    ).info
    assert info["transfer_set"] == 200
    assert sum(info["victim_label_share"]) == pytest.approx(1.0)
    assert len(info["pool_label_share"]) == 10 and sum(info["pool_label_share"]) == pytest.approx(
        1.0
    )
