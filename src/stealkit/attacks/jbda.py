"""Jacobian-based dataset augmentation (JBDA) and its targeted randomised form (JBDA-TR).

JBDA: Papernot, McDaniel, Goodfellow, Jha, Celik and Swami, "Practical Black-Box Attacks against
Machine Learning", AsiaCCS 2017. https://arxiv.org/abs/1602.02697

The thief starts from a small seed set S_0 (here: ``seed_size`` images drawn from its pool),
buys the oracle's labels O(x), trains the substitute F, and for substitute epochs rho = 0, 1, ...
grows the set along the sign of the substitute's Jacobian for the class the oracle gave:

    S_{rho+1}  = S_rho  U  { clip(x + lambda_rho * sign(J_F(x)[O(x)])) : x in S_rho }
    lambda_rho = lambda * (-1)^floor(rho / tau)          (the periodic step of Section 6)

buying the labels of the new points and retraining F each time, so S doubles every epoch. The run
stops exactly at the budget: the last augmentation covers a random subset of S_rho, just large
enough to spend what is left. Papernot's reservoir sampling is optional: from epoch ``sigma`` on
only ``kappa`` randomly chosen points of S_rho are augmented per epoch.

JBDA-TR: Juuti, Szyller, Marchal and Asokan, "PRADA: Protecting Against DNN Model Stealing
Attacks", EuroS&P 2019. https://arxiv.org/abs/1805.02628 ("T-RND"): each point steps towards a
class t drawn uniformly from the classes other than O(x):

    x' = clip(x + lambda_rho * sign(J_F(x)[t])),   t ~ U({0..C-1} minus {O(x)})

Both learn from every class output: labels (the papers' setting, plain cross-entropy) or scores
(the shared soft-label loss); O(x) is the answer's top-1 class.

Not verified: J_F is taken of the substitute's logit (its softmax gives another direction; the
paper's text says "output"); whether PRADA flips lambda periodically for T-RND (preset "jbda-tr"
keeps it constant, ``tau=None``); the reservoir variant's exact choice of which kappa points
(here: uniform among S_rho). The substitute keeps its weights across epochs (trained with
``round_recipe`` each epoch, and with ``recipe`` once the budget is spent).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from stealkit.attacks.base import (
    Attack,
    AttackResult,
    Monitor,
    TrainRecipe,
    is_label_only,
    spend_limit,
    train_surrogate,
    training_targets,
)
from stealkit.data.pool import QueryPool
from stealkit.oracle.base import Oracle
from stealkit.train.loop import default_device

log = logging.getLogger(__name__)

VARIANTS = ("jbda", "jbda-tr")


# --- the maths, as pure functions ---------------------------------------------------------------
def lambda_schedule(rho: int, lam: float, tau: int | None) -> float:
    """lambda_rho = lambda * (-1)^floor(rho / tau); constant ``lam`` when ``tau`` is None."""
    if tau is None:
        return lam
    return lam * (-1.0) ** (rho // tau)


def jacobian_step(surrogate: nn.Module, x: Tensor, classes: Tensor, lam: float) -> Tensor:
    """x + lam * sign(d F_c(x) / dx) per row, F_c the surrogate's logit of ``classes[i]``
    (unclipped). Evaluated in eval mode (rows independent, no batch-norm updates); the surrogate's
    mode and parameter gradients are left as they were."""
    was_training = surrogate.training
    surrogate.eval()
    try:
        xg = x.detach().clone().requires_grad_(True)
        chosen = surrogate(xg).gather(1, classes.view(-1, 1).to(xg.device)).sum()
        (grad,) = torch.autograd.grad(chosen, xg)
    finally:
        surrogate.train(was_training)
    return (xg + lam * grad.sign()).detach()


def random_other_classes(labels: Tensor, num_classes: int, generator: torch.Generator) -> Tensor:
    """For each label y, a class drawn uniformly from the ``num_classes - 1`` classes != y."""
    if num_classes < 2:
        raise ValueError("a targeted step needs at least 2 classes")
    shift = torch.randint(1, num_classes, labels.shape, generator=generator)
    return (labels.cpu() + shift) % num_classes


def as_recipe(recipe: TrainRecipe | Mapping[str, Any] | None) -> TrainRecipe | None:
    """A ``TrainRecipe`` from a config's dict (``build_attack`` converts only ``recipe``)."""
    return TrainRecipe(**recipe) if isinstance(recipe, Mapping) else recipe


