"""Knockoff adaptive as the paper states it: alpha = 1/N(z), a windowed baseline and rescaling,
every leaf equally likely at the start, the offline knockoff trained from fresh weights; on the
parameter-free RowBands victim: the ledger is exact, runs are deterministic, the policy learns."""

from __future__ import annotations

import math

import pytest
import torch

import stealkit.attacks.knockoff as knockoff
from stealkit.attacks import KnockoffNets, TrainRecipe
from stealkit.attacks.knockoff import (
    HierarchicalBandit,
    Hierarchy,
    build_hierarchy,
    rescale_in_window,
    uniform_leaf_preferences,
    windowed_baseline,
)
from stealkit.data import ImageDataset
from stealkit.data.pool import QueryPool
from stealkit.models import build_model
from stealkit.oracle import InputSpec, Ledger, LocalOracle
from toys import RowBands

SPEC = InputSpec(channels=1, height=8, width=8)
TINY = TrainRecipe(epochs=1, min_steps=5, batch_size=64, lr=3e-3)


def _tree(sizes: list[int], per_leaf: int = 1) -> Hierarchy:
    groups, leaves, n = [], [], 0
    for s in sizes:
        groups.append(list(range(n, n + s)))
        n += s
    leaves = [torch.arange(i * per_leaf, (i + 1) * per_leaf) for i in range(n)]
    return Hierarchy(groups, leaves)


def test_step_size_is_one_over_n_on_a_three_leaf_tree():
    """Leaves a, b under group 0, c under group 1. Group 0 is drawn twice (alpha 1, then 1/2),
    leaf b twice (1, then 1/2), group 1 once (alpha 1); the only child c never moves."""
    bandit = HierarchicalBandit(_tree([2, 1]), torch.Generator().manual_seed(0))
    assert torch.allclose(bandit.h_root, torch.tensor([math.log(2.0), 0.0]))  # 1/3 per leaf
    e = math.e
    # step 1: b with r - rbar = 1, alpha 1; pi(group 0) = 2/3, pi(b | 0) = 1/2
    bandit.update(0, 1, reward=1.0, baseline=0.0)
    root = [math.log(2.0) + 1 / 3, -1 / 3]
    assert torch.allclose(bandit.h_root, torch.tensor(root), atol=1e-6)
    assert torch.allclose(bandit.h_group[0], torch.tensor([-0.5, 0.5]), atol=1e-6)
    # step 2: b again, r - rbar = 0.25, alpha 1/2 at both levels
    p0 = 2 * math.exp(2 / 3) / (2 * math.exp(2 / 3) + 1)  # pi(group 0) after step 1
    bandit.update(0, 1, reward=0.5, baseline=0.25)
    root = [root[0] + 0.125 * (1 - p0), root[1] - 0.125 * (1 - p0)]
    leaf = [-0.5 - 0.125 / (1 + e), 0.5 + 0.125 * (1 - e / (1 + e))]  # pi(b | 0) = e / (1 + e)
    assert torch.allclose(bandit.h_root, torch.tensor(root), atol=1e-6)
    assert torch.allclose(bandit.h_group[0], torch.tensor(leaf), atol=1e-6)
    # step 3: c, r - rbar = 1, alpha 1 = 1/N(group 1), although group 0 has been drawn twice
    p1 = math.exp(root[1]) / (math.exp(root[0]) + math.exp(root[1]))
    bandit.update(1, 0, reward=1.0, baseline=0.0)
    root = [root[0] - (1 - p1), root[1] + (1 - p1)]  # pi(group 0) = 1 - p1
    assert torch.allclose(bandit.h_root, torch.tensor(root), atol=1e-6)
    assert torch.allclose(bandit.h_group[0], torch.tensor(leaf), atol=1e-6)
    assert torch.allclose(bandit.h_group[1], torch.zeros(1))
    assert bandit.n_root == [2, 1] and bandit.n_group == [[0, 2], [1]]


def test_constant_step_is_an_option():
    paper = HierarchicalBandit(_tree([2, 1]), torch.Generator())
    const = HierarchicalBandit(_tree([2, 1]), torch.Generator(), lr=0.1)
    for bandit in (paper, const):
        for _ in range(2):
            bandit.update(0, 0, 1.0, 0.0)
    # the second step of leaf a: 1/2 of (1 - pi) for the paper, 0.1 for the constant
    pi = torch.softmax(torch.tensor([0.5, -0.5]), 0)[0]  # leaf a after the paper's first step
    assert float(paper.h_group[0][0]) == pytest.approx(0.5 + 0.5 * (1 - float(pi)))
    pi = torch.softmax(torch.tensor([0.05, -0.05]), 0)[0]
    assert float(const.h_group[0][0]) == pytest.approx(0.05 + 0.1 * (1 - float(pi)))


def test_every_leaf_starts_equally_likely_on_an_unbalanced_tree():
    tree = _tree([1, 3, 2], per_leaf=1000)
    assert torch.allclose(
        uniform_leaf_preferences(tree.groups), torch.log(torch.tensor([1.0, 3, 2]))
    )
    bandit = HierarchicalBandit(tree, torch.Generator().manual_seed(0))
    assert torch.allclose(bandit.leaf_probabilities(), torch.full((6,), 1 / 6))
    zeros = HierarchicalBandit(tree, torch.Generator(), init="zeros")
    assert float(zeros.leaf_probabilities()[0]) == pytest.approx(1 / 3)  # the old bias
    counts = torch.zeros(6)
    for _ in range(3000):
        g, j, _ = bandit.draw()
        counts[tree.groups[g][j]] += 1
    assert (counts / 3000 - 1 / 6).abs().max() < 0.03  # sd of one share ~ 0.007


