"""Output perturbations as pure functions of the victim's output.

Every function takes a batch (N, C) and returns a new tensor; none keeps state.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stealkit.oracle.probs import argmax_labels, normalize_rows, topk

__all__ = [
    "argmax_labels",
    "gaussian_noise_logits",
    "gaussian_noise_probs",
    "normalize_rows",
    "reverse_sigmoid",
    "round_probs",
    "topk",
]


def round_probs(probs: Tensor, decimals: int) -> Tensor:
    """Round each probability to ``decimals`` decimal places (Tramer et al. 2016)."""
    if decimals < 0:
        raise ValueError(f"decimals must be >= 0, got {decimals}")
    return torch.round(probs, decimals=decimals)


def gaussian_noise_probs(
    probs: Tensor, sigma: float, *, generator: torch.Generator | None = None
) -> Tensor:
    """Add N(0, sigma^2) to each probability, clip at 0 and renormalise each row."""
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    noise = torch.randn(probs.shape, generator=generator, dtype=probs.dtype) * sigma
    return normalize_rows((probs + noise.to(probs.device)).clamp_min(0.0))


def gaussian_noise_logits(
    logits: Tensor, sigma: float, *, generator: torch.Generator | None = None
) -> Tensor:
    """Add N(0, sigma^2) to each logit and return the softmax."""
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    noise = torch.randn(logits.shape, generator=generator, dtype=logits.dtype) * sigma
    return (logits + noise.to(logits.device)).softmax(dim=1)


def reverse_sigmoid(probs: Tensor, beta: float, gamma: float, *, eps: float = 1e-7) -> Tensor:
    """Reverse-sigmoid perturbation (Lee et al., "Defending Against NN Model Stealing Attacks
    Using Deceptive Perturbations", IEEE S&P Workshops 2019):

        r     = beta * (sigmoid(gamma * logit(y)) - 1/2)
        y_hat = alpha * (y - r),   alpha normalising each row to sum 1

    Entries that would turn negative are clipped to 0 before normalising.
    """
    if beta < 0 or gamma <= 0:
        raise ValueError(f"need beta >= 0 and gamma > 0, got beta={beta}, gamma={gamma}")
    y = probs.clamp(eps, 1 - eps)
    r = beta * (torch.sigmoid(gamma * torch.logit(y)) - 0.5)
    return normalize_rows((probs - r).clamp_min(0.0))
