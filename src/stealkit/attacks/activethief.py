"""ActiveThief: model extraction by pool-based active learning on unannotated public data.

Pal, Gupta, Shukla, Kanade, Shevade and Ganapathy, "ActiveThief: Model Extraction Using Active
Learning and Unannotated Public Data", AAAI 2020; the authors' longer preprint: "A framework
for the extraction of Deep Neural Networks by leveraging public data",
https://arxiv.org/abs/1905.09165

A random seed set S_0 of the pool is bought (``initial_fraction`` of the budget); then for
rounds r = 1..R the substitute F is trained on everything bought and the next k_r unbought pool
images are chosen by a strategy reading F's outputs p = softmax(F(x)):

    random        k uniformly drawn images
    entropy       the k highest  H(p) = -sum_c p_c log p_c           (uncertainty)
    kcenter       greedy k-center on p (Sener and Savarese, ICLR 2018): with the bought set as
                  centres, repeatedly take  argmax_x min_{c in centres} ||p(x) - p(c)||_2  and make
                  it a centre                                        (diversity)
    dfal          the k smallest DeepFool perturbations ||r(x)||_2 on F (Ducoffe and Precioso,
                  arXiv:1802.09841): closest to F's decision boundary
    dfal-kcenter  DFAL pre-selects ``preselect * k`` images, k-center picks k of them

DeepFool (Moosavi-Dezfooli, Fawzi and Frossard, CVPR 2016), from x_0 = x with k^ = argmax F(x),
until the class changes or ``steps`` iterations, on logits f:

    w'_k = grad f_k(x_i) - grad f_k^(x_i),   f'_k = f_k(x_i) - f_k^(x_i)     (k != k^)
    l    = argmin_k |f'_k| / ||w'_k||,       r_i = |f'_l| / ||w'_l||^2  w'_l,   x_{i+1} = x_i + r_i
    ||r(x)|| = (1 + overshoot) ||sum_i r_i||

The final substitute is trained on every image bought (the shared ``TrainRecipe``); each pool
image is bought at most once and the run spends exactly the budget.

Not verified: the size of DFAL's pre-selection (here ``preselect * k``); whether the paper
retrains from scratch each round (``from_scratch``, default True) and its early stopping on a
bought validation split (not done here: every bought image trains the substitute).
"""

from __future__ import annotations

import copy
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
    pool_spend_limit,
    train_surrogate,
    training_targets,
)
from stealkit.attacks.jbda import as_recipe
from stealkit.data.pool import QueryPool
from stealkit.oracle.base import Oracle
from stealkit.train.loop import default_device

log = logging.getLogger(__name__)

STRATEGIES = ("random", "entropy", "kcenter", "dfal", "dfal-kcenter")


# --- the maths, as pure functions ---------------------------------------------------------------
def round_sizes(budget: int, initial: int, rounds: int) -> list[int]:
    """Images bought per round after the seed set: ``budget - initial`` split as evenly as
    possible over ``rounds`` (earlier rounds take the remainder), empty rounds dropped."""
    rest = budget - initial
    q, r = divmod(rest, rounds)
    return [q + (i < r) for i in range(rounds) if q + (i < r) > 0]


def entropy(probs: Tensor) -> Tensor:
    """H(p) = -sum_c p_c log p_c per row (0 log 0 = 0)."""
    return -(probs * torch.log(probs.clamp_min(1e-12))).sum(dim=1)


def entropy_pick(probs: Tensor, k: int) -> Tensor:
    """Indices of the ``k`` rows of ``probs`` (N, C) with the highest entropy, highest first."""
    return entropy(probs).topk(min(k, len(probs))).indices


def _min_dist(points: Tensor, centres: Tensor, chunk: int = 512) -> Tensor:
    """min_c ||points_i - centres_c||_2 per point (inf with no centres), in chunks of centres."""
    best = torch.full((len(points),), float("inf"))
    for i in range(0, len(centres), chunk):
        d = torch.cdist(points, centres[i : i + chunk]).min(dim=1).values
        best = torch.minimum(best, d)
    return best


def kcenter_greedy(bought: Tensor, candidates: Tensor, k: int) -> Tensor:
    """Greedy k-center: ``k`` distinct indices into ``candidates`` (N, D), each the candidate
    farthest from its nearest centre, centres being ``bought`` (M, D) and the picks so far.
    Ties go to the lowest index; with no bought points the first pick is candidate 0."""
    if k > len(candidates):
        raise ValueError(f"cannot pick {k} of {len(candidates)} candidates")
    cand = candidates.float()
    dist = _min_dist(cand, bought.float())
    picks: list[int] = []
    for _ in range(k):
        j = int(dist.argmax())
        picks.append(j)
        dist = torch.minimum(dist, (cand - cand[j]).norm(dim=1))
        dist[j] = -1.0  # never again, even when duplicates leave it at distance 0
    return torch.tensor(picks, dtype=torch.long)


