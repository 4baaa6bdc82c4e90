"""How faithful a stolen classifier is: accuracy, agreement (fidelity) and their ratio."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stealkit.train.loop import predict


def accuracy(pred: Tensor, labels: Tensor) -> float:
    """Fraction of predicted labels (N,) equal to the true labels (N,)."""
    if pred.shape != labels.shape:
        raise ValueError(f"shape mismatch: {tuple(pred.shape)} vs {tuple(labels.shape)}")
    return float((pred == labels).float().mean()) if len(labels) else float("nan")


def agreement(pred_a: Tensor, pred_b: Tensor) -> float:
    """Fidelity: fraction of inputs on which two models give the same top-1 label."""
    return accuracy(pred_a, pred_b)


def evaluate_stolen(
    surrogate: nn.Module,
    x: Tensor,
    labels: Tensor | None,
    victim_pred: Tensor,
    victim_accuracy: float | None,
    *,
    device: torch.device | str | None = None,
) -> dict[str, float | None]:
    """Agreement with the victim, accuracy, and accuracy relative to the victim's, on inputs
    the attacker never queried."""
    pred = predict(surrogate, x, device=device).argmax(dim=1)
    acc = accuracy(pred, labels) if labels is not None else None
    rel = acc / victim_accuracy if acc is not None and victim_accuracy else None
    return {
        "agreement": agreement(pred, victim_pred),
        "accuracy": acc,
        "victim_accuracy": victim_accuracy,
        "relative_accuracy": rel,
    }


class ConvergenceCurve:
    """Accuracy and agreement of a surrogate while it is being stolen, at fixed query counts.

    Pass it as an attack's ``monitor``: the attack calls ``curve(surrogate, spent)`` after each
    round, and the curve evaluates the surrogate (in eval mode, then back in its previous mode)
    each time ``spent`` first reaches one of ``at``, plus wherever ``spent`` equals the last
    checkpoint. It only records: the attack never sees its data or its numbers, so evaluation
    data cannot steer a data-free attack.

    Args:
        x: evaluation inputs the attacker never queries (N, C, H, W).
        labels: their true labels (N,), or None.
        victim_pred: the victim's labels for ``x`` (N,).
        at: query counts to evaluate at (ascending after sorting).
        device: where to run the surrogate.
    """

    def __init__(
        self,
        x: Tensor,
        labels: Tensor | None,
        victim_pred: Tensor,
        *,
        at: list[int],
        device: torch.device | str | None = None,
    ) -> None:
        if not at or min(at) < 1:
            raise ValueError(f"at must hold positive query counts, got {at}")
        self.x, self.labels, self.victim_pred, self.device = x, labels, victim_pred, device
        self.at = sorted(set(at))
        self.points: list[dict[str, float | None]] = []
        self._next = 0

    def __call__(self, surrogate: nn.Module, spent: int) -> None:
        if self._next >= len(self.at) or spent < self.at[self._next]:
            return
        while self._next < len(self.at) and spent >= self.at[self._next]:
            self._next += 1
        was_training = surrogate.training
        pred = predict(surrogate, self.x, device=self.device).argmax(dim=1)
        surrogate.train(was_training)
        acc = accuracy(pred, self.labels) if self.labels is not None else None
        self.points.append(
            {
                "queries": float(spent),
                "agreement": agreement(pred, self.victim_pred),
                "accuracy": acc,
            }
        )

    def __repr__(self) -> str:
        return f"ConvergenceCurve(n={len(self.x)}, at={self.at})"
