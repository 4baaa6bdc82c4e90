"""MEGA, DaST and DFME on the 1x8x8 row-band toy victim: no data, exactly the budget, the maths."""

from __future__ import annotations

import inspect
import math

import pytest
import torch
import torch.nn.functional as F

from stealkit.attacks import DFME, MEGA, DaST, build_attack
from stealkit.attacks.dast import balanced_labels, dast_distance, imitation_loss
from stealkit.attacks.dfme import (
    disagreement,
    forward_difference_gradient,
    logits_from_probs,
    random_directions,
    round_plan,
)
from stealkit.attacks.mega import class_balance_loss, confidence, substitute_loss
from stealkit.errors import BudgetExceeded
from stealkit.metrics import ConvergenceCurve, agreement
from stealkit.models import build_model
from stealkit.models.generators import build_generator

NZ = 8


def _surrogate(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", in_channels=1, num_classes=4, image_size=8)


def _generator(kind: str = "dcgan"):
    return build_generator(kind, NZ, 1, 8, num_classes=4, ngf=8, seed=0)


def _mega(**kw) -> MEGA:
    params = dict(query_batch=64, nz=NZ, gen_steps=2, max_epochs=10, sub_batch=32, sub_lr=3e-3)
    return MEGA(**(params | kw))


def _dast(**kw) -> DaST:
    return DaST(**(dict(query_batch=64, nz=NZ, lr=1e-3, sub_steps=5) | kw))


def _dfme(**kw) -> DFME:
    params = dict(query_batch=32, nz=NZ, student_lr=0.1, generator_lr=1e-3, lr_milestones=(0.5,))
    return DFME(**(params | kw))


ATTACKS = [
    (lambda: _mega(), "label", "dcgan"),
    (
        lambda: _mega(variant="probability", replay=100, balance_weight=1.0),
        "probabilities",
        "dcgan",
    ),
    (lambda: _mega(replay_sample=50), "label", "dcgan"),
    (lambda: _mega(z_refresh=0.5, average=0.9), "label", "dcgan"),
    (lambda: _dast(), "label", "multibranch"),
    (lambda: _dast(variant="probability"), "probabilities", "multibranch"),
    (lambda: _dfme(grad_m=2), "probabilities", "dcgan"),
]
IDS = [
    "mega",
    "mega-probability",
    "mega-replay-sample",
    "mega-z-refresh-average",
    "dast-l",
    "dast-p",
    "dfme",
]


@pytest.mark.parametrize(("make", "output", "kind"), ATTACKS, ids=IDS)
def test_spends_exactly_the_budget_and_never_more(make, output, kind, make_oracle):
    budget = 333  # not a multiple of any batch or round cost: the last one must be trimmed
    oracle = make_oracle(output, budget=budget)  # raises if the attack ever crosses it
    result = make().run(
        oracle, surrogate=_surrogate(), generator=_generator(kind), budget=budget, device="cpu"
    )
    assert oracle.ledger.spent == budget == result.queries
    assert oracle.ledger.refused_calls == 0
    with pytest.raises(BudgetExceeded):
        oracle.query(torch.rand(1, 1, 8, 8))


@pytest.mark.parametrize(
    ("make", "budget", "output", "kind", "floor"),
    [
        (lambda: _mega(), 1000, "label", "dcgan", 0.4),
        (lambda: _dast(), 1000, "label", "multibranch", 0.5),
        (lambda: _dfme(), 4000, "probabilities", "dcgan", 0.5),
    ],
    ids=["mega", "dast-l", "dfme"],
)
def test_beats_chance_without_data(make, budget, output, kind, floor, make_oracle, toy_model):
    oracle = make_oracle(output, budget=budget)
    result = make().run(
        oracle, surrogate=_surrogate(), generator=_generator(kind), budget=budget, device="cpu"
    )
    x = torch.rand((500, 1, 8, 8), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        victim, stolen = toy_model(x).argmax(1), result.surrogate.cpu()(x).argmax(1)
    assert torch.bincount(victim).max() / len(x) < 0.3  # a constant guess agrees < 30%
    assert agreement(stolen, victim) > floor


def test_default_generators_are_built_from_the_oracle_spec(make_oracle):
    for attack, output in ((_mega(), "label"), (_dast(), "label"), (_dfme(), "probabilities")):
        oracle = make_oracle(output, budget=200)
        attack.run(oracle, surrogate=_surrogate(), budget=200, seed=3, device="cpu")
        assert oracle.ledger.spent == 200


@pytest.mark.parametrize("cls", [MEGA, DaST, DFME])
def test_run_takes_no_data(cls, make_oracle):
    params = inspect.signature(cls.run).parameters
    assert not {"data", "dataset", "x", "images"} & set(params)
    for name in ("pool", "surrogate", "generator", "budget", "seed", "device", "monitor"):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY
    assert params["generator"].default is None and params["pool"].default is None
    assert cls.needs_pool is False
    # the one run signature takes a pool, but a data-free attack refuses one instead of ignoring it
    oracle = make_oracle("probabilities", budget=100)
    with pytest.raises(ValueError, match="data-free"):
        cls().run(oracle, pool=object(), surrogate=_surrogate(), budget=100)
    assert oracle.ledger.spent == 0


# --- MEGA ---------------------------------------------------------------------------------------
def test_one_mega_round_lowers_the_substitute_loss_then_raises_its_confidence(make_oracle):
    attack = _mega(gen_steps=3)
    oracle = make_oracle("label", budget=64)
    generator, substitute = _generator(), _surrogate()
    z = torch.randn((64, NZ), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x = generator(z)
    labels = oracle.query(x).labels()
    assert oracle.ledger.spent == 64

    def loss() -> float:
        with torch.no_grad():
            return float(substitute_loss(substitute(x), labels))

    before = loss()
    opt_s = torch.optim.Adam(substitute.parameters(), lr=3e-3)
    passes = attack.substitute_step(
        substitute, x, labels, opt_s, seed=0, device=torch.device("cpu")
    )
    assert 1 <= len(passes) <= attack.max_epochs
    assert loss() < before

    def conf() -> float:
        with torch.no_grad():
            return float(confidence(substitute(generator(z))).mean())

    before = conf()
    opt_g = torch.optim.Adam(generator.parameters(), lr=1e-2)
    attack.generator_step(generator, substitute, z, opt_g)
    assert conf() > before
    assert all(p.requires_grad for p in substitute.parameters())  # unfrozen again
    assert oracle.ledger.spent == 64  # neither step queries the victim


def test_mega_substitute_step_stops_after_patience_passes_without_progress():
    attack = _mega(max_epochs=50, patience=2, min_delta=100.0)  # nothing counts as progress
    x, y = torch.rand(32, 1, 8, 8), torch.randint(0, 4, (32,))
    s = _surrogate()
    opt = torch.optim.Adam(s.parameters())
    assert len(attack.substitute_step(s, x, y, opt, seed=0, device=torch.device("cpu"))) == 3


def test_mega_losses():
    sure = torch.tensor([[20.0, 0.0, 0.0], [0.0, 20.0, 0.0]])
    assert torch.allclose(confidence(sure), torch.ones(2), atol=1e-6)
    assert torch.allclose(confidence(torch.zeros(2, 3)), torch.full((2,), 1 / 3))
    # balanced batch-mean prediction: -log C; one class for everything: about 0
    assert float(class_balance_loss(torch.eye(3) * 20)) == pytest.approx(-math.log(3), abs=1e-5)
    assert float(class_balance_loss(sure[:1].repeat(4, 1))) == pytest.approx(0.0, abs=1e-5)
    p = torch.tensor([[0.7, 0.2, 0.1]])
    assert float(substitute_loss(torch.log(p), p)) == pytest.approx(
        float(-(p * p.log()).sum()), abs=1e-6
    )


# --- DaST ---------------------------------------------------------------------------------------
def test_dast_losses_and_labels():
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(0))
    p = F.softmax(torch.randn(6, 4, generator=torch.Generator().manual_seed(1)), dim=1)
    ce = F.cross_entropy(logits, p.argmax(1))
    assert torch.allclose(dast_distance(logits, p), ce)  # DaST-L: the label only
    assert dast_distance(logits, p, beta=0.1) > ce  # DaST-P adds the log-probability MSE
    assert 0 < float(imitation_loss(logits, p)) <= 1
    counts = torch.bincount(balanced_labels(10, 4, torch.Generator().manual_seed(0)), minlength=4)
    assert counts.sum() == 10 and counts.max() - counts.min() <= 1


# --- DFME ---------------------------------------------------------------------------------------
def test_dfme_ledger_counts_every_gradient_estimation_query(make_oracle):
    attack = _dfme(query_batch=16, grad_m=2, g_iter=2, d_iter=3)  # 2 * (2 + 1) + 3 = 9 per image
    assert attack.queries_per_image == 9
    budget = 1000
    oracle = make_oracle("probabilities", budget=budget)
    result = attack.run(oracle, surrogate=_surrogate(), generator=_generator(), budget=budget)
    full, rest = divmod(budget, 16 * 9)  # 6 full rounds of 144, then 136 = 15 * 9 + 1
    assert (full, rest // 9, rest % 9) == (6, 15, 1)
    assert oracle.ledger.spent == budget == result.queries
    assert oracle.ledger.calls == (full + 1) * (2 + 3) + 1  # every step is one oracle call

    # one gradient estimate alone: n (m + 1) queries in one call
    oracle = make_oracle("probabilities")
    g = _generator()
    pre = g.pre_activation(torch.randn(5, NZ))
    grad, _ = attack.estimate_gradient(oracle, _surrogate(), g, pre, torch.Generator())
    assert grad.shape == pre.shape
    assert (oracle.ledger.spent, oracle.ledger.calls) == (5 * 3, 1)


@pytest.mark.parametrize("per_image", [1, 7, 9])
def test_round_plan_spends_exactly_the_budget(per_image):
    for budget in range(1, 400):
        rounds, leftover = round_plan(budget, 16, per_image)
        assert sum(n * per_image for n in rounds) + leftover == budget
        assert all(1 <= n <= 16 for n in rounds) and 0 <= leftover < per_image


def test_label_only_oracles_are_refused_before_any_query(make_oracle):
    for attack, match in (
        (_dfme(), "labels only"),
        (_dast(variant="probability"), "labels only"),
        (_mega(variant="probability"), "gives labels"),
    ):
        oracle = make_oracle("label", budget=100)
        with pytest.raises(ValueError, match=match):
            attack.run(oracle, surrogate=_surrogate(), budget=100)
        assert oracle.ledger.spent == 0
    with pytest.raises(ValueError, match="label-controllable"):
        _dast().run(make_oracle("label"), surrogate=_surrogate(), generator=_generator(), budget=10)
    with pytest.raises(ValueError, match="Generator"):
        _dfme().run(
            make_oracle("probabilities"),
            surrogate=_surrogate(),
            generator=torch.nn.Sequential(
                torch.nn.Linear(NZ, 64), torch.nn.Unflatten(1, (1, 8, 8))
            ),
            budget=10,
        )


def test_logits_are_recovered_from_probabilities_up_to_their_mean():
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(0))
    centred = logits - logits.mean(1, keepdim=True)
    assert torch.allclose(logits_from_probs(F.softmax(logits, 1)), centred, atol=1e-5)
    assert torch.allclose(disagreement(logits, logits + 1.0), torch.ones(5))


def test_forward_differences_recover_the_gradient_of_a_linear_function():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(1, 1, 8, 8, generator=gen)
    t = torch.rand(1, 1, 8, 8, generator=gen)
    m, eps = 4000, 1e-3
    u = random_directions(1, m, (1, 8, 8), gen)
    assert torch.allclose(u.flatten(2).norm(dim=2), torch.ones(1, m), atol=1e-5)
    points = torch.cat([t.unsqueeze(1) + eps * u, t.unsqueeze(1)], dim=1)  # (1, m + 1, 1, 8, 8)
    values = (points * a.unsqueeze(1)).flatten(2).sum(2)  # f(t) = <a, t>
    est = forward_difference_gradient(values, u, eps)
    assert F.cosine_similarity(est.flatten(), a.flatten(), dim=0) > 0.95
    assert float(est.norm() / a.norm()) == pytest.approx(1.0, abs=0.2)


# --- generators, registry, repr -----------------------------------------------------------------
@pytest.mark.parametrize("kind", ["dcgan", "conditional", "multibranch"])
@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32), (1, 12)])
def test_generators_make_seeded_images_in_the_unit_range(kind, channels, size):
    g = build_generator(kind, 16, channels, size, num_classes=10, ngf=8, seed=1)
    twin = build_generator(kind, 16, channels, size, num_classes=10, ngf=8, seed=1)
    assert all(torch.equal(p, q) for p, q in zip(g.parameters(), twin.parameters(), strict=True))
    with torch.no_grad():
        x = g(torch.randn(3, 16), torch.tensor([0, 9, 9]))
    assert x.shape == (3, channels, size, size)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0