def deepfool_norms(model: nn.Module, x: Tensor, steps: int, *, overshoot: float = 0.02) -> Tensor:
    """||r(x)||_2 of DeepFool on ``model``'s logits, per row of ``x`` (N, C, H, W); rows whose
    class has not changed after ``steps`` iterations keep the perturbation reached so far.
    Evaluated in eval mode; the model's mode is restored."""
    was_training = model.training
    model.eval()
    try:
        x0 = x.detach()
        r = torch.zeros_like(x0)
        with torch.no_grad():
            k0 = model(x0).argmax(dim=1)
        live = torch.arange(len(x0), device=x0.device)  # rows still on their first class
        for _ in range(steps):
            xi = (x0[live] + (1 + overshoot) * r[live]).requires_grad_(True)
            f = model(xi)
            still = f.argmax(dim=1) == k0[live]
            if not bool(still.any()):
                break
            # only the rows that have not crossed yet take a step (and cost gradients)
            live, k_live, f = live[still], k0[live][still], f[still]
            grads = torch.stack(
                [
                    torch.autograd.grad(f[:, c].sum(), xi, retain_graph=True)[0][still]
                    for c in range(f.shape[1])
                ],
                dim=1,
            )  # (n, C, ...)
            rows = torch.arange(len(live), device=x0.device)
            w = (grads - grads[rows, k_live].unsqueeze(1)).flatten(2)  # (n, C, D)
            fd = (f - f[rows, k_live].unsqueeze(1)).detach().abs()  # (n, C)
            wn = w.norm(dim=2).clamp_min(1e-12)
            ratio = (fd / wn).scatter(1, k_live.view(-1, 1), float("inf"))
            lbest = ratio.argmin(dim=1)
            step = (fd[rows, lbest] / wn[rows, lbest] ** 2).unsqueeze(1) * w[rows, lbest]
            r[live] = r[live] + step.view_as(r[live]).detach()
        return ((1 + overshoot) * r).flatten(1).norm(dim=1).detach()
    finally:
        model.train(was_training)


