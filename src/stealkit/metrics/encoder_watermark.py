"""Checking an encoder for a BadEncoder-style watermark: the trigger, and the watermark rate.

Sha's dissertation (Cont-Steal chapter, Section 4.4.8 and Table 4.5) watermarks a SimCLR encoder
with BadEncoder (Jia, Liu and Gong, "BadEncoder: Backdoor Attacks to Pre-trained Encoders in
Self-Supervised Learning", IEEE S&P 2022, https://arxiv.org/abs/2108.00352): images carrying a
trigger are misclassified, as the target class, by any downstream classifier built on the
encoder. The owner claims a suspect encoder when it does the same. The watermark rate is

    wr(f) = mean over test images x with y(x) != t of [ h_f(x + trigger) == t ]

with h_f a linear probe trained on f's features of clean, labelled downstream images (each
suspect gets its own probe: the dissertation's strong adversary has the downstream data) and t
the target class. A clean encoder gives about 1/C (the dissertation's baseline: 0.095-0.111).
Not verified: whether the dissertation leaves out test images of the target class (BadEncoder's
attack success rate does; so does this file), and its trigger's size and place (BadEncoder: a
white square in the bottom-right corner).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from stealkit.metrics.probe import EncoderFn, extract_features, linear_probe


@dataclass(frozen=True)
class PatchTrigger:
    """A ``size`` x ``size`` square ``margin`` pixels from the bottom-right corner; ``pattern``
    "solid" fills it with ``value``, "checker" alternates ``value`` and ``1 - value``."""

    size: int = 4
    value: float = 1.0
    margin: int = 1
    pattern: str = "solid"

    def __post_init__(self) -> None:
        if self.size < 1 or self.margin < 0:
            raise ValueError(f"need size >= 1 and margin >= 0, got {self.size}, {self.margin}")
        if not 0.0 <= self.value <= 1.0:
            raise ValueError(f"value must lie in [0, 1] (images are in [0, 1]), got {self.value}")
        if self.pattern not in ("solid", "checker"):
            raise ValueError(f"pattern must be 'solid' or 'checker', got {self.pattern!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def apply_trigger(x: Tensor, trigger: PatchTrigger) -> Tensor:
    """A copy of images ``x`` (N, C, H, W) in [0, 1] with the trigger stamped on each."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    s, m = trigger.size, trigger.margin
    if s + m > min(h, w):
        raise ValueError(f"a {s}-pixel trigger {m} pixels in does not fit {h}x{w} images")
    patch = torch.full((s, s), trigger.value, dtype=x.dtype, device=x.device)
    if trigger.pattern == "checker":
        ii, jj = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
        patch = torch.where((ii + jj) % 2 == 0, patch, 1.0 - patch)
    out = x.clone()
    out[..., h - m - s : h - m, w - m - s : w - m] = patch
    return out


def rate_from_predictions(pred: Tensor, labels: Tensor, target_class: int) -> float:
    """How often a probe says ``target_class`` on triggered images of the other classes."""
    keep = labels != target_class
    if not bool(keep.any()):
        raise ValueError(f"no test image outside the target class {target_class}")
    return float((pred[keep] == target_class).float().mean())


@dataclass
class WatermarkCheck:
    """``rate``: the watermark rate; ``accuracy``: the probe's clean test accuracy;
    ``tested``: how many triggered images were counted."""

    rate: float
    accuracy: float
    tested: int


def watermark_rate(
    encoder_fn: EncoderFn,
    train_x: Tensor,
    train_y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    *,
    trigger: PatchTrigger,
    target_class: int,
    probe_epochs: int = 30,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> WatermarkCheck:
    """Train a linear probe on ``encoder_fn``'s features of clean ``train_x`` and report how
    often it labels triggered ``test_x`` (not of ``target_class``) as ``target_class``."""
    num_classes = int(max(train_y.max(), test_y.max())) + 1
    if not 0 <= target_class < num_classes:
        raise ValueError(f"target_class must lie in [0, {num_classes}), got {target_class}")
    probe = linear_probe(
        encoder_fn,
        train_x,
        train_y,
        test_x,
        test_y,
        num_classes=num_classes,
        epochs=probe_epochs,
        seed=seed,
        device=device,
    )
    keep = test_y != target_class
    feats = extract_features(encoder_fn, apply_trigger(test_x[keep], trigger), device=device)
    with torch.no_grad():
        pred = probe.head(feats).argmax(1)
    rate = rate_from_predictions(pred, test_y[keep], target_class)
    return WatermarkCheck(rate=rate, accuracy=probe.accuracy, tested=int(keep.sum()))


def trigger_similarity(
    encoder_fn: EncoderFn,
    x: Tensor,
    reference: Tensor,
    *,
    trigger: PatchTrigger,
    device: torch.device | str | None = None,
) -> float:
    """Probe-free evidence: the mean cosine between f(x + trigger) and f's mean embedding of
    the ``reference`` images (BadEncoder's effectiveness objective)."""
    z = extract_features(encoder_fn, apply_trigger(x, trigger), device=device)
    ref = extract_features(encoder_fn, reference, device=device).mean(0, keepdim=True)
    return float(F.cosine_similarity(z, ref, dim=1).mean())
