"""Removing a backdoor (or a backdoor watermark) by fine-tuning and super-fine-tuning.

Zeyang Sha, Xinlei He, Pascal Berrang, Mathias Humbert and Yang Zhang, "Fine-Tuning Is All You
Need to Mitigate Backdoor Attacks", arXiv 2022, https://arxiv.org/abs/2212.09067; chapter 3 of
Sha's dissertation (``/work/shared/papers/sha-dissertation-backdoor-defence-cont-steal-de-fake.txt``,
Section 3.2.2 and Figure 3.1). Here the one who fine-tunes is a thief who holds a copy of a
watermarked model and wants the owner's trigger set (``stealkit.metrics.watermark``) forgotten.

Both methods run gradient descent ``w <- w - eps_t * grad_w L(w)`` on the thief's own data with
labels it has (its copy's own labels, or the victim's answers it bought); they differ in
``eps_t``.

Conventional fine-tuning: the whole model, a constant learning rate, "the same learning rate as
the one used in the pre-training process" (Section 3.2.2); Figure 3.11 shows that a larger one
(1e-4 -> 1e-3 -> 0.1) forgets the backdoor faster but costs clean accuracy.

Super-fine-tuning: a base rate ``LR_BASE`` and two peaks ``LR_MAX1 > LR_MAX2``. Phase one (the
first ``phase1`` updates; the paper: ten epochs) climbs linearly from ``LR_BASE`` to ``LR_MAX1``
and back, cycle after cycle; phase two (the remaining updates) cycles the same way with the
lower peak ``LR_MAX2``. With ``s`` the update's index within its phase and ``L`` the cycle
length in updates,

    peak_t = LR_MAX1 if t < phase1 else LR_MAX2
    s      = t if t < phase1 else t - phase1
    u      = (s mod L) / L                              in [0, 1)
    eps_t  = LR_BASE + (peak_t - LR_BASE) * (1 - |2u - 1|)

so each cycle starts at ``LR_BASE``, reaches its peak at ``u = 1/2`` and comes back down.

Settings from the text: ``LR_MAX1 = 0.1`` ("enough for removing backdoors with sufficient
fine-tuning datasets"), raised to 0.3 when the defender has only 10% of the fine-tuning set
(Figure 3.12); phase one lasts ten epochs. Data: the standalone experiments fine-tune on the
whole clean training set; the ablation (Figure 3.9) shows 20% suffices in most cases, and with
10% super-fine-tuning needs ``LR_MAX1 = 0.3`` (Section 3.4.6).

Not verified (Figure 3.1 is not in the text copy): ``LR_BASE`` and ``LR_MAX2`` (defaults here
1e-4 and 0.01), the cycle length ("several iterations"; default here one epoch), whether the
fall back to ``LR_BASE`` is linear (here a symmetric triangle, as in Smith's cyclical learning
rates) and the optimizer (here SGD with Nesterov momentum 0.9, as large rates like 0.1 are SGD
rates).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stealkit.train.loop import FitHistory, LossFn, fit


def super_fine_tuning_lr(
    step: int,
    total: int,
    *,
    lr_base: float,
    lr_max1: float,
    lr_max2: float,
    phase1: int,
    cycle: int,
) -> float:
    """The learning rate ``eps_t`` of update ``step`` (0-based) of ``total`` (module docstring):
    triangles from ``lr_base`` up to ``lr_max1`` for the first ``phase1`` updates, then up to
    ``lr_max2``; each triangle lasts ``cycle`` updates and restarts at the phase boundary."""
    if not 0 <= step < total:
        raise ValueError(f"step must lie in [0, total={total}), got {step}")
    if cycle < 1 or phase1 < 0:
        raise ValueError(f"need cycle >= 1 and phase1 >= 0, got cycle={cycle}, phase1={phase1}")
    peak, s = (lr_max1, step) if step < phase1 else (lr_max2, step - phase1)
    u = (s % cycle) / cycle
    return lr_base + (peak - lr_base) * (1.0 - abs(2.0 * u - 1.0))


def _check_data(x: Tensor, y: Tensor, batch_size: int) -> None:
    if len(x) == 0 or len(x) != len(y):
        raise ValueError(
            f"need as many labels as images (at least one), got {len(x)} images, {len(y)} labels"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")


def _check_epochs(epochs: int) -> None:
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")


def fine_tune(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    epochs: int = 10,
    lr: float = 1e-3,
    optimizer: str = "adam",
    batch_size: int = 128,
    loss_fn: LossFn = F.cross_entropy,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> FitHistory:
    """Conventional fine-tuning: train the whole ``model`` in place on ``(x, y)`` at a constant
    ``lr`` (the paper: the pre-training rate; stealkit's victims and copies use Adam at 1e-3).

    Args:
        x: (N, C, H, W) images of the thief's own.
        y: (N,) labels or (N, C) probabilities (``F.cross_entropy`` takes both).
        optimizer: "adam" or "sgd" (as ``stealkit.train.fit``).
    """
    _check_epochs(epochs)
    _check_data(x, y, batch_size)
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    return fit(
        model,
        x,
        y,
        loss_fn=loss_fn,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        optimizer=optimizer,
        schedule="constant",
        seed=seed,
        device=device,
        progress="fine-tuning",
    )


def super_fine_tune(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    epochs: int = 20,
    lr_max1: float = 0.1,
    lr_max2: float = 0.01,
    lr_base: float = 1e-4,
    phase1_epochs: int = 10,
    cycle_epochs: int = 1,
    batch_size: int = 128,
    loss_fn: LossFn = F.cross_entropy,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> FitHistory:
    """Super-fine-tuning: train the whole ``model`` in place on ``(x, y)`` with SGD (Nesterov
    momentum 0.9) under ``super_fine_tuning_lr``: ``phase1_epochs`` epochs of triangles peaking at
    ``lr_max1``, the rest peaking at ``lr_max2``, each triangle ``cycle_epochs`` epochs long.

    Args:
        x: (N, C, H, W) images of the thief's own (the paper: 10-100% of the clean training
            set; give ``lr_max1=0.3`` when it is small).
        y: (N,) labels or (N, C) probabilities.
        epochs: all epochs, both phases; ``phase1_epochs <= epochs`` (equal: no phase two).
    """
    _check_epochs(epochs)
    _check_data(x, y, batch_size)
    if not 0 < lr_base < lr_max2 < lr_max1:
        raise ValueError(
            f"need 0 < lr_base < lr_max2 < lr_max1 (the paper: LR_MAX1 > LR_MAX2), got "
            f"lr_base={lr_base}, lr_max2={lr_max2}, lr_max1={lr_max1}"
        )
    for name, v in (("phase1_epochs", phase1_epochs), ("cycle_epochs", cycle_epochs)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if phase1_epochs > epochs:
        raise ValueError(
            f"phase1_epochs={phase1_epochs} exceeds epochs={epochs}; raise epochs or lower it"
        )
    per_epoch = max(1, len(x) // min(batch_size, len(x)))  # as stealkit.train.fit counts

    def lr_at(step: int, total: int) -> float:
        return super_fine_tuning_lr(
            step,
            total,
            lr_base=lr_base,
            lr_max1=lr_max1,
            lr_max2=lr_max2,
            phase1=phase1_epochs * per_epoch,
            cycle=cycle_epochs * per_epoch,
        )

    return fit(
        model,
        x,
        y,
        loss_fn=loss_fn,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr_base,
        optimizer="sgd",
        schedule=lr_at,
        seed=seed,
        device=device,
        progress="super-fine-tuning",
    )
