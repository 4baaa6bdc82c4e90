"""FGSM, BIM and PGD on the row-band toy model: inside the eps-ball, fooling it, transferring."""

from __future__ import annotations

import pytest
import torch

from stealkit.metrics import bim, fgsm, pgd, random_targets, transfer_success, transfer_table

EPS = 0.05


@pytest.fixture
def batch(toy_model):
    """64 seeded random images and the toy model's own labels (so its clean error is 0)."""
    x = torch.rand((64, 1, 8, 8), generator=torch.Generator().manual_seed(0))
    return x, toy_model(x).argmax(1)


def _seeded() -> torch.Generator:
    return torch.Generator().manual_seed(1)


ATTACKS = {
    "fgsm": lambda m, x, y, **kw: fgsm(m, x, y, EPS, **kw),
    "bim": lambda m, x, y, **kw: bim(m, x, y, EPS, 10, EPS / 4, **kw),
    "pgd": lambda m, x, y, **kw: pgd(m, x, y, EPS, 10, EPS / 4, generator=_seeded(), **kw),
}


@pytest.mark.parametrize("name", list(ATTACKS))
def test_stays_in_the_ball_and_range_and_fools_the_model(name, toy_model, batch):
    x, y = batch
    x_adv = ATTACKS[name](toy_model, x, y)
    assert float((x_adv - x).abs().max()) <= EPS + 1e-6
    assert float(x_adv.min()) >= 0.0 and float(x_adv.max()) <= 1.0
    clean_error = float((toy_model(x).argmax(1) != y).float().mean())
    fooled = float((toy_model(x_adv).argmax(1) != y).float().mean())
    assert clean_error == 0.0 and fooled > 0.6


def test_targeted_pgd_hits_the_target_more_often_than_chance(toy_model, batch):
    x, y = batch
    target = (y + 1) % 4
    x_adv = pgd(toy_model, x, target, EPS, 20, EPS / 5, targeted=True, generator=_seeded())
    assert float((x_adv - x).abs().max()) <= EPS + 1e-6
    hit = float((toy_model(x_adv).argmax(1) == target).float().mean())
    assert hit > 0.5  # chance is 1/4


def test_transfer_success_is_measured_through_the_oracle(toy_model, batch, make_oracle):
    x, y = batch
    oracle = make_oracle("label")  # the same decision rule as toy_model, answering labels only
    x_adv = pgd(toy_model, x, y, EPS, 10, EPS / 4, generator=_seeded())
    rate = transfer_success(lambda b: oracle.query(b).labels(), x_adv, y, targeted=False)
    assert rate > 0.6
    assert oracle.ledger.spent == len(x)
    target = (y + 1) % 4
    x_adv = pgd(toy_model, x, target, EPS, 20, EPS / 5, targeted=True, generator=_seeded())
    hits = transfer_success(
        lambda b: oracle.query(b).labels(), x_adv, y, targeted=True, target=target
    )
    assert hits > 0.5


def test_transfer_success_by_hand():
    y = torch.tensor([0, 1, 2, 3])
    answers = torch.tensor([0, 2, 2, 0])
    victim = lambda x: answers  # noqa: E731
    x = torch.zeros(4, 1, 8, 8)
    assert transfer_success(victim, x, y, targeted=False) == 0.5
    assert transfer_success(victim, x, y, targeted=True, target=torch.tensor([1, 2, 0, 0])) == 0.5
    with pytest.raises(ValueError, match="target"):
        transfer_success(victim, x, y, targeted=True)
    with pytest.raises(ValueError, match="labels"):
        transfer_success(victim, x, y[:3], targeted=False)


def test_model_mode_and_parameter_gradients_are_left_alone():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4)).train()
    x = torch.rand(8, 1, 8, 8)
    y = torch.randint(0, 4, (8,))
    for attack in ATTACKS.values():
        attack(model, x, y)
    assert model.training
    assert all(p.grad is None for p in model.parameters())


def test_pgd_start_is_seeded_and_eps_zero_changes_nothing(toy_model, batch):
    x, y = batch
    a = pgd(toy_model, x, y, EPS, 1, 1e-4, generator=_seeded())
    b = pgd(toy_model, x, y, EPS, 1, 1e-4, generator=_seeded())
    assert torch.equal(a, b)
    assert not torch.equal(a, bim(toy_model, x, y, EPS, 1, 1e-4))
    assert torch.equal(fgsm(toy_model, x, y, 0.0), x)
    with pytest.raises(ValueError, match="steps"):
        pgd(toy_model, x, y, EPS, 0, 0.01)


def test_random_targets_are_never_the_true_label():
    y = torch.arange(10).repeat(50)
    t = random_targets(y, 10, torch.Generator().manual_seed(0))
    assert not bool((t == y).any())
    assert set(t.tolist()) == set(range(10))  # every class is used as a target
    with pytest.raises(ValueError, match="two classes"):
        random_targets(torch.zeros(3, dtype=torch.long), 1, torch.Generator())


def test_transfer_table_from_the_victim_itself_matches_white_box(toy_model, batch):
    x, y = batch
    rows = transfer_table(
        toy_model,
        lambda xa: toy_model(xa).argmax(1),
        x,
        y,
        num_classes=4,
        eps=EPS,
        steps=10,
        step_size=EPS / 4,
    )
    assert [(r["method"], r["targeted"]) for r in rows] == [
        (m, t) for t in (False, True) for m in ("fgsm", "bim", "pgd")
    ]
    for r in rows:  # crafted on the victim itself, transfer is exactly white-box success
        assert r["success"] == r["white_box_success"]
        assert r["n"] == len(y)
    assert rows[2]["success"] > 0.5  # untargeted PGD fools the undefended toy model


def test_transfer_table_refuses_unknown_methods(toy_model, batch):
    x, y = batch
    with pytest.raises(ValueError, match="unknown transfer attack"):
        transfer_table(
            toy_model,
            lambda xa: y,
            x,
            y,
            num_classes=4,
            methods=["cw"],
            eps=0.1,
            steps=1,
            step_size=0.1,
        )
