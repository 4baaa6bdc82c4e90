"""What every attack shares: its declaration, the result type and the offline training of a
surrogate.

Every attack is an ``Attack``: it declares what it steals (``steals``: "classifier" or
"encoder"), whether it needs the thief's own images (``needs_pool``; data-free attacks make
their own) and which answers it can learn from (``accepts``), and it is run by one signature,
``run(oracle, *, pool=None, surrogate, budget, seed=0, device=None, monitor=None)``. The
experiment runner and the config checks read only these declarations, so a new attack of an
existing family is one file and one ``register_attack`` line.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stealkit.data.augment import random_affine
from stealkit.data.pool import QueryPool
from stealkit.losses.classification import distillation_loss
from stealkit.oracle.base import Oracle
from stealkit.oracle.probs import normalize_rows
from stealkit.oracle.response import OutputKind, Response
from stealkit.train.loop import fit

log = logging.getLogger(__name__)


CLASS_OUTPUTS = frozenset(
    {OutputKind.LABEL, OutputKind.TOPK, OutputKind.PROBABILITIES, OutputKind.LOGITS}
)
"""Every answer a classifier API can give."""
SCORE_OUTPUTS = frozenset({OutputKind.TOPK, OutputKind.PROBABILITIES, OutputKind.LOGITS})
"""Classifier answers that carry scores, not just the label."""
EMBEDDING_OUTPUTS = frozenset({OutputKind.EMBEDDING})

Monitor = Callable[[nn.Module, int], None]
"""Called as ``monitor(surrogate, queries_spent)`` (after each round of an attack that works in
rounds, at least once at the end); it may evaluate the surrogate (restoring its mode) but must not
change it. See ``stealkit.metrics.ConvergenceCurve``."""


@dataclass
class AttackResult:
    """What one attack run produced. ``queries`` is what the oracle's ledger charged for it."""

    surrogate: nn.Module
    queries: int
    history: list[dict[str, float]] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)


class Attack(ABC):
    """An extraction attack: typed keyword-only hyperparameters in the constructor (validated with
    ValueError, no work done), one run per ``run`` call.

    Class attributes declare what the runner and the config checks need to know; ``accepts`` may
    be overridden by a property when it depends on the hyperparameters (MEGA's variants).
    """

    steals: ClassVar[str] = "classifier"
    needs_pool: ClassVar[bool] = True
    buys_pool_images: ClassVar[bool] = True  # each query is a pool image (budget <= pool size)
    accepts: frozenset[OutputKind] = CLASS_OUTPUTS

    @abstractmethod
    def run(
        self,
        oracle: Oracle,
        *,
        pool: QueryPool | None = None,
        surrogate: nn.Module,
        budget: int,
        seed: int = 0,
        device: torch.device | str | None = None,
        monitor: Monitor | None = None,
    ) -> AttackResult:
        """Steal with at most ``budget`` queries of ``oracle``; ``pool`` is the thief's images
        (None for data-free attacks), ``surrogate`` the network to train."""

    def check_oracle(self, oracle: Oracle) -> None:
        """ValueError, before any query is bought, when the oracle's answers do not fit."""
        if oracle.output not in self.accepts:
            kinds = ", ".join(sorted(k.value for k in self.accepts))
            raise ValueError(
                f"{self!r} learns from {kinds} answers; this oracle answers {oracle.output.value}"
            )

    def require_pool(self, pool: QueryPool | None) -> QueryPool:
        """The pool a pool-based attack queries; ValueError when none was given."""
        if pool is None:
            raise ValueError(f"{self!r} queries the thief's own images: pass pool=QueryPool(...)")
        return pool

    def refuse_pool(self, pool: QueryPool | None) -> None:
        """ValueError when a data-free attack is given a pool it would silently ignore."""
        if pool is not None:
            raise ValueError(f"{self!r} is data-free and makes its own queries: pass no pool")


def spend_limit(oracle: Oracle, budget: int) -> int:
    """The queries this attack may spend: ``budget``, refused clearly if the ledger has less."""
    if budget < 1:
        raise ValueError(f"budget must be >= 1, got {budget}")
    left = oracle.ledger.remaining
    if left is not None and left < budget:
        raise ValueError(f"attack budget {budget} exceeds the {left} queries left on the ledger")
    return budget


def pool_spend_limit(oracle: Oracle, pool: QueryPool, budget: int) -> int:
    """``spend_limit``, and a budget no larger than the pool: each pool image is bought once."""
    budget = spend_limit(oracle, budget)
    if budget > len(pool):
        raise ValueError(f"budget {budget} exceeds the {len(pool)} images in pool {pool.name!r}")
    return budget


def training_targets(response: Response) -> Tensor:
    """A (N, C) distribution per answer, whatever the output kind (one-hot for labels; top-k and
    rounded rows renormalised; rows that lost all mass become uniform)."""
    return normalize_rows(response.probs().float().clamp_min(0.0))


SCHEDULES = ("cosine", "constant", "onecycle")


def one_cycle(peak: float, warmup: float) -> Callable[[int, int], float]:
    """lr(step, total): linear from peak / w to peak over the first w = max(1, warmup * total)
    steps, then peak * (1 + cos(pi * p)) / 2 with p the share of the remaining steps done."""

    def lr(step: int, total: int) -> float:
        w = max(1, int(warmup * total))
        if step < w:
            return peak * (step + 1) / w
        p = (step - w) / max(1, total - w)
        return peak * 0.5 * (1.0 + math.cos(math.pi * p))

    return lr