def test_generator_errors():
    with pytest.raises(ValueError, match="multiple of 4"):
        build_generator("dcgan", 8, 1, 30)
    with pytest.raises(ValueError, match="num_classes"):
        build_generator("multibranch", 8, 1, 28)
    with pytest.raises(ValueError, match="kind"):
        build_generator("vae", 8, 1, 28)
    with pytest.raises(ValueError, match="label"):
        build_generator("multibranch", 8, 1, 8, num_classes=4)(torch.randn(2, 8))


def test_registry_repr_and_bad_hyperparameters():
    assert "variant='probability'" in repr(build_attack("dast", variant="probability"))
    assert "grad_m=3" in repr(build_attack("dfme", grad_m=3))
    assert "patience=2" in repr(build_attack("mega", patience=2))
    with pytest.raises(ValueError, match="variant"):
        MEGA(variant="logits")
    with pytest.raises(ValueError, match="variant"):
        DaST(variant="soft")
    with pytest.raises(ValueError, match="grad_m"):
        DFME(grad_m=0)


# --- the monitor hook (convergence curves) ------------------------------------------------------
@pytest.mark.parametrize(("make", "output", "kind"), ATTACKS, ids=IDS)
def test_monitor_sees_every_round_and_ends_at_the_budget(make, output, kind, make_oracle):
    seen: list[int] = []
    oracle = make_oracle(output, budget=300)
    make().run(
        oracle,
        surrogate=_surrogate(),
        generator=_generator(kind),
        budget=300,
        device="cpu",
        monitor=lambda model, spent: seen.append(spent),
    )
    assert seen == sorted(seen) and len(set(seen)) == len(seen)
    assert seen[-1] == 300 == oracle.ledger.spent