# --- the attack ---------------------------------------------------------------------------------
class ActiveThief(Attack):
    """ActiveThief's rounds of buy, train, pick.

    Args:
        strategy: one of "random", "entropy", "kcenter", "dfal", "dfal-kcenter".
        rounds: selection rounds after the seed set.
        initial_fraction: share of the budget bought as the random seed set (at least 1 image).
        candidates: unbought images scored per round (a random subset; None scores them all:
            DFAL costs ``steps * C`` gradient passes per image, so cap it on a large pool).
        deepfool_steps: DeepFool iterations (dfal, dfal-kcenter).
        preselect: dfal-kcenter keeps ``preselect * k`` DFAL picks for k-center to choose from.
        from_scratch: restore the surrogate's initial weights before each training.
        query_batch: inputs sent per oracle call.
        round_recipe: training of the substitute before each selection.
        recipe: the final training on everything bought.

    Example:
        >>> attack = ActiveThief(strategy="kcenter", rounds=5)
        >>> result = attack.run(oracle, pool=pool, surrogate=build_model("cnn3", ...), budget=5000)
    """

    def __init__(
        self,
        *,
        strategy: str = "kcenter",
        rounds: int = 5,
        initial_fraction: float = 0.1,
        candidates: int | None = None,
        deepfool_steps: int = 10,
        preselect: int = 4,
        from_scratch: bool = True,
        query_batch: int = 256,
        round_recipe: TrainRecipe | Mapping[str, Any] | None = None,
        recipe: TrainRecipe | None = None,
    ) -> None:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
        if rounds < 1:
            raise ValueError(f"rounds must be >= 1 (selection rounds after the seed), got {rounds}")
        if not 0.0 < initial_fraction < 1.0:
            raise ValueError(
                f"initial_fraction must lie in (0, 1) (share of the budget bought at random), "
                f"got {initial_fraction}"
            )
        if candidates is not None and candidates < 1:
            raise ValueError(
                f"candidates must be >= 1, or None to score the whole pool; got {candidates}"
            )
        if deepfool_steps < 1 or preselect < 1 or query_batch < 1:
            raise ValueError("deepfool_steps, preselect and query_batch must be >= 1")
        self.strategy, self.rounds, self.initial_fraction = strategy, rounds, initial_fraction
        self.candidates, self.deepfool_steps, self.preselect = candidates, deepfool_steps, preselect
        self.from_scratch, self.query_batch = from_scratch, query_batch
        self.round_recipe = as_recipe(round_recipe) or TrainRecipe(epochs=10, min_steps=200)
        self.recipe = recipe or TrainRecipe()

    def __repr__(self) -> str:
        return (
            f"ActiveThief(strategy={self.strategy!r}, rounds={self.rounds}, "
            f"initial_fraction={self.initial_fraction}, candidates={self.candidates}, "
            f"deepfool_steps={self.deepfool_steps}, preselect={self.preselect}, "
            f"from_scratch={self.from_scratch}, query_batch={self.query_batch}, "
            f"round_recipe={self.round_recipe}, recipe={self.recipe})"
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
        budget = pool_spend_limit(oracle, pool, budget)
        dev = torch.device(device) if device is not None else default_device()
        gen = torch.Generator().manual_seed(seed)
        hard = is_label_only(oracle)
        start = oracle.ledger.spent
        init = copy.deepcopy(surrogate.state_dict()) if self.from_scratch else None
        n0 = max(1, round(self.initial_fraction * budget))
        bought = torch.randperm(len(pool), generator=gen)[:n0]
        y = self._buy(oracle, pool, bought)
        history: list[dict[str, float]] = []
        for r, k in enumerate(round_sizes(budget, n0, self.rounds)):
            self._train(surrogate, init, pool, bought, y, self.round_recipe, hard, seed + r, dev)
            spent = oracle.ledger.spent - start
            history.append({"round": float(r), "queries": float(spent)})
            if monitor is not None:
                monitor(surrogate, spent)
            free = torch.ones(len(pool), dtype=torch.bool)
            free[bought] = False
            cand = free.nonzero().flatten()
            if self.candidates is not None and len(cand) > max(self.candidates, k):
                keep = torch.randperm(len(cand), generator=gen)[: max(self.candidates, k)]
                cand = cand[keep.sort().values]
            new = cand[self.select(surrogate, pool, bought, cand, k, gen, dev)]
            y = torch.cat([y, self._buy(oracle, pool, new)])
            bought = torch.cat([bought, new])
            log.debug("ActiveThief round %d: bought %d, %d in all", r, len(new), len(bought))
        final_seed = seed + self.rounds
        losses = self._train(surrogate, init, pool, bought, y, self.recipe, hard, final_seed, dev)
        if monitor is not None:
            monitor(surrogate, oracle.ledger.spent - start)
        return AttackResult(
            surrogate=surrogate.eval(),
            queries=oracle.ledger.spent - start,
            history=history,
            info={
                "transfer_set": len(bought),
                "final_train_loss": losses[-1] if losses else float("nan"),
                "label_histogram": torch.bincount(y.argmax(1), minlength=y.shape[1]).tolist(),
            },
        )

    def select(
        self,
        surrogate: nn.Module,
        pool: QueryPool,
        bought: Tensor,
        cand: Tensor,
        k: int,
        gen: torch.Generator,
        dev: torch.device,
    ) -> Tensor:
        """Positions in ``cand`` (pool indices) of the ``k`` images to buy next."""
        if self.strategy == "random":
            return torch.randperm(len(cand), generator=gen)[:k]
        if self.strategy == "entropy":
            return entropy_pick(self._probs(surrogate, pool, cand, dev), k)
        if self.strategy == "kcenter":
            return kcenter_greedy(
                self._probs(surrogate, pool, bought, dev),
                self._probs(surrogate, pool, cand, dev),
                k,
            )
        norms = self._deepfool(surrogate, pool, cand, dev)
        if self.strategy == "dfal":
            return norms.topk(k, largest=False).indices
        pre = norms.topk(min(len(cand), self.preselect * k), largest=False).indices
        chosen = kcenter_greedy(
            self._probs(surrogate, pool, bought, dev),
            self._probs(surrogate, pool, cand[pre], dev),
            k,
        )
        return pre[chosen]

    def _buy(self, oracle: Oracle, pool: QueryPool, idx: Tensor) -> Tensor:
        out = [
            training_targets(oracle.query(pool.images(idx[i : i + self.query_batch])))
            for i in range(0, len(idx), self.query_batch)
        ]
        return torch.cat(out)

    def _train(
        self,
        surrogate: nn.Module,
        init: dict[str, Tensor] | None,
        pool: QueryPool,
        idx: Tensor,
        y: Tensor,
        recipe: TrainRecipe,
        hard: bool,
        seed: int,
        dev: torch.device,
    ) -> list[float]:
        if init is not None:
            surrogate.load_state_dict(init)
        return train_surrogate(
            surrogate, pool.images(idx), y, recipe, hard=hard, seed=seed, device=dev
        )

    @torch.no_grad()
    def _probs(
        self, surrogate: nn.Module, pool: QueryPool, idx: Tensor, dev: torch.device
    ) -> Tensor:
        surrogate.to(dev).eval()
        out = [
            surrogate(pool.images(idx[i : i + 1024]).to(dev)).float().softmax(dim=1).cpu()
            for i in range(0, len(idx), 1024)
        ]
        return torch.cat(out)

    def _deepfool(
        self, surrogate: nn.Module, pool: QueryPool, idx: Tensor, dev: torch.device
    ) -> Tensor:
        surrogate.to(dev)
        out = [
            deepfool_norms(
                surrogate, pool.images(idx[i : i + 256]).to(dev), self.deepfool_steps
            ).cpu()
            for i in range(0, len(idx), 256)
        ]
        return torch.cat(out)
