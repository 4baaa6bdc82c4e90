"""Class-score helpers every layer shares: keep the top k, reveal the label, renormalise rows.

They live here, at the bottom of the package, so that ``oracle/`` imports nothing above it;
``stealkit.defenses.functional`` re-exports them beside the perturbations.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stealkit.oracle.response import OutputKind, Response


def normalize_rows(p: Tensor) -> Tensor:
    """Scale each non-negative row to sum 1; a row with no mass at all becomes uniform (not NaN)."""
    total = p.sum(dim=1, keepdim=True)
    uniform = torch.full_like(p, 1.0 / p.shape[1])
    return torch.where(total > 0, p / total.clamp_min(1e-12), uniform)


def topk(probs: Tensor, k: int, *, renormalize: bool = False) -> Tensor:
    """Keep the k largest probabilities per row and zero the rest (Tramer et al. 2016)."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, probs.shape[1])
    vals, idx = probs.topk(k, dim=1)
    out = torch.zeros_like(probs).scatter_(1, idx, vals)
    if renormalize:
        out = out / out.sum(dim=1, keepdim=True).clamp_min(1e-12)
    return out


def argmax_labels(probs: Tensor) -> Tensor:
    """Reveal only the top-1 class (N,) long."""
    return probs.argmax(dim=1)


_CLASS = frozenset({OutputKind.LABEL, OutputKind.TOPK, OutputKind.PROBABILITIES, OutputKind.LOGITS})


def can_reduce(have: OutputKind, want: OutputKind) -> bool:
    """Whether an answer of kind ``have`` can be turned into one of kind ``want`` by the client
    (less information, never more): labels from any class answer, top-k from probabilities or
    logits, probabilities from logits."""
    if have is want:
        return True
    if want is OutputKind.LABEL:
        return have in _CLASS
    if want is OutputKind.TOPK:
        return have in (OutputKind.PROBABILITIES, OutputKind.LOGITS)
    return want is OutputKind.PROBABILITIES and have is OutputKind.LOGITS


def reduce(response: Response, want: OutputKind, k: int = 1) -> Response:
    """``response`` as an answer of kind ``want`` (see ``can_reduce``)."""
    if response.kind is want:
        return response
    if not can_reduce(response.kind, want):
        raise ValueError(f"an answer of kind {response.kind.value} cannot become {want.value}")
    c = response.num_classes
    if want is OutputKind.LABEL:
        return Response(OutputKind.LABEL, response.labels(), c)
    if want is OutputKind.TOPK:
        return Response(OutputKind.TOPK, topk(response.probs(), k), c)
    return Response(OutputKind.PROBABILITIES, response.probs(), c)