def test_a_convergence_curve_records_without_changing_the_attack(make_oracle, toy_model):
    x = torch.rand((200, 1, 8, 8), generator=torch.Generator().manual_seed(7))
    victim = toy_model(x).argmax(1)
    curve = ConvergenceCurve(x, victim, victim, at=[100, 200, 250])
    runs = []
    for monitor in (None, curve):
        oracle = make_oracle("label", budget=320)
        result = _mega(query_batch=64).run(
            oracle, surrogate=_surrogate(), generator=_generator(), budget=320, monitor=monitor
        )
        runs.append(result.surrogate.state_dict())
    for key in runs[0]:  # evaluating along the way leaves the trained weights bit for bit alike
        assert torch.equal(runs[0][key], runs[1][key]), key
    # rounds end at 64, 128, ..., 320: the first round at or past each checkpoint is recorded once
    assert [p["queries"] for p in curve.points] == [128.0, 256.0]
    assert all(
        0.0 <= p["agreement"] <= 1.0 and p["accuracy"] == p["agreement"] for p in curve.points
    )


def test_a_convergence_curve_needs_positive_checkpoints():
    x = torch.rand((4, 1, 8, 8))
    with pytest.raises(ValueError, match="positive query counts"):
        ConvergenceCurve(x, None, torch.zeros(4, dtype=torch.long), at=[])
    with pytest.raises(ValueError, match="positive query counts"):
        ConvergenceCurve(x, None, torch.zeros(4, dtype=torch.long), at=[0, 10])


