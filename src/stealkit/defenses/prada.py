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

from dataclasses import dataclass, field

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


def shapiro_w(distances: list[float]) -> float:
    """The Shapiro-Wilk W statistic of the distances (1: normal; small: far from normal)."""
    from scipy.stats import shapiro

    if len(set(distances)) < 3:  # W is undefined for a constant record
        return 0.0 if len(distances) >= 3 else 1.0
    return float(shapiro(distances).statistic)


@dataclass
class _Client:
    growing: dict[int, list[Tensor]] = field(default_factory=dict)
    class_distances: dict[int, list[float]] = field(default_factory=dict)
    distances: list[float] = field(default_factory=list)
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
        grown = state.growing.setdefault(c, [])
        if not grown:
            grown.append(x)
            return
        d = min_distance(x, torch.stack(grown))
        state.distances.append(d)
        per_class = state.class_distances.setdefault(c, [])
        per_class.append(d)
        if d > growth_threshold(per_class):
            grown.append(x)
        if len(state.distances) >= self.min_queries:
            state.w = shapiro_w(state.distances)
            if state.w < self.delta and state.alarm_at is None:
                state.alarm_at = state.queries

    def apply(self, response: Response) -> Response:
        return response  # it watches; its effect is a refusal, not a perturbation

    def reset(self) -> None:
        self._clients = {}

    def __repr__(self) -> str:
        return f"Prada(delta={self.delta}, min_queries={self.min_queries}, action={self.action!r})"
