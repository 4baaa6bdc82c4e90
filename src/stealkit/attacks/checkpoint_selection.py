"""Choosing a data-free attack's checkpoint without real data: agreement on freshly bought labels.

Ours, not from a paper. The MEGA paper (Hong, Huang and Chen, arXiv 2022,
https://arxiv.org/abs/2202.00008, Section 4.2) argues that DaST's "best checkpoint" cannot be
chosen by a data-free attacker, who has no real data to evaluate saved models on. An attack that
works in rounds and buys the victim's answers for each round's queries *before* training on them
has a held-out set for free: the weights w_r after round r have never trained on the pairs bought
in rounds r + 1, r + 2, ..., so

    score(w_r) = (1 / W) sum_{t = r+1}^{r+W} mean_{x in X_t} [argmax S(x; w_r) = T(x)]

is an honest estimate of w_r's agreement with the victim on the attack's own query distribution
(not on real data: a generator that steers towards where S is confident biases it upwards).
``FreshSelection`` keeps a copy of each round's weights until W later rounds have scored it, and
the best fully scored checkpoint (the earliest on a tie). Weights of the last W rounds get no
full window and are never chosen.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn


def fresh_agreement(logits: Tensor, labels: Tensor) -> float:
    """Share of rows whose top class is the victim's freshly bought label (N,)."""
    return float((logits.argmax(dim=1) == labels.to(logits.device)).float().mean())


def agreement_of(model: nn.Module, x: Tensor, labels: Tensor, device: torch.device) -> float:
    """``fresh_agreement`` of ``model`` on (x, labels), in eval mode, its mode then restored."""
    was_training = model.training
    model.eval()
    with torch.no_grad():
        logits = model(x.to(device)).float()
    model.train(was_training)
    return fresh_agreement(logits, labels)


@dataclass
class Checkpoint:
    """A copy of the stolen model's weights after one round, and its fresh agreements so far."""

    round: int
    queries: int
    state: dict[str, Tensor]
    scores: list[float] = field(default_factory=list)

    @property
    def score(self) -> float:
        """Mean fresh agreement over the rounds scored so far."""
        return sum(self.scores) / len(self.scores)


class FreshSelection:
    """Score each round's weights on the labels bought in the ``window`` rounds after it; keep
    the best fully scored checkpoint (``best``).

    Per round: ``score(x, labels, device)`` with the round's fresh pairs before anything trains on
    them, then ``add(round, queries, model)`` with the weights after the round's training.
    """

    def __init__(self, window: int) -> None:
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a whole number of rounds >= 1, got {window!r}")
        self.window = window
        self.pending: list[Checkpoint] = []
        self.best: Checkpoint | None = None
        self._scratch: nn.Module | None = None  # holds a pending checkpoint's weights to score

    def __repr__(self) -> str:
        return f"FreshSelection(window={self.window})"

    def add(self, round_: int, queries: int, model: nn.Module) -> None:
        """Queue a copy of ``model``'s weights after round ``round_`` (``queries`` spent)."""
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.pending.append(Checkpoint(round_, queries, state))
        if self._scratch is None:
            self._scratch = copy.deepcopy(model)

    def score(self, x: Tensor, labels: Tensor, device: torch.device) -> None:
        """Add this round's fresh agreement to every queued checkpoint; the fully scored ones
        leave the queue and the best of them is kept (the earliest on a tie)."""
        for ckpt in self.pending:
            scratch = self._scratch
            if scratch is None:  # pragma: no cover - add() always sets it first
                raise RuntimeError("FreshSelection.score before any add")
            scratch.load_state_dict(ckpt.state)
            ckpt.scores.append(agreement_of(scratch, x, labels, device))
        done = [c for c in self.pending if len(c.scores) >= self.window]
        self.pending = [c for c in self.pending if len(c.scores) < self.window]
        for ckpt in done:
            if self.best is None or ckpt.score > self.best.score:
                self.best = ckpt

    def summary(self) -> dict[str, Any]:
        """What was chosen, for an ``AttackResult.info`` (JSON-able)."""
        if self.best is None:
            return {"select": "fresh", "selected_round": None, "selected_queries": None}
        return {
            "select": "fresh",
            "selected_round": self.best.round,
            "selected_queries": self.best.queries,
            "selected_fresh_agreement": round(self.best.score, 5),
        }
