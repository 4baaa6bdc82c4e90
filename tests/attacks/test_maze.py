"""MAZE on the 1x8x8 row-band toy victim: exact budget, query accounting, the zeroth-order maths."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stealkit.attacks.maze import MAZE, clone_loss, kl_disagreement, zeroth_order_gradient
from stealkit.errors import BudgetExceeded
from stealkit.metrics import agreement
from stealkit.models import build_model
from stealkit.models.generators import build_generator

NZ = 8


def _surrogate(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", in_channels=1, num_classes=4, image_size=8)


def _generator(kind: str = "dcgan"):
    return build_generator(kind, NZ, 1, 8, num_classes=4, ngf=8, seed=0)


def _maze(**kw) -> MAZE:
    params = dict(query_batch=32, nz=NZ, grad_m=2, generator_lr=1e-3)
    return MAZE(**(params | kw))


def _run(attack: MAZE, oracle, budget: int, seed: int = 0, **kw):
    return attack.run(
        oracle,
        surrogate=_surrogate(),
        generator=_generator(),
        budget=budget,
        seed=seed,
        device="cpu",
        **kw,
    )


def test_spends_exactly_the_budget_and_charges_every_perturbed_query(make_oracle):
    oracle = make_oracle("probabilities", budget=333)  # raises if the attack ever crosses it
    sizes: list[int] = []
    query = oracle.query
    oracle.query = lambda x: sizes.append(len(x)) or query(x)  # type: ignore[method-assign]
    attack = _maze(query_batch=16, grad_m=2, c_iter=2, replay_iter=3)
    result = _run(attack, oracle, 333)
    assert oracle.ledger.spent == 333 == result.queries == sum(sizes)
    # an image costs 1 * (2 + 1) + 2 = 5: four iterations of 16 images, one of 2, 3 left over;
    # each generator step sends every image at its m perturbed points and at itself, in one call
    assert sizes == [48, 16, 16] * 4 + [6, 2, 2] + [3]
    assert result.info["replay_pairs"] == 4 * 16 * 2 + 2 * 2 + 3
    with pytest.raises(BudgetExceeded):
        oracle.query(torch.rand(1, 1, 8, 8))


def test_beats_chance_without_data(make_oracle, toy_model):
    oracle = make_oracle("probabilities", budget=4000)
    result = _run(_maze(), oracle, 4000)
    x = torch.rand((500, 1, 8, 8), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        victim, stolen = toy_model(x).argmax(1), result.surrogate(x).argmax(1)
    assert torch.bincount(victim).max() / len(x) < 0.3  # a constant guess agrees < 30%
    assert agreement(stolen, victim) > 0.5
    assert oracle.ledger.spent == 4000


def test_deterministic_at_a_fixed_seed(make_oracle):
    runs = []
    for seed in (3, 3, 4):
        result = _run(_maze(), make_oracle("probabilities", budget=600), 600, seed=seed)
        runs.append(result.surrogate.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_zeroth_order_estimate_approaches_the_true_gradient_as_directions_grow():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(1, 4, 4, generator=gen)
    t = torch.randn(8, 1, 4, 4, generator=gen)

    def f(x: torch.Tensor) -> torch.Tensor:  # smooth, non-linear: sum(a sin x) + |x|^2 / 4
        return (a * torch.sin(x)).flatten(1).sum(1) + 0.25 * x.flatten(1).pow(2).sum(1)

    tt = t.clone().requires_grad_(True)
    (true,) = torch.autograd.grad(f(tt).sum(), tt)
    errors, cosines = [], []
    for m in (4, 64, 2048):
        est, base = zeroth_order_gradient(f, t, m=m, eps=1e-3, generator=gen)
        assert est.shape == t.shape and torch.allclose(base, f(t))
        errors.append(
            float(((est - true).flatten(1).norm(dim=1) / true.flatten(1).norm(dim=1)).mean())
        )
        cosines.append(float(F.cosine_similarity(est.flatten(1), true.flatten(1)).mean()))
    assert errors[0] > errors[1] > errors[2]
    assert cosines[2] > 0.97 and errors[2] < 0.15  # ~ sqrt(d / m) = 0.09 relative error


def test_kl_disagreement_by_hand_and_as_the_clone_loss():
    p = torch.tensor([[0.5, 0.5], [0.9, 0.1]])
    logits = torch.tensor([[0.0, math.log(3.0)], [0.0, 0.0]])
    kl = kl_disagreement(p, logits)
    by_hand = [0.5 * math.log(0.5 / 0.25) + 0.5 * math.log(0.5 / 0.75)]
    by_hand.append(0.9 * math.log(0.9 / 0.5) + 0.1 * math.log(0.1 / 0.5))
    assert kl.tolist() == pytest.approx(by_hand, abs=1e-6)
    assert torch.allclose(kl_disagreement(p, torch.log(p)), torch.zeros(2), atol=1e-6)
    # its gradient in the logits is the soft cross-entropy's: softmax(logits) - p, per row / N
    w = logits.clone().requires_grad_(True)
    clone_loss(w, p).backward()
    assert torch.allclose(w.grad, (F.softmax(logits, 1) - p) / 2, atol=1e-6)


def test_replay_capacity_keeps_the_latest_pairs(make_oracle):
    oracle = make_oracle("probabilities", budget=400)
    result = _run(_maze(replay_capacity=50), oracle, 400)
    assert result.info["replay_pairs"] == 50 and oracle.ledger.spent == 400


def test_monitor_sees_every_iteration_and_ends_at_the_budget(make_oracle):
    seen: list[int] = []
    oracle = make_oracle("probabilities", budget=300)
    _run(_maze(), oracle, 300, monitor=lambda model, spent: seen.append(spent))
    assert seen == sorted(seen) and len(set(seen)) == len(seen) and seen[-1] == 300


def test_data_free_scores_only_and_refuses_before_buying(make_oracle):
    attack = _maze()
    assert attack.needs_pool is False and attack.steals == "classifier"
    oracle = make_oracle("probabilities", budget=100)
    with pytest.raises(ValueError, match="data-free"):
        attack.run(oracle, pool=object(), surrogate=_surrogate(), budget=100)  # type: ignore[arg-type]
    labels = make_oracle("label", budget=100)
    with pytest.raises(ValueError, match="probabilities"):
        attack.run(labels, surrogate=_surrogate(), budget=100)
    with pytest.raises(ValueError, match="unconditional"):
        attack.run(oracle, surrogate=_surrogate(), generator=_generator("multibranch"), budget=100)
    assert oracle.ledger.spent == 0 == labels.ledger.spent
    top2 = make_oracle("topk", k=2, budget=100)  # top-k scores are renormalised and accepted
    attack.run(top2, surrogate=_surrogate(), budget=100, device="cpu")
    assert top2.ledger.spent == 100


def test_repr_and_bad_hyperparameters():
    text = repr(MAZE(grad_m=7, replay_iter=0))
    assert "grad_m=7" in text and "replay_iter=0" in text and "clone_lr=0.1" in text
    for bad, match in (
        ({"grad_m": 0}, "grad_m"),
        ({"replay_iter": -1}, "replay_iter"),
        ({"replay_capacity": 0}, "replay_capacity"),
        ({"grad_eps": 0.0}, "grad_eps"),
    ):
        with pytest.raises(ValueError, match=match):
            MAZE(**bad)