def test_attacks_declare_what_they_steal_need_and_accept():
    from stealkit.attacks import build_attack
    from stealkit.oracle import OutputKind

    assert all(not build_attack(t).needs_pool for t in ("mega", "dast", "dfme"))
    assert all(build_attack(t).needs_pool for t in ("knockoff", "copycat", "contsteal"))
    assert {build_attack(t).steals for t in ("encoder", "contsteal", "stolenencoder")} == {
        "encoder"
    }
    assert OutputKind.LABEL in build_attack("mega").accepts
    for t, params in (("mega", {"variant": "probability"}), ("dast", {"variant": "probability"})):
        assert OutputKind.LABEL not in build_attack(t, **params).accepts
    assert OutputKind.LABEL not in build_attack("dfme").accepts
    assert build_attack("encoder").accepts == {OutputKind.EMBEDDING}


def test_mega_replay_keeps_the_most_recent_pairs():
    from stealkit.attacks.mega import _keep_recent

    chunks = [torch.arange(0, 4), torch.arange(4, 8), torch.arange(8, 10)]
    assert torch.cat(_keep_recent(chunks, 5)).tolist() == [5, 6, 7, 8, 9]
    assert torch.cat(_keep_recent(chunks, 100)).tolist() == list(range(10))
    with pytest.raises(ValueError, match="replay"):
        MEGA(replay=True)


