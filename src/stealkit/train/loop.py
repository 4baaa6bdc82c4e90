"""The one training loop every attack and every victim uses."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from stealkit.progress import track

log = logging.getLogger(__name__)

PROGRESS_MIN_STEPS = 100  # shorter fits (online updates, data-free rounds) show no bar of their own

LossFn = Callable[[Tensor, Tensor], Tensor]
Augment = Callable[[Tensor, torch.Generator], Tensor]
LrSchedule = Callable[[int, int], float]  # (update index from 0, total updates) -> learning rate


@dataclass
class FitHistory:
    epoch_loss: list[float] = field(default_factory=list)
    steps: int = 0


def default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def fit(
    model: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    *,
    loss_fn: LossFn,
    epochs: int = 10,
    steps: int | None = None,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    optimizer: str = "adam",
    schedule: str | LrSchedule = "cosine",
    augment: Augment | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
    optimizer_state: torch.optim.Optimizer | None = None,
    progress: str = "training steps",
) -> FitHistory:
    """Minimise ``loss_fn(model(aug(x)), target)`` over shuffled mini-batches.

    Args:
        inputs: (N, ...) float tensor, kept on the CPU; batches move to ``device``.
        targets: (N,) long labels or (N, C) soft targets, whatever ``loss_fn`` takes.
        epochs: passes over the data; ``steps`` overrides it with a number of updates.
        optimizer: "adam" or "sgd" (momentum 0.9, Nesterov).
        schedule: "cosine" (to 0 over the run), "constant", or a function
            ``schedule(step, total) -> lr`` giving the learning rate of update ``step``
            (0-based) of ``total``, set on every parameter group before that update.
        augment: ``augment(batch, generator)`` applied to each input batch on the device.
        optimizer_state: an optimizer to continue with (online training); else a new one.
        progress: what a progress bar calls this fit (shown only inside
            ``stealkit.progress.reporting`` and for fits of at least ``PROGRESS_MIN_STEPS``).
    """
    n = int(inputs.shape[0])
    if n == 0:
        raise ValueError("cannot fit on an empty set")
    if len(targets) != n:
        raise ValueError(f"{n} inputs but {len(targets)} targets")
    dev = torch.device(device) if device is not None else default_device()
    model.to(dev).train()
    bs = min(batch_size, n)
    per_epoch = max(1, n // bs)
    total = steps if steps is not None else epochs * per_epoch
    if total < 1:
        raise ValueError("fit needs at least one step")
    if optimizer_state is not None:
        opt = optimizer_state
    elif optimizer == "adam":
        opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    elif optimizer == "sgd":
        opt = torch.optim.SGD(
            model.parameters(), lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay
        )
    else:
        raise ValueError(f"optimizer must be 'adam' or 'sgd', got {optimizer!r}")
    lr_at = schedule if callable(schedule) else None
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total) if schedule == "cosine" else None
    if lr_at is None and schedule not in ("cosine", "constant"):
        raise ValueError(
            f"schedule must be 'cosine', 'constant' or a function (step, total) -> lr, "
            f"got {schedule!r}"
        )
    gen = torch.Generator().manual_seed(seed)
    hist = FitHistory()
    bar = track(progress, total if total >= PROGRESS_MIN_STEPS else 0, unit="step")
    step, running, count = 0, 0.0, 0
    while step < total:
        order = torch.randperm(n, generator=gen)
        for b in range(per_epoch):
            idx = order[b * bs : (b + 1) * bs]
            xb = inputs[idx].to(dev, non_blocking=True)
            yb = targets[idx].to(dev, non_blocking=True)
            if augment is not None:
                xb = augment(xb, gen)
            loss = loss_fn(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if lr_at is not None:
                for group in opt.param_groups:
                    group["lr"] = float(lr_at(step, total))
            opt.step()
            if sched is not None:
                sched.step()
            running += float(loss.detach())
            count += 1
            step += 1
            bar.update(1)
            if step >= total:
                break
        hist.epoch_loss.append(running / max(count, 1))
        running, count = 0.0, 0
    bar.close()
    hist.steps = step
    model.eval()
    return hist


@torch.no_grad()
def predict(
    model: nn.Module,
    inputs: Tensor,
    *,
    batch_size: int = 512,
    device: torch.device | str | None = None,
) -> Tensor:
    """Model outputs for ``inputs`` in eval mode, returned on the CPU."""
    dev = torch.device(device) if device is not None else default_device()
    model.to(dev).eval()
    outs = [
        model(inputs[i : i + batch_size].to(dev)).float().cpu()
        for i in range(0, len(inputs), batch_size)
    ]
    return torch.cat(outs) if outs else torch.empty(0)
