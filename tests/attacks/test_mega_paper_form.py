"""MEGA as the paper states it: Eq. 2's log loss, no balance term, a choice of generator tail, and
the data-free checkpoint choice on freshly bought labels (ours, off by default)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from stealkit.attacks import MEGA
from stealkit.attacks import mega as mega_module
from stealkit.attacks.checkpoint_selection import FreshSelection, fresh_agreement
from stealkit.attacks.mega import confidence_loss, log_confidence_loss
from stealkit.models import build_model
from stealkit.models.generators import build_generator

NZ = 8
PARAMS = dict(query_batch=32, nz=NZ, gen_steps=2, max_epochs=3, sub_batch=16, sub_lr=3e-3)


def _surrogate(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", in_channels=1, num_classes=4, image_size=8)


def _generator():
    return build_generator("dcgan", NZ, 1, 8, ngf=8, seed=0)


# --- Eq. 2 --------------------------------------------------------------------------------------
def test_the_generator_loss_is_minus_the_mean_log_top_class_probability():
    logits = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 3.0], [-50.0, 0.0, -50.0]])
    top = [
        2 - math.log(math.exp(2) + 2),  # log S_k, k = 0
        3 - math.log(1 + math.e + math.exp(3)),  # k = 2
        -math.log(1 + 2 * math.exp(-50)),  # k = 1, S_k = 1 - 2e-22: log is tiny, not -inf
    ]
    assert float(log_confidence_loss(logits)) == pytest.approx(-sum(top) / 3, abs=1e-6)
    assert float(confidence_loss(logits)) == pytest.approx(
        -sum(math.exp(t) for t in top) / 3, abs=1e-6
    )
    # a row far from confident: the log form is finite where the probability is ~e^-100 / C
    flat = torch.full((1, 4), -100.0)
    assert float(log_confidence_loss(flat)) == pytest.approx(math.log(4), abs=1e-5)


def test_the_old_confidence_form_has_s_k_times_the_gradient_of_eq_2():
    logits = torch.tensor([[1.0, -0.5, 0.3, 0.0]], requires_grad=True)
    (g_log,) = torch.autograd.grad(log_confidence_loss(logits), logits)
    (g_conf,) = torch.autograd.grad(confidence_loss(logits), logits)
    s_k = float(F.softmax(logits.detach(), 1).max())
    assert torch.allclose(g_conf, s_k * g_log, atol=1e-6)


@pytest.mark.parametrize("gen_loss", ["log", "confidence"])
def test_the_generator_step_uses_the_chosen_loss(gen_loss):
    attack = MEGA(**(PARAMS | dict(gen_loss=gen_loss, gen_steps=1)))
    g, s = _generator(), _surrogate()
    z = torch.randn(32, NZ, generator=torch.Generator().manual_seed(0))
    fn = mega_module.GENERATOR_LOSSES[gen_loss]
    s.train()
    with torch.no_grad():
        expected = float(fn(s(g.train()(z))))
    opt = torch.optim.Adam(g.parameters(), lr=1e-2)
    (first,) = attack.generator_step(g, s, z, opt)
    assert first == pytest.approx(expected, rel=1e-5)


def test_defaults_are_the_papers_and_are_in_the_repr():
    attack = MEGA()
    assert (attack.gen_loss, attack.balance_weight, attack.select) == ("log", 0.0, "last")
    assert attack.tail == "bn-tanh"  # the paper does not describe its generator: ours unchanged
    text = repr(attack)
    for part in ("gen_loss='log'", "tail='bn-tanh'", "select='last'", "select_window=3"):
        assert part in text
    for bad, match in (
        (dict(gen_loss="entropy"), "gen_loss must be one of"),
        (dict(tail="relu"), "tail must be one of"),
        (dict(select="best"), "select must be one of"),
        (dict(select_window=0), "select_window must be a whole number"),
        (dict(select_window=True), "select_window must be a whole number"),
    ):
        with pytest.raises(ValueError, match=match):
            MEGA(**bad)


@pytest.mark.parametrize("tail", ["sigmoid", "bn-tanh"])
def test_the_default_generator_gets_the_attacks_tail(tail, make_oracle, monkeypatch):
    built = []
    real = mega_module.default_generator

    def recording(*args, **kw):
        built.append(real(*args, **kw))
        return built[-1]

    monkeypatch.setattr(mega_module, "default_generator", recording)
    oracle = make_oracle("label", budget=64)
    MEGA(**PARAMS, tail=tail).run(oracle, surrogate=_surrogate(), budget=64, device="cpu")
    assert [g.tail for g in built] == [tail]
    assert isinstance(built[0].block2[4], torch.nn.BatchNorm2d) == (tail == "bn-tanh")
    assert oracle.ledger.spent == 64


# --- select="fresh" -----------------------------------------------------------------------------
def _recorded_run(make_oracle, budget: int, **kw):
    """A run that records what each round bought and the stolen weights after each round."""
    states: list[dict[str, torch.Tensor]] = []
    bought: list[tuple[torch.Tensor, torch.Tensor]] = []

    class Recording(MEGA):
        def substitute_step(self, substitute, x, targets, optimizer, *, seed, device):
            out = super().substitute_step(
                substitute, x, targets, optimizer, seed=seed, device=device
            )
            states.append({k: v.clone() for k, v in substitute.state_dict().items()})
            return out

    oracle = make_oracle("label", budget=budget)
    query = oracle.query

    def spy(x):
        r = query(x)
        bought.append((x.clone(), r.labels().clone()))
        return r

    oracle.query = spy  # type: ignore[method-assign]
    result = Recording(**(PARAMS | kw)).run(
        oracle, surrogate=_surrogate(), generator=_generator(), budget=budget, device="cpu"
    )
    assert oracle.ledger.spent == budget == result.queries
    return result, states, bought


def _agreement(state, x, labels) -> float:
    model = _surrogate()
    model.load_state_dict(state)
    with torch.no_grad():
        return fresh_agreement(model.eval()(x), labels)


def test_fresh_agreement_is_scored_before_the_round_trains(make_oracle):
    result, states, bought = _recorded_run(make_oracle, 32 * 5 + 7)
    fresh = result.info["fresh_agreement"]
    assert len(fresh) == len(states) == len(bought) == 6
    for t in range(1, 6):  # round t's labels against the weights after round t - 1
        assert fresh[t] == pytest.approx(_agreement(states[t - 1], *bought[t]), abs=1e-5)
    assert [r["fresh_agreement"] for r in result.history] == pytest.approx(fresh, abs=1e-5)
    # select="last" (the paper) returns the last round's weights
    last = result.surrogate.state_dict()
    assert all(torch.equal(last[k], states[-1][k]) for k in last)
    assert "selected_round" not in result.info


@pytest.mark.parametrize("window", [1, 2])
def test_select_fresh_returns_the_checkpoint_a_brute_force_scoring_picks(window, make_oracle):
    budget = 32 * 8
    result, states, bought = _recorded_run(
        make_oracle, budget, select="fresh", select_window=window
    )
    rounds = len(states)
    scores = [
        sum(_agreement(states[r], *bought[t]) for t in range(r + 1, r + 1 + window)) / window
        for r in range(rounds - window)
    ]
    best = max(range(len(scores)), key=lambda r: (scores[r], -r))  # the earliest of the best
    info = result.info
    assert info["selected_round"] == best + 1
    assert info["selected_queries"] == 32 * (best + 1)
    assert info["selected_fresh_agreement"] == pytest.approx(scores[best], abs=1e-4)
    got = result.surrogate.state_dict()
    assert all(torch.equal(got[k], states[best][k]) for k in got)


def test_select_fresh_is_deterministic_and_falls_back_to_the_last_weights(make_oracle):
    runs = [_recorded_run(make_oracle, 32 * 6, select="fresh")[0] for _ in range(2)]
    a, b = (r.surrogate.state_dict() for r in runs)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert runs[0].info == runs[1].info
    # two rounds, a window of three: no checkpoint is fully scored, the last weights are kept
    result, states, _ = _recorded_run(make_oracle, 64, select="fresh", select_window=3)
    assert result.info["selected_round"] is None
    got = result.surrogate.state_dict()
    assert all(torch.equal(got[k], states[-1][k]) for k in got)


def test_fresh_selection_keeps_the_earliest_best_and_validates_its_window():
    model = torch.nn.Linear(2, 2, bias=False)
    chooser = FreshSelection(1)
    x = torch.eye(2)
    for r, w in enumerate([torch.eye(2), -torch.eye(2), torch.eye(2)], start=1):
        with torch.no_grad():
            model.weight.copy_(w)
        chooser.add(r, 10 * r, model)
        chooser.score(x, torch.tensor([0, 1]), torch.device("cpu"))
    assert chooser.best is not None
    assert (chooser.best.round, chooser.best.score) == (1, 1.0)  # round 3 ties, round 1 stays
    assert chooser.summary()["selected_queries"] == 10
    with pytest.raises(ValueError, match="window"):
        FreshSelection(0)