def test_windowed_baseline_and_rescaling_by_hand():
    assert windowed_baseline([1.0, 2.0, 3.0, 4.0, 5.0], 2, 0.0) == pytest.approx(4.5)
    assert windowed_baseline([1.0, 2.0], 5, 0.0) == pytest.approx(1.5)
    assert windowed_baseline([], 5, 0.7) == pytest.approx(0.7)  # first step: r - rbar = 0
    got = rescale_in_window(torch.tensor([0.0, 10.0, 5.0, 5.0, 5.0]), 3)
    assert torch.allclose(got, torch.tensor([0.5, 1.0, 0.5, 0.0, 0.5]))
    # an early maximum no longer squashes later rewards: 2 is the top of its window
    later = rescale_in_window(torch.tensor([100.0, 1.0, 2.0, 1.0, 2.0]), 2)
    assert torch.allclose(later[1:], torch.tensor([0.0, 1.0, 0.0, 1.0]))


def _two_source_pool(n: int = 300) -> ImageDataset:
    """'bands:k' images light one band of RowBands (confident answers); 'flat:k' are constant
    grey (uniform answers, certainty 0)."""
    g = torch.Generator().manual_seed(0)
    band = torch.randint(4, (n,), generator=g)
    x = torch.zeros((2 * n, 1, 8, 8), dtype=torch.uint8)
    for i, k in enumerate(band.tolist()):
        x[i, 0, 2 * k : 2 * k + 2] = 255
    level = torch.randint(4, (n,), generator=g)
    x[n:] = (40 + 50 * level).to(torch.uint8).view(-1, 1, 1, 1)
    classes = [f"bands:{k}" for k in range(4)] + [f"flat:{k}" for k in range(4)]
    return ImageDataset("two-source", x, torch.cat([band, 4 + level]), classes)


def _run(attack: KnockoffNets, budget: int = 150, seed: int = 0):
    oracle = LocalOracle(RowBands(), SPEC, ledger=Ledger(budget=budget))
    torch.manual_seed(3)
    surrogate = build_model("mlp", in_channels=1, num_classes=4, image_size=8)
    result = attack.run(
        oracle,
        pool=QueryPool(_two_source_pool(), SPEC),
        surrogate=surrogate,
        budget=budget,
        seed=seed,
        device="cpu",
    )
    return oracle, result


def test_hierarchy_puts_sources_above_classes():
    tree = build_hierarchy(QueryPool(_two_source_pool(), SPEC))
    assert tree.names == ["bands", "flat"] and tree.groups == [[0, 1, 2, 3], [4, 5, 6, 7]]
    forced = build_hierarchy(QueryPool(_two_source_pool(), SPEC), n_groups=3, by="kmeans")
    assert forced.names is not None and forced.names[0].startswith("cluster")


def test_adaptive_spends_exactly_the_budget_and_buys_the_confident_source():
    attack = KnockoffNets(strategy="adaptive", reward="cert", query_batch=32, recipe=TINY)
    oracle, result = _run(attack)
    assert oracle.ledger.spent == result.queries == result.info["transfer_set"] == 150
    share = result.info["pool_source_share"]
    assert sum(share.values()) == pytest.approx(1.0)
    assert share["bands"] > 0.65  # both sources start at 1/2: the certainty reward moved it
    probs = result.info["policy_group_probability"]
    assert probs["bands"] > probs["flat"]
    assert sum(result.info["policy_leaf_probability"].values()) == pytest.approx(1.0)
    _, rand = _run(KnockoffNets(strategy="random", online_steps=0, recipe=TINY))
    assert abs(rand.info["pool_source_share"]["bands"] - 0.5) < 0.15


def test_adaptive_all_rewards_is_deterministic_per_seed():
    attack = KnockoffNets(strategy="adaptive", reward="all", query_batch=40, recipe=TINY)
    runs = [_run(attack, seed=s)[1] for s in (0, 0, 1)]
    w = [torch.cat([p.detach().flatten() for p in r.surrogate.parameters()]) for r in runs]
    assert torch.equal(w[0], w[1]) and runs[0].history == runs[1].history
    assert runs[0].info["pool_label_share"] == runs[1].info["pool_label_share"]
    assert not torch.equal(w[0], w[2])


@pytest.mark.parametrize("warm_start", [False, True])
def test_offline_training_starts_fresh_unless_warm_start(monkeypatch, warm_start):
    seen: list[torch.Tensor] = []
    real = knockoff.train_surrogate

    def spy(surrogate, *args, **kwargs):
        seen.append(torch.cat([p.detach().flatten().clone() for p in surrogate.parameters()]))
        return real(surrogate, *args, **kwargs)

    monkeypatch.setattr(knockoff, "train_surrogate", spy)
    torch.manual_seed(3)
    init = torch.cat(
        [
            p.detach().flatten()
            for p in build_model("mlp", in_channels=1, num_classes=4, image_size=8).parameters()
        ]
    )
    attack = KnockoffNets(
        strategy="adaptive", query_batch=50, online_steps=2, warm_start=warm_start, recipe=TINY
    )
    _run(attack)
    assert torch.equal(seen[0], init) is not warm_start  # fresh: the very weights random gets


def test_bad_options_raise_naming_them():
    for kw, word in [
        ({"baseline": "ever"}, "baseline"),
        ({"rescale": "global"}, "rescale"),
        ({"init": "random"}, "init"),
        ({"hierarchy": "wordnet"}, "hierarchy"),
        ({"bandit_lr": 0.0}, "bandit_lr"),
        ({"window": 0}, "window"),
    ]:
        with pytest.raises(ValueError, match=word):
            KnockoffNets(**kw)
    text = repr(KnockoffNets(strategy="adaptive", bandit_lr=0.1, warm_start=True))
    assert "bandit_lr=0.1" in text and "warm_start=True" in text and "window=25" in text
