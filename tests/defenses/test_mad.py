"""MAD: the last-layer Jacobian against autograd; the vertex choice against brute force; the
step size by hand; answers stay distributions within the budget; MAD-argmax keeps top-1; the
defence through an oracle is seeded, repeatable after reset and leaves the global RNG alone."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from stealkit.defenses import DefendedOracle
from stealkit.defenses.mad import (
    ARGMAX_MARGIN,
    Mad,
    angular_deviation,
    argmax_alpha_cap,
    jacobian_gram,
    last_layer_gram,
    last_layer_jacobian,
    mad_perturb,
    mad_perturb_gram,
    max_alpha,
    penultimate_and_logits,
    vertex_objectives,
)
from stealkit.models.registry import build_model, model_names
from stealkit.oracle import InputSpec, Ledger, LocalOracle
from toys import RowBands

P = {"l1": 1, "l2": 2}


def _case(n: int = 40, k: int = 5, d: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Posteriors from sharp to flat, with a few near-ties, and a generic Jacobian."""
    g = torch.Generator().manual_seed(seed)
    temp = torch.linspace(0.2, 4.0, n)[:, None]
    probs = (torch.randn(n, k, generator=g) * temp).softmax(dim=1)
    probs[0] = torch.tensor([0.3, 0.3 - 1e-7, 0.2, 0.1, 0.1 + 1e-7])[:k]
    G = torch.randn(n, k, d, generator=g)
    return probs, G


def test_last_layer_jacobian_equals_autograd() -> None:
    g = torch.Generator().manual_seed(1)
    layer = nn.Linear(4, 3)
    with torch.no_grad():
        layer.weight.copy_(torch.randn(3, 4, generator=g))
        layer.bias.copy_(torch.randn(3, generator=g))
    h = torch.randn(2, 4, generator=g)
    G = last_layer_jacobian(h, layer(h).softmax(dim=1).detach())
    for n in range(2):
        for k in range(3):
            layer.zero_grad()
            torch.log_softmax(layer(h[n : n + 1]), dim=1)[0, k].backward()
            ref = torch.cat([layer.weight.grad.flatten(), layer.bias.grad])  # type: ignore[union-attr]
            assert torch.allclose(G[n, k], ref, atol=1e-6)


def test_the_closed_form_gram_equals_g_g_transposed_and_gives_the_same_answers() -> None:
    g = torch.Generator().manual_seed(2)
    h = torch.randn(25, 6, generator=g, dtype=torch.float64)
    p_a = torch.randn(25, 4, generator=g, dtype=torch.float64).softmax(dim=1)
    G = last_layer_jacobian(h, p_a)
    assert torch.allclose(last_layer_gram(h, p_a), jacobian_gram(G), atol=1e-10)
    probs = (3 * torch.randn(25, 4, generator=g)).softmax(dim=1)
    for argmax in (False, True):
        fast = mad_perturb_gram(probs, last_layer_gram(h, p_a), epsilon=0.4, argmax=argmax)
        assert torch.allclose(fast, mad_perturb(probs, G, epsilon=0.4, argmax=argmax), atol=1e-6)


def test_vertex_objectives_and_the_chosen_vertex_match_brute_force() -> None:
    probs, G = _case()
    obj = vertex_objectives(jacobian_gram(G), probs)
    eye = torch.eye(5)
    for k in range(5):
        brute = angular_deviation(G, probs, eye[k].expand_as(probs))
        assert torch.allclose(obj[:, k], brute, atol=1e-5)
    y = mad_perturb(probs, G, epsilon=0.3, norm="l1")
    for n in range(len(probs)):
        scores = [
            float(angular_deviation(G[n : n + 1], probs[n : n + 1], eye[k][None])) for k in range(5)
        ]
        best = max(range(5), key=lambda k: scores[k])
        step = y[n] - probs[n]
        towards = eye[best] - probs[n]  # y~ moved along the segment to the best vertex
        cos = float(step @ towards) / (float(step.norm()) * float(towards.norm()) + 1e-12)
        assert cos > 1 - 1e-4 and scores[best] >= max(scores) - 1e-9


def test_mad_argmax_takes_the_best_top1_keeping_move_by_brute_force() -> None:
    probs, G = _case()
    y = mad_perturb(probs, G, epsilon=0.6, norm="l2", argmax=True)
    got = angular_deviation(G, probs, y)
    alphas = torch.linspace(0, 1, 401)[:, None]
    for n in range(len(probs)):
        for k in range(5):  # every move towards a vertex that keeps budget and top-1
            cand = (1 - alphas) * probs[n] + alphas * torch.eye(5)[k]
            ok = ((cand - probs[n]).norm(dim=1) <= 0.6) & (cand.argmax(dim=1) == probs[n].argmax())
            m = int(ok.sum())
            dev = angular_deviation(G[n].expand(m, -1, -1), probs[n].expand(m, -1), cand[ok])
            assert float(got[n]) >= float(dev.max()) - 1e-4