def logit_shift(targets: Tensor, num_classes: int, tau: float) -> Tensor:
    """tau * log(prior) (C,), the prior being the mean of (N, C) answers or the frequency of
    (N,) labels, floored at 1e-4 so a class never bought stays finite."""
    if targets.dim() == 1:
        prior = torch.bincount(targets, minlength=num_classes).float() / max(1, len(targets))
    else:
        prior = targets.float().mean(dim=0)
    return tau * torch.log(prior.clamp_min(1e-4))


def logit_adjusted(
    loss_fn: Callable[[Tensor, Tensor], Tensor], targets: Tensor, tau: float
) -> Callable[[Tensor, Tensor], Tensor]:
    """``loss_fn(logits + logit_shift(targets, C, tau), y)``, with C the width of the logits (bought
    labels need not name the last class)."""
    shifts: dict[tuple[int, torch.device], Tensor] = {}

    def adjusted(logits: Tensor, y: Tensor) -> Tensor:
        key = (int(logits.shape[1]), logits.device)
        if key not in shifts:
            shifts[key] = logit_shift(targets, key[0], tau).to(logits.device)
        return loss_fn(logits + shifts[key], y)

    return adjusted


@dataclass(frozen=True)
class TrainRecipe:
    """How a surrogate is trained on a transfer set (shared by the classifier attacks).

    ``epochs`` passes over the transfer set, at least ``min_steps`` updates; ``augment`` applies a
    small random affine warp to bought images (keeping their bought answers: off by default, since
    on the real MNIST victim it cost 0.05 agreement at 20k queries, see docs/results/knockoff.md);
    ``temperature`` re-tempers soft answers before distillation (1 = plain soft-label
    cross-entropy). ``hard_labels`` trains on the argmax of every answer even where scores come
    back: the defence-aware thief against poisoning that keeps the top-1 class (MAD-argmax,
    reverse sigmoid, adaptive misinformation below its threshold), which then cannot touch it.
    ``undo="ddae"`` is the other defence-aware thief (pool attacks that learn from scores):
    before training it detects which defence perturbs the bought answers and restores them
    (``stealkit.attacks.ddae``; no extra query).

    ``schedule`` is the learning-rate schedule: "cosine" (to 0 over the run), "constant", or
    "onecycle" (linear warm-up over the first ``warmup`` share of the steps to ``lr``, then
    cosine to 0; ``one_cycle``). ``logit_adjust`` (tau) trains on logits shifted by
    tau * log(prior), the prior being the transfer set's mean answer (Menon et al., "Long-tail
    learning via logit adjustment", ICLR 2021, https://arxiv.org/abs/2007.07314): a pool unlike
    the victim's data buys answers skewed to a few classes, and the shift, absent at prediction,
    removes that skew from the surrogate's decisions. Both are ours for Knockoff-style thieves;
    the defaults (cosine, 0) are the earlier recipe.
    """

    epochs: int = 30
    min_steps: int = 600
    max_steps: int | None = None
    batch_size: int = 128
    lr: float = 2e-3
    weight_decay: float = 0.0
    augment: bool = False
    temperature: float = 1.0
    hard_labels: bool = False
    undo: str | None = None
    schedule: str = "cosine"
    warmup: float = 0.15
    logit_adjust: float = 0.0

    def __post_init__(self) -> None:
        if self.undo not in (None, "ddae"):
            raise ValueError(f"recipe undo must be null or 'ddae', got {self.undo!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"recipe schedule must be one of {SCHEDULES}, got {self.schedule!r}")
        if not 0 <= self.warmup < 1 or self.logit_adjust < 0:
            raise ValueError(
                f"recipe warmup must be in [0, 1) and logit_adjust >= 0, got {self.warmup}, "
                f"{self.logit_adjust}"
            )
        if self.epochs < 1 or self.batch_size < 1 or self.lr <= 0 or self.temperature <= 0:
            raise ValueError(f"invalid training recipe {self}")

    def steps_for(self, n: int) -> int:
        steps = max(self.min_steps, self.epochs * max(1, n // self.batch_size))
        return min(steps, self.max_steps) if self.max_steps is not None else steps

    def augmenter(self, hflip: bool = False) -> Callable[[Tensor, torch.Generator], Tensor] | None:
        if not self.augment:
            return None
        return lambda x, g: random_affine(
            x, max_shift=0.08, max_rotate=12.0, scale=(0.9, 1.1), hflip=hflip, generator=g
        )


def train_surrogate(
    surrogate: nn.Module,
    inputs: Tensor,
    targets: Tensor,
    recipe: TrainRecipe,
    *,
    hard: bool,
    seed: int,
    device: torch.device | str | None = None,
) -> list[float]:
    """Offline training on a whole transfer set; soft targets use (tempered) soft cross-entropy,
    hard ones (``hard=True`` or ``recipe.hard_labels``; argmax of the targets) plain
    cross-entropy."""
    if hard or recipe.hard_labels:
        labels = targets.argmax(dim=1) if targets.dim() == 2 else targets
        loss_fn: Callable[[Tensor, Tensor], Tensor] = F.cross_entropy
        tgt = labels
    else:
        t = recipe.temperature
        loss_fn = lambda logits, p: distillation_loss(logits, p, t)  # noqa: E731
        tgt = targets
    if recipe.logit_adjust > 0:
        loss_fn = logit_adjusted(loss_fn, tgt, recipe.logit_adjust)
    schedule: str | Callable[[int, int], float] = (
        one_cycle(recipe.lr, recipe.warmup) if recipe.schedule == "onecycle" else recipe.schedule
    )
    hist = fit(
        surrogate,
        inputs,
        tgt,
        loss_fn=loss_fn,
        steps=recipe.steps_for(len(inputs)),
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
        augment=recipe.augmenter(),
        schedule=schedule,
        seed=seed,
        device=device,
    )
    return hist.epoch_loss


def is_label_only(oracle: Oracle) -> bool:
    return oracle.output is OutputKind.LABEL