def test_mega_replay_sample_trains_on_this_round_and_pairs_bought_earlier(make_oracle):
    seen: list[torch.Tensor] = []

    class Recording(MEGA):
        def substitute_step(self, substitute, x, targets, optimizer, *, seed, device):
            seen.append(x.clone())
            return super().substitute_step(
                substitute, x, targets, optimizer, seed=seed, device=device
            )

    oracle = make_oracle("label", budget=200)
    bought: list[torch.Tensor] = []
    query = oracle.query
    oracle.query = lambda x: bought.append(x.clone()) or query(x)  # type: ignore[method-assign]
    params = dict(query_batch=64, nz=NZ, gen_steps=2, max_epochs=2, sub_batch=32)
    Recording(**params, replay_sample=100).run(
        oracle, surrogate=_surrogate(), generator=_generator(), budget=200, device="cpu"
    )
    # rounds buy 64, 64, 64, 8; each step sees its round plus min(100, earlier) replayed pairs
    assert [len(x) for x in seen] == [64, 64 + 64, 64 + 100, 8 + 100]
    for k, x in enumerate(seen):
        assert torch.equal(x[: len(bought[k])], bought[k])
        earlier = torch.cat(bought[:k]) if k else torch.empty(0, *x.shape[1:])
        for row in x[len(bought[k]) :]:  # every replayed row was bought in an earlier round
            assert (earlier == row).flatten(1).all(1).any()
    with pytest.raises(ValueError, match="not both"):
        MEGA(replay=10, replay_sample=10)
    for bad in (-1, 2000.0, True):
        with pytest.raises(ValueError, match="replay_sample must be a whole number"):
            MEGA(replay_sample=bad)


@pytest.mark.parametrize(("fraction", "fresh"), [(0.0, 0), (0.25, 16), (1.0, 64)])
def test_mega_z_refresh_redraws_that_fraction_of_the_noise_set_each_round(
    fraction, fresh, make_oracle
):
    zs: list[torch.Tensor] = []

    class Recording(MEGA):
        def generator_step(self, generator, substitute, z, optimizer):
            zs.append(z.clone())
            return super().generator_step(generator, substitute, z, optimizer)

    oracle = make_oracle("label", budget=256)
    params = dict(query_batch=64, nz=NZ, gen_steps=1, max_epochs=2, sub_batch=32)
    Recording(**params, z_refresh=fraction).run(
        oracle, surrogate=_surrogate(), generator=_generator(), budget=256, device="cpu"
    )
    assert len(zs) == 3  # four rounds; no generator step after the last purchase
    for before, after in zip(zs, zs[1:], strict=False):
        changed = (before != after).any(dim=1)
        assert int(changed.sum()) == fresh  # a redrawn N(0, 1) seed never equals the old one
    for bad in (-0.1, 1.5, True, "half"):
        with pytest.raises(ValueError, match="z_refresh is the fraction of Z"):
            MEGA(z_refresh=bad)


def test_mega_average_returns_the_moving_average_of_the_substitute_weights(make_oracle):
    from stealkit.attacks.mega import weight_average

    rounds: list[dict[str, torch.Tensor]] = []

    class Recording(MEGA):
        def substitute_step(self, substitute, x, targets, optimizer, *, seed, device):
            out = super().substitute_step(
                substitute, x, targets, optimizer, seed=seed, device=device
            )
            rounds.append({k: v.clone() for k, v in substitute.state_dict().items()})
            return out

    oracle = make_oracle("label", budget=192)
    params = dict(query_batch=64, nz=NZ, gen_steps=1, max_epochs=2, sub_batch=32)
    result = Recording(**params, average=0.5).run(
        oracle, surrogate=_surrogate(), generator=_generator(), budget=192, device="cpu"
    )
    assert len(rounds) == 3
    for name, value in result.surrogate.state_dict().items():
        expected = 0.25 * rounds[0][name] + 0.25 * rounds[1][name] + 0.5 * rounds[2][name]
        assert torch.allclose(value, expected, atol=1e-6), name
        assert not torch.allclose(value, rounds[2][name])  # not the last round's weights
    first = _surrogate()
    assert torch.equal(
        weight_average(None, first, 0.9)(torch.ones(1, 1, 8, 8)), first(torch.ones(1, 1, 8, 8))
    )
    for bad in (-0.1, 1.0, True, "0.9"):
        with pytest.raises(ValueError, match="average is the decay"):
            MEGA(average=bad)