def test_step_and_cap_by_hand() -> None:
    y = torch.tensor([[0.5, 0.3, 0.2]])
    e1 = torch.tensor([[0.0, 1.0, 0.0]])
    assert float(max_alpha(y, e1, 0.7, "l1")) == pytest.approx(0.7 / 1.4)  # ||e1 - y||_1 = 1.4
    assert float(max_alpha(y, e1, 0.5, "l2")) == pytest.approx(0.5 / math.sqrt(0.78))
    assert float(max_alpha(y, e1, 5.0, "l1")) == 1.0  # a budget past the vertex stops at it
    cap = argmax_alpha_cap(y, torch.tensor([1]))
    assert float(cap) == pytest.approx((0.2 - ARGMAX_MARGIN) / 1.2)
    moved = (1 - cap) * y + cap * e1
    assert float(moved[0, 0] - moved[0, 1]) == pytest.approx(ARGMAX_MARGIN, abs=1e-7)
    assert float(argmax_alpha_cap(y, torch.tensor([0]))) == 1.0  # towards the top class: free


@pytest.mark.parametrize("norm", ["l1", "l2"])
@pytest.mark.parametrize("argmax", [False, True])
@pytest.mark.parametrize("epsilon", [0.05, 0.5, 1.0, 3.0])
def test_answers_are_distributions_within_the_budget(
    norm: str, argmax: bool, epsilon: float
) -> None:
    probs, G = _case()
    y = mad_perturb(probs, G, epsilon=epsilon, norm=norm, argmax=argmax)
    assert bool((y >= 0).all()) and torch.allclose(y.sum(dim=1), torch.ones(len(y)), atol=1e-6)
    change = (y - probs).norm(p=P[norm], dim=1)
    assert bool((change <= epsilon + 1e-6).all())
    if not argmax and epsilon == 0.05:  # small budget: every row spends all of it
        assert torch.allclose(change, torch.full_like(change, epsilon), atol=1e-5)
    if argmax:
        assert torch.equal(y.argmax(dim=1), probs.argmax(dim=1))


def test_without_argmax_a_large_budget_flips_top1() -> None:
    probs, G = _case()
    y = mad_perturb(probs, G, epsilon=2.0, norm="l1")
    assert (y.argmax(dim=1) != probs.argmax(dim=1)).float().mean() > 0.5


@pytest.mark.parametrize("argmax", [False, True])
def test_deviation_grows_from_zero_with_the_budget(argmax: bool) -> None:
    probs, G = _case()
    assert torch.equal(mad_perturb(probs, G, epsilon=0.0, argmax=argmax), probs)
    tiny = mad_perturb(probs, G, epsilon=1e-9, argmax=argmax)
    assert torch.allclose(tiny, probs, atol=1e-8)
    dev = angular_deviation(G, probs, mad_perturb(probs, G, epsilon=0.5, argmax=argmax))
    assert bool((dev > 0).all())


def test_through_an_oracle_seeded_repeatable_and_within_budget() -> None:
    spec = InputSpec(1, 8, 8)
    g = torch.Generator().manual_seed(3)
    x = torch.rand(30, 1, 8, 8, generator=g)
    clean = LocalOracle(RowBands(), spec).query(x).probs()
    mad = Mad(epsilon=0.5, norm="l1", argmax=True, surrogate_arch="cnn2-small", seed=7)
    oracle = DefendedOracle(LocalOracle(RowBands(), spec, ledger=Ledger()), mad)
    rng = torch.get_rng_state()
    first = oracle.query(x).probs()
    assert torch.equal(torch.get_rng_state(), rng)  # the surrogate's seed, not the global RNG
    assert oracle.ledger.spent == 30
    assert torch.allclose(first.sum(dim=1), torch.ones(30), atol=1e-6)
    assert bool(((first - clean).abs().sum(dim=1) <= 0.5 + 1e-6).all())
    assert (first - clean).abs().sum(dim=1).mean() > 0.1
    assert torch.equal(first.argmax(dim=1), clean.argmax(dim=1))
    mad.reset()
    assert torch.equal(oracle.query(x).probs(), first)
    other = DefendedOracle(
        LocalOracle(RowBands(), spec),
        Mad(epsilon=0.5, argmax=True, surrogate_arch="cnn2-small", seed=8),
    )
    assert not torch.equal(other.query(x).probs(), first)


@pytest.mark.parametrize("arch", model_names())
def test_the_last_linear_layer_gives_the_logits_of_every_registered_arch(arch: str) -> None:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = build_model(arch, in_channels=1, num_classes=3, image_size=12).eval()
    x = torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(0))
    h, z = penultimate_and_logits(net, x)
    head = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    assert z.shape == (2, 3) and torch.allclose(head(h), z, atol=1e-5)


def test_a_surrogate_whose_last_linear_is_not_its_output_is_refused() -> None:
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 4), nn.Tanh())
    with pytest.raises(ValueError, match="logits"):
        penultimate_and_logits(net, torch.rand(2, 1, 8, 8))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"epsilon": 0.0}, "epsilon"),
        ({"epsilon": float("nan")}, "epsilon"),
        ({"norm": "kl"}, "norm"),
        ({"surrogate_arch": "vgg99"}, "surrogate_arch"),
        ({"surrogate": nn.Sequential(nn.Flatten())}, "nn.Linear"),
    ],
)
def test_bad_settings_are_refused(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Mad(**kw)


def test_repr_lists_the_hyperparameters() -> None:
    text = repr(Mad(epsilon=1.0, norm="l2", argmax=True, surrogate_arch="lenet5", seed=3))
    assert text == "Mad(epsilon=1.0, norm='l2', argmax=True, surrogate_arch='lenet5', seed=3)"