# --- the attack ---------------------------------------------------------------------------------
class JBDA(Attack):
    """Papernot's substitute training by Jacobian-based augmentation, or PRADA's T-RND variant.

    Args:
        variant: "jbda" (step along the oracle's class) or "jbda-tr" (towards a random other one).
        seed_size: S_0 is ``seed_size`` pool images drawn with the run's seed (the paper: 150
            test images of the victim's task), so a pool sorted by class still gives every class.
        lam: the step lambda (the paper: 0.1 of the [0, 1] range; scaled to the spec's range).
        tau: the sign of lambda flips every ``tau`` epochs; None keeps it constant.
        reservoir: kappa, points augmented per epoch from epoch ``reservoir_after`` on; None
            augments all of S_rho (plain JBDA).
        reservoir_after: sigma, the first epoch that uses the reservoir.
        query_batch: inputs sent per oracle call.
        round_recipe: training of the substitute after each purchase but the last.
        recipe: training once the budget is spent (on the whole set).

    Example:
        >>> attack = JBDA(variant="jbda", seed_size=150)
        >>> result = attack.run(oracle, pool=pool, surrogate=build_model("cnn3", ...), budget=5000)
    """

    buys_pool_images = False  # the pool gives S_0 only; later queries are synthetic

    def __init__(
        self,
        *,
        variant: str = "jbda",
        seed_size: int = 150,
        lam: float = 0.1,
        tau: int | None = 3,
        reservoir: int | None = None,
        reservoir_after: int = 3,
        query_batch: int = 256,
        round_recipe: TrainRecipe | Mapping[str, Any] | None = None,
        recipe: TrainRecipe | None = None,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if seed_size < 1:
            raise ValueError(f"seed_size must be >= 1 (images in S_0), got {seed_size}")
        if not lam > 0:
            raise ValueError(f"lam must be > 0 (flip its sign with tau), got {lam}")
        if tau is not None and tau < 1:
            raise ValueError(f"tau must be >= 1 or None for a constant step, got {tau}")
        if reservoir is not None and reservoir < 1:
            raise ValueError(f"reservoir (kappa) must be >= 1 or None, got {reservoir}")
        if reservoir_after < 0 or query_batch < 1:
            raise ValueError("reservoir_after must be >= 0 and query_batch >= 1")
        self.variant, self.seed_size, self.lam, self.tau = variant, seed_size, lam, tau
        self.reservoir, self.reservoir_after, self.query_batch = (
            reservoir,
            reservoir_after,
            query_batch,
        )
        self.round_recipe = as_recipe(round_recipe) or TrainRecipe(epochs=10, min_steps=100)
        self.recipe = recipe or TrainRecipe()

    def __repr__(self) -> str:
        return (
            f"JBDA(variant={self.variant!r}, seed_size={self.seed_size}, lam={self.lam}, "
            f"tau={self.tau}, reservoir={self.reservoir}, reservoir_after={self.reservoir_after}, "
            f"query_batch={self.query_batch}, round_recipe={self.round_recipe}, "
            f"recipe={self.recipe})"
        )

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
        pool = self.require_pool(pool)
        self.check_oracle(oracle)
        budget = spend_limit(oracle, budget)
        if self.seed_size > len(pool):
            raise ValueError(
                f"seed_size {self.seed_size} exceeds the {len(pool)} images in pool {pool.name!r}"
            )
        dev = torch.device(device) if device is not None else default_device()
        gen = torch.Generator().manual_seed(seed)
        hard = is_label_only(oracle)
        lo, hi = oracle.input_spec.value_range
        start = oracle.ledger.spent
        # S_0: a seeded random draw from the pool (a pool sorted by class stays fair)
        x = pool.images(torch.randperm(len(pool), generator=gen)[: min(self.seed_size, budget)])
        y = self._buy(oracle, x)
        history: list[dict[str, float]] = []
        rho = 0
        while True:
            spent = oracle.ledger.spent - start
            last = spent >= budget
            recipe = self.recipe if last else self.round_recipe
            losses = train_surrogate(
                surrogate, x, y, recipe, hard=hard, seed=seed + rho, device=dev
            )
            history.append({"epoch": float(rho), "queries": float(spent), "set": float(len(x))})
            if monitor is not None:
                monitor(surrogate, spent)
            if last:
                break
            n = len(x)
            if self.reservoir is not None and rho >= self.reservoir_after:
                n = min(n, self.reservoir)
            n = min(n, budget - spent)
            pick = torch.randperm(len(x), generator=gen)[:n].sort().values if n < len(x) else None
            base, labels = (x, y) if pick is None else (x[pick], y[pick])
            classes = labels.argmax(1)
            if self.variant == "jbda-tr":
                classes = random_other_classes(classes, y.shape[1], gen)
            step = lambda_schedule(rho, self.lam, self.tau) * (hi - lo)
            new = self._augment(surrogate, base, classes, step, dev).clamp(lo, hi)
            x, y = torch.cat([x, new]), torch.cat([y, self._buy(oracle, new)])
            log.debug("JBDA epoch %d: bought %d, set %d", rho, len(new), len(x))
            rho += 1
        return AttackResult(
            surrogate=surrogate.eval(),
            queries=oracle.ledger.spent - start,
            history=history,
            info={
                "transfer_set": len(x),
                "substitute_epochs": rho,
                "final_train_loss": losses[-1] if losses else float("nan"),
                "label_histogram": torch.bincount(y.argmax(1), minlength=y.shape[1]).tolist(),
            },
        )

    def _buy(self, oracle: Oracle, x: Tensor) -> Tensor:
        out = [
            training_targets(oracle.query(x[i : i + self.query_batch]))
            for i in range(0, len(x), self.query_batch)
        ]
        return torch.cat(out)

    def _augment(
        self, surrogate: nn.Module, x: Tensor, classes: Tensor, lam: float, dev: torch.device
    ) -> Tensor:
        surrogate.to(dev)
        out = [
            jacobian_step(surrogate, x[i : i + 512].to(dev), classes[i : i + 512], lam).cpu()
            for i in range(0, len(x), 512)
        ]
        return torch.cat(out)
