"""PRADA: a per-client query monitor that detects model-extraction query streams.

Juuti, Szyller, Marchal and Asokan, "PRADA: Protecting Against DNN Model Stealing Attacks",
IEEE EuroS&P 2019, https://arxiv.org/abs/1805.02628.

Natural queries (an honest client's images) lie at distances from each other that are close to
normally distributed; synthetic extraction queries (small steps from a few seeds, as JBDA makes
them) pile up at small distances. For each client and each class c the victim predicts, PRADA keeps
a growing set G_c. For a new query x of class c:

    d_min(x) = min_{y in G_c} ||x - y||_2                       (nothing to compare to: x joins G_c)
    D       <- D + [d_min(x)]                                    (the client's distance record)
    x joins G_c  if  d_min(x) > T_c = max(0, mean(D_c) - std(D_c))

Once D holds ``min_queries`` distances, the Shapiro-Wilk statistic W(D) is computed after each
query; W < delta raises the alarm for that client. The monitor then either refuses the client's
batches (``action="refuse"``: ``QueryRefused``, nothing charged) or only records the alarm
(``action="flag"``). Either way ``alarms`` says when (after how many of the client's queries) it
fired, so a detection table can report queries-until-alarm per attack and false alarms on honest
clients.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

from stealkit.defenses.perturbation import Defense
from stealkit.errors import QueryRefused
from stealkit.oracle.response import Response


def min_distance(x: Tensor, seen: Tensor) -> float:
    """The smallest L2 distance from the flat query ``x`` (D,) to the rows of ``seen`` (M, D)."""
    return float(torch.cdist(x[None], seen).min())


def growth_threshold(distances: list[float]) -> float:
    """T_c = max(0, mean - std) of a class's minimum distances (0 for fewer than two)."""
    if len(distances) < 2:
        return 0.0
    d = torch.tensor(distances, dtype=torch.float64)
    return max(0.0, float(d.mean() - d.std()))


def shapiro_w(distances: Sequence[float] | np.ndarray) -> float:
    """The Shapiro-Wilk W statistic of the distances (1: normal; small: far from normal)."""
    import warnings

    from scipy.stats import shapiro

    d = np.asarray(distances, dtype=np.float64)
    if len(np.unique(d[:64])) < 3 and len(np.unique(d)) < 3:  # the head decides it, mostly
        return 0.0 if len(d) >= 3 else 1.0  # W is undefined for fewer than 3 distinct values
    with warnings.catch_warnings():  # above 5,000 scipy warns about its p-value; W is what we use
        warnings.simplefilter("ignore", UserWarning)
        return float(shapiro(d).statistic)


class _Grown:
    """One class's growing set G_c as rows of a buffer that doubles when full (no re-stacking
    per query), with running sums of the class's minimum distances for T_c."""

    def __init__(self, first: Tensor) -> None:
        self.rows = first.new_empty((16, first.numel()))
        self.rows[0] = first
        self.n = 1
        self.count, self.total, self.total_sq = 0, 0.0, 0.0

    def add(self, x: Tensor) -> None:
        if self.n == len(self.rows):
            self.rows = torch.cat([self.rows, torch.empty_like(self.rows)])
        self.rows[self.n] = x
        self.n += 1

    def record(self, d: float) -> None:
        self.count += 1
        self.total += d
        self.total_sq += d * d

    def threshold(self) -> float:
        """``growth_threshold`` of the distances recorded so far, from the running sums."""
        if self.count < 2:
            return 0.0
        mean = self.total / self.count
        var = max(0.0, (self.total_sq - self.count * mean * mean) / (self.count - 1))
        return max(0.0, mean - var**0.5)


@dataclass
class _Client:
    growing: dict[int, _Grown] = field(default_factory=dict)
    record: np.ndarray = field(default_factory=lambda: np.empty(256))
    n: int = 0
    queries: int = 0
    alarm_at: int | None = None
    w: float | None = None


class Prada(Defense):
    """PRADA's detector per client, in front of any classifier API.

    Args:
        delta: the alarm fires when Shapiro-Wilk W of the client's distances falls below it.
        min_queries: distances to collect before testing (W is noisy on few).
        action: "refuse" (block the client once alarmed) or "flag" (answer, but record).
    """

    needs = None
    gives = None

    def __init__(
        self, *, delta: float = 0.9, min_queries: int = 100, action: str = "refuse"
    ) -> None:
        if not 0.0 < delta < 1.0:
            raise ValueError(f"delta must lie in (0, 1), got {delta}")
        if min_queries < 3:
            raise ValueError(f"min_queries must be >= 3 (Shapiro-Wilk needs 3), got {min_queries}")
        if action not in ("refuse", "flag"):
            raise ValueError(f"action must be 'refuse' or 'flag', got {action!r}")
        self.delta, self.min_queries, self.action = delta, min_queries, action
        self._clients: dict[str, _Client] = {}

    @property
    def alarms(self) -> dict[str, int]:
        """Client -> how many of its queries had been answered when its alarm fired."""
        return {c: s.alarm_at for c, s in self._clients.items() if s.alarm_at is not None}

    def statistic(self, client: str) -> float | None:
        """The client's latest Shapiro-Wilk W (None before ``min_queries`` distances)."""
        state = self._clients.get(client)
        return state.w if state is not None else None

    def answer(self, x: Tensor, response: Response, client: str) -> Response:
        state = self._clients.setdefault(client, _Client())
        if state.alarm_at is None or self.action == "flag":  # a blocked client's are not watched
            labels = response.labels()
            flat = x.detach().reshape(len(x), -1).float().cpu()
            for row, c in zip(flat, labels.tolist(), strict=True):
                self._observe(state, row, int(c))
        if state.alarm_at is not None and self.action == "refuse":
            raise QueryRefused(
                f"PRADA blocked client {client!r} after {state.alarm_at} queries: their distances "
                f"stopped looking natural (Shapiro-Wilk W {state.w:.3f} < {self.delta}); this "
                "batch was not charged"
            )
        return response

    def _observe(self, state: _Client, x: Tensor, c: int) -> None:
        state.queries += 1
        grown = state.growing.get(c)
        if grown is None:
            state.growing[c] = _Grown(x)
            return
        d = min_distance(x, grown.rows[: grown.n])
        if state.n == len(state.record):
            state.record = np.concatenate([state.record, np.empty_like(state.record)])
        state.record[state.n] = d
        state.n += 1
        grown.record(d)
        if d > grown.threshold():
            grown.add(x)
        if state.n >= self.min_queries:
            state.w = shapiro_w(state.record[: state.n])
            if state.w < self.delta and state.alarm_at is None:
                state.alarm_at = state.queries

    def apply(self, response: Response) -> Response:
        return response  # it watches; its effect is a refusal, not a perturbation

    def reset(self) -> None:
        self._clients = {}

    def __repr__(self) -> str:
        return f"Prada(delta={self.delta}, min_queries={self.min_queries}, action={self.action!r})"
