"""Judging encoders by a linear probe: frozen features, a trained linear head, test accuracy.

The same protocol serves the victim and its stolen copy, so their probe accuracies compare; the
agreement of the two probes' predictions measures how faithfully the stolen encoder behaves on a
downstream task. ``encoder_fn`` is anything that maps images (N, C, H, W) to embeddings (N, D): a
victim's model (the evaluator has it; attacks never do), a stolen encoder, or a function.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stealkit.metrics.classification import accuracy, agreement
from stealkit.train.loop import default_device, fit

EncoderFn = Callable[[Tensor], Tensor]


@torch.no_grad()
def extract_features(
    encoder_fn: EncoderFn,
    x: Tensor,
    *,
    batch_size: int = 256,
    device: torch.device | str | None = None,
) -> Tensor:
    """``encoder_fn`` on ``x`` in batches (modules in eval mode, on ``device``), on the CPU."""
    dev = torch.device(device) if device is not None else default_device()
    if isinstance(encoder_fn, nn.Module):
        encoder_fn.to(dev).eval()
    outs = [
        encoder_fn(x[i : i + batch_size].to(dev)).float().flatten(1).cpu()
        for i in range(0, len(x), batch_size)
    ]
    if not outs:
        raise ValueError("cannot extract features of an empty set")
    return torch.cat(outs)


class Standardize(nn.Module):
    """(z - mean) / std with statistics fixed at construction."""

    mean: Tensor
    std: Tensor

    def __init__(self, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        self.register_buffer("mean", mean.detach().clone())
        self.register_buffer("std", std.detach().clone())

    def forward(self, z: Tensor) -> Tensor:
        return (z - self.mean) / self.std


@dataclass
class ProbeResult:
    """``head`` maps features (N, D) to logits, standardisation included; ``predictions`` are its
    test labels (N,)."""

    accuracy: float
    train_accuracy: float
    predictions: Tensor
    head: nn.Module


def _check_protocol(epochs: int, batch_size: int, lr: float) -> None:
    if epochs < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(
            f"need epochs, batch_size >= 1 and lr > 0, got {epochs}, {batch_size}, {lr}"
        )


def linear_probe(
    encoder_fn: EncoderFn,
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    num_classes: int | None = None,
    epochs: int = 30,
    batch_size: int = 256,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    standardize: bool = True,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> ProbeResult:
    """Train a linear classifier on frozen features of ``train_x`` and test it on ``test_x``.

    Features are computed once (no augmentation); with ``standardize`` each feature is scaled by
    its training mean and std first. The head is trained by ``stealkit.train.fit`` (Adam, cosine
    schedule, cross-entropy) with ``seed``, so two encoders probed with the same arguments are
    judged by exactly the same protocol.
    """
    if len(train_x) != len(train_y) or len(test_x) != len(test_y):
        raise ValueError("images and labels must have the same length")
    _check_protocol(epochs, batch_size, lr)
    return probe_features(
        extract_features(encoder_fn, train_x, device=device),
        train_y,
        extract_features(encoder_fn, test_x, device=device),
        test_y,
        num_classes=num_classes,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        standardize=standardize,
        seed=seed,
        device=device,
    )


def probe_features(
    f_train: Tensor,
    train_y: Tensor,
    f_test: Tensor,
    test_y: Tensor,
    *,
    num_classes: int | None = None,
    epochs: int = 30,
    batch_size: int = 256,
    lr: float = 1e-2,
    weight_decay: float = 1e-4,
    standardize: bool = True,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> ProbeResult:
    """``linear_probe`` on features already extracted (N, D): for a caller that needs the
    features as well, so that the encoder runs once per image."""
    if len(f_train) != len(train_y) or len(f_test) != len(test_y):
        raise ValueError("features and labels must have the same length")
    _check_protocol(epochs, batch_size, lr)
    c = num_classes if num_classes is not None else int(max(train_y.max(), test_y.max())) + 1
    d = f_train.shape[1]
    if standardize:
        scale = Standardize(f_train.mean(0), f_train.std(0).clamp_min(1e-6))
    else:
        scale = Standardize(torch.zeros(d), torch.ones(d))
    with torch.random.fork_rng(devices=[]):  # seeded head initialisation, global RNG untouched
        torch.manual_seed(seed)
        head = nn.Sequential(scale, nn.Linear(d, c))
    fit(
        head,
        f_train,
        train_y,
        loss_fn=F.cross_entropy,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        seed=seed,
        device=device,
    )
    head = head.cpu().eval()
    with torch.no_grad():
        pred = head(f_test).argmax(1)
        train_pred = head(f_train).argmax(1)
    return ProbeResult(
        accuracy=accuracy(pred, test_y),
        train_accuracy=accuracy(train_pred, train_y),
        predictions=pred,
        head=head,
    )


def probe_agreement(victim: ProbeResult, stolen: ProbeResult) -> float:
    """Fraction of test inputs on which the stolen encoder + its probe and the victim encoder + its
    probe predict the same class (both probed on the same ``test_x``)."""
    return agreement(stolen.predictions, victim.predictions)


@torch.no_grad()
def embedding_similarity(a: Tensor, b: Tensor) -> dict[str, float]:
    """How close two sets of embeddings (N, D) of the same inputs are: mean cosine similarity,
    mean squared error, and mean relative L2 error |a - b| / |b|."""
    if a.shape != b.shape or a.dim() != 2:
        raise ValueError(
            f"need two (N, D) tensors of one shape, got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    a, b = a.float(), b.float()
    return {
        "cosine": float(F.cosine_similarity(a, b, dim=1).mean()),
        "mse": float(F.mse_loss(a, b)),
        "relative_l2": float(((a - b).norm(dim=1) / b.norm(dim=1).clamp_min(1e-12)).mean()),
    }
