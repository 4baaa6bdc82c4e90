"""Fine-tuning and super-fine-tuning (Sha et al.): the learning-rate schedule matches its formula,
``fit`` follows a schedule function, and both methods make a tiny watermarked model forget
much of its trigger set while keeping its clean accuracy."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stealkit.data import load_dataset
from stealkit.metrics.watermark import trigger_accuracy
from stealkit.train import fit, predict
from stealkit.train.removal import fine_tune, super_fine_tune, super_fine_tuning_lr
from stealkit.victims import Victim, train_victim
from stealkit.victims.trained import victim_trigger_set

LR = dict(lr_base=0.001, lr_max1=0.1, lr_max2=0.01)


def test_schedule_matches_the_formula_at_hand_picked_steps() -> None:
    # total 40 updates, phase one the first 20, cycles of 10: peaks at 5, 15 (0.1), 25, 35 (0.01)
    def lr(step: int) -> float:
        return super_fine_tuning_lr(step, 40, **LR, phase1=20, cycle=10)

    assert lr(0) == pytest.approx(0.001)  # start: LR_BASE
    assert lr(5) == pytest.approx(0.1)  # first peak: LR_MAX1
    assert lr(2) == pytest.approx(0.001 + 0.099 * 0.4)  # climbing: u = 0.2, 1 - |0.4 - 1|
    assert lr(8) == pytest.approx(0.001 + 0.099 * 0.4)  # falling, symmetric
    assert lr(10) == pytest.approx(0.001)  # next cycle starts at the base again
    assert lr(15) == pytest.approx(0.1)
    assert lr(19) == pytest.approx(0.001 + 0.099 * 0.2)  # last update of phase one
    assert lr(20) == pytest.approx(0.001)  # phase boundary: back to the base
    assert lr(25) == pytest.approx(0.01)  # phase two peaks at LR_MAX2
    assert lr(39) == pytest.approx(0.001 + 0.009 * 0.2)  # end
    assert max(lr(s) for s in range(20, 40)) == pytest.approx(0.01)
    # the phase restarts the cycle even when phase one is not a whole number of cycles
    assert super_fine_tuning_lr(7, 20, **LR, phase1=7, cycle=4) == pytest.approx(0.001)
    with pytest.raises(ValueError, match=r"step must lie in \[0, total=40\)"):
        lr(40)


def test_fit_follows_a_schedule_function_and_keeps_its_string_schedules() -> None:
    def run(schedule: object) -> tuple[nn.Module, list[tuple[int, int]]]:
        torch.manual_seed(0)
        model = nn.Linear(4, 3)
        x = torch.randn(32, 4, generator=torch.Generator().manual_seed(1))
        y = torch.arange(32) % 3
        calls: list[tuple[int, int]] = []

        def constant(step: int, total: int) -> float:
            calls.append((step, total))
            return 0.05

        fit(
            model,
            x,
            y,
            loss_fn=F.cross_entropy,
            epochs=3,
            batch_size=8,
            lr=0.05,
            optimizer="sgd",
            schedule=constant if schedule is None else schedule,  # type: ignore[arg-type]
            device="cpu",
        )
        return model, calls

    by_function, calls = run(None)
    by_name, _ = run("constant")
    assert calls == [(s, 12) for s in range(12)]  # every update asks for its rate, in order
    for a, b in zip(by_function.parameters(), by_name.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="schedule must be 'cosine', 'constant' or a function"):
        run("linear")


@pytest.fixture(scope="module")
def marked(tmp_path_factory: pytest.TempPathFactory) -> tuple[Victim, Tensor, Tensor]:
    """A cnn2-small on digits train[:900] that knows 20 triggers; the thief's 538 other images,
    labelled by the model itself (a copy's own labels)."""
    victim = train_victim(
        dataset="digits",
        arch="cnn2-small",
        epochs=10,
        batch_size=32,
        lr=3e-3,
        train_stop=900,
        watermark="adi",
        trigger_size=20,
        cache_dir=Path(tmp_path_factory.mktemp("victims")),
    )
    x = load_dataset("digits", "train").images()[900:]
    return victim, x, predict(victim.model, x, device="cpu").argmax(1)


def _scores(model: nn.Module, victim: Victim) -> tuple[float, float]:
    test = load_dataset("digits", "test")
    assert test.y is not None
    clean = float((predict(model, test.images(), device="cpu").argmax(1) == test.y).float().mean())
    tx, ty = victim_trigger_set(victim)
    return clean, trigger_accuracy(lambda q: predict(model, q, device="cpu"), tx, ty)


def test_fine_tuning_forgets_part_of_the_watermark_and_keeps_accuracy(
    marked: tuple[Victim, Tensor, Tensor],
) -> None:
    victim, x, y = marked
    clean0, trig0 = _scores(victim.model, victim)
    assert trig0 >= 0.9 and clean0 >= 0.9
    model = copy.deepcopy(victim.model)
    hist = fine_tune(model, x, y, epochs=10, lr=3e-3, device="cpu")
    assert hist.steps == 10 * (538 // 128)
    clean, trig = _scores(model, victim)
    assert trig <= trig0 - 0.3  # at least 6 of the 20 triggers forgotten
    assert clean >= 0.9  # chance 0.1; the victim has about 0.97


def test_super_fine_tuning_forgets_more_and_keeps_accuracy(
    marked: tuple[Victim, Tensor, Tensor],
) -> None:
    victim, x, y = marked
    _, trig0 = _scores(victim.model, victim)
    model = copy.deepcopy(victim.model)
    super_fine_tune(model, x, y, epochs=10, phase1_epochs=5, batch_size=32, device="cpu")
    clean, trig = _scores(model, victim)
    assert trig <= 0.3 < trig0  # near chance (0.1)
    assert clean >= 0.85
    # soft labels (the victim's probabilities) are taken as well
    soft = predict(victim.model, x, device="cpu").softmax(1)
    model = copy.deepcopy(victim.model)
    super_fine_tune(model, x, soft, epochs=4, phase1_epochs=2, batch_size=32, device="cpu")
    assert _scores(model, victim)[0] >= 0.6  # chance 0.1


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(lr_max2=0.2), r"need 0 < lr_base < lr_max2 < lr_max1"),
        (dict(lr_base=0.0), r"need 0 < lr_base < lr_max2 < lr_max1"),
        (dict(phase1_epochs=30), "phase1_epochs=30 exceeds epochs=20"),
        (dict(cycle_epochs=0), "cycle_epochs must be a positive int"),
        (dict(epochs=0), "epochs must be a positive int"),
    ],
)
def test_super_fine_tune_rejects_bad_settings(kwargs: dict[str, float], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        super_fine_tune(nn.Flatten(), torch.zeros(4, 1, 2, 2), torch.zeros(4).long(), **kwargs)  # type: ignore[arg-type]


def test_fine_tune_rejects_bad_settings() -> None:
    x, y = torch.zeros(4, 1, 2, 2), torch.zeros(4).long()
    with pytest.raises(ValueError, match="lr must be positive"):
        fine_tune(nn.Flatten(), x, y, lr=0.0)
    with pytest.raises(ValueError, match="need as many labels as images"):
        fine_tune(nn.Flatten(), x, y[:3])
