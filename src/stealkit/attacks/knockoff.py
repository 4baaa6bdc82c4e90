"""Knockoff Nets: stealing functionality of black-box models.

Orekondy, Schiele and Fritz, CVPR 2019. https://arxiv.org/abs/1812.02766

The adversary buys the victim's answers on images from its own pool and trains a knockoff on
them. ``random`` draws pool images uniformly. ``adaptive`` draws them through a coarse-to-fine
hierarchy (root -> coarse groups -> leaves -> images) whose node preferences H are learned by the
gradient bandit algorithm (the paper's Eqs. 2-3):

    pi_t(z)         = exp(H_t(z)) / sum_z' exp(H_t(z'))
    H_{t+1}(z_t)    = H_t(z_t) + alpha (r_t - rbar_t) (1 - pi_t(z_t))
    H_{t+1}(z')     = H_t(z')  - alpha (r_t - rbar_t) pi_t(z')          for z' != z_t

with rewards for certainty (margin of the victim's top two), diversity (how far the answer lies
above the mean of recent answers), loss (knockoff vs victim cross-entropy) or all three, each
rescaled to [0, 1]. Queries go out in batches; the knockoff trains online while querying
(adaptive) and then offline on the whole transfer set with soft-label cross-entropy.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
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
from stealkit.data.pool import QueryPool
from stealkit.losses.classification import soft_cross_entropy
from stealkit.oracle.base import Oracle
from stealkit.train.loop import default_device, fit

log = logging.getLogger(__name__)

REWARDS = ("cert", "div", "loss", "all")


# --- the maths, as pure functions ---------------------------------------------------------------
def bandit_update(h: Tensor, action: int, reward: float, baseline: float, lr: float) -> Tensor:
    """One gradient-bandit step (Eqs. 2-3) on preferences ``h`` after taking ``action``."""
    pi = torch.softmax(h, dim=0)
    onehot = torch.zeros_like(h)
    onehot[action] = 1.0
    return h + lr * (reward - baseline) * (onehot - pi)


def certainty_reward(y: Tensor) -> Tensor:
    """P(top-1 | x) - P(top-2 | x) per row of victim probabilities (N, C)."""
    top2 = y.topk(2, dim=1).values
    return top2[:, 0] - top2[:, 1]


def diversity_reward(y: Tensor, recent_mean: Tensor) -> Tensor:
    """sum_k max(0, y_k - ybar_k): how far each answer rises above the mean of recent answers."""
    return (y - recent_mean.unsqueeze(0)).clamp_min(0.0).sum(dim=1)


def loss_reward(y: Tensor, knockoff_logits: Tensor) -> Tensor:
    """Cross-entropy of the knockoff's prediction against the victim's answer, per row."""
    return -(y * F.log_softmax(knockoff_logits, dim=1)).sum(dim=1)


def transfer_set_composition(answers: Tensor, pool_labels: Tensor | None) -> dict[str, list[float]]:
    """What a transfer set holds: the share of each victim top-1 class among the answers, and
    the share of each of the pool's own classes among the images bought (when it has labels)."""
    out = {
        "victim_label_share": (
            torch.bincount(answers.argmax(1), minlength=answers.shape[1]) / len(answers)
        ).tolist()
    }
    if pool_labels is not None:
        out["pool_label_share"] = (torch.bincount(pool_labels) / len(pool_labels)).tolist()
    return out


# --- the hierarchy ------------------------------------------------------------------------------
@dataclass
class Hierarchy:
    """root -> ``groups[g]`` (lists of leaf ids) -> ``leaves[l]`` (pool indices)."""

    groups: list[list[int]]
    leaves: list[Tensor]


def build_hierarchy(
    pool: QueryPool, *, n_leaves: int = 10, n_groups: int = 3, seed: int = 0, max_fit: int = 5000
) -> Hierarchy:
    """Leaves are the pool's own classes, or k-means clusters of downsampled pixels when it has
    none; groups are k-means clusters of the leaves' mean images (coarse to fine)."""
    from sklearn.cluster import KMeans

    g = torch.Generator().manual_seed(seed)
    small = F.adaptive_avg_pool2d(pool.dataset.images(), 8).flatten(1).numpy()
    if pool.labels is not None:
        lab = pool.labels.numpy()
    else:
        fit_idx = torch.randperm(len(pool), generator=g)[:max_fit].numpy()
        km = KMeans(n_clusters=n_leaves, n_init=3, random_state=seed).fit(small[fit_idx])
        lab = km.predict(small)
    ids = sorted(set(lab.tolist()))
    leaves = [torch.from_numpy(np.flatnonzero(lab == i)) for i in ids]
    centroids = np.stack([small[leaf.numpy()].mean(0) for leaf in leaves])
    k = max(1, min(n_groups, len(leaves)))
    gl = (
        KMeans(n_clusters=k, n_init=5, random_state=seed).fit_predict(centroids)
        if k > 1
        else np.zeros(len(leaves), int)
    )
    groups = [[i for i in range(len(leaves)) if gl[i] == c] for c in range(k)]
    return Hierarchy([grp for grp in groups if grp], leaves)


class _Policy:
    """Per-node preferences, sampling down the tree and without replacement within leaves."""

    def __init__(self, tree: Hierarchy, gen: torch.Generator) -> None:
        self.tree, self.gen = tree, gen
        self.h_root = torch.zeros(len(tree.groups))
        self.h_group = [torch.zeros(len(grp)) for grp in tree.groups]
        self.unused = [
            leaf[torch.randperm(len(leaf), generator=gen)].tolist() for leaf in tree.leaves
        ]

    def _alive(self, g: int) -> list[bool]:
        return [len(self.unused[leaf]) > 0 for leaf in self.tree.groups[g]]

    def _sample(self, h: Tensor, alive: list[bool]) -> int:
        masked = h.masked_fill(~torch.tensor(alive), float("-inf"))
        return int(torch.multinomial(torch.softmax(masked, 0), 1, generator=self.gen))

    def draw(self) -> tuple[int, int, int]:
        """(group, position of the leaf in the group, pool index)."""
        root_alive = [any(self._alive(g)) for g in range(len(self.tree.groups))]
        if not any(root_alive):
            raise ValueError("the query pool is exhausted; use a larger pool or a smaller budget")
        g = self._sample(self.h_root, root_alive)
        j = self._sample(self.h_group[g], self._alive(g))
        return g, j, self.unused[self.tree.groups[g][j]].pop()

    def update(self, g: int, j: int, reward: float, baseline: float, lr: float) -> None:
        self.h_root = bandit_update(self.h_root, g, reward, baseline, lr)
        self.h_group[g] = bandit_update(self.h_group[g], j, reward, baseline, lr)


# --- the attack ---------------------------------------------------------------------------------
class KnockoffNets(Attack):
    """Knockoff Nets with a random or adaptive (gradient-bandit) transfer set.

    Args:
        strategy: "random" or "adaptive".
        reward: "cert", "div", "loss" or "all" (adaptive only).
        query_batch: inputs sent per oracle call.
        bandit_lr: alpha of the gradient bandit.
        diversity_window: answers averaged for the diversity reward's mean.
        online_steps: knockoff updates after each bought batch (adaptive uses them for its loss
            reward); 0 trains only offline.
        n_groups: coarse groups of the hierarchy.
        recipe: offline training of the knockoff on the whole transfer set.

    Example:
        >>> attack = KnockoffNets(strategy="adaptive", reward="all")
        >>> result = attack.run(oracle, pool=pool, surrogate=build_model("lenet5", ...), budget=5000)
    """

    def __init__(
        self,
        *,
        strategy: str = "random",
        reward: str = "all",
        query_batch: int = 64,
        bandit_lr: float = 0.1,
        diversity_window: int = 25,
        online_steps: int = 2,
        n_groups: int = 3,
        recipe: TrainRecipe | None = None,
    ) -> None:
        if strategy not in ("random", "adaptive"):
            raise ValueError(f"strategy must be 'random' or 'adaptive', got {strategy!r}")
        if reward not in REWARDS:
            raise ValueError(f"reward must be one of {REWARDS}, got {reward!r}")
        if (
            query_batch < 1
            or bandit_lr <= 0
            or diversity_window < 1
            or online_steps < 0
            or n_groups < 1
        ):
            raise ValueError(
                "query_batch, bandit_lr, diversity_window, n_groups must be positive; online_steps >= 0"
            )
        self.strategy, self.reward = strategy, reward
        self.query_batch, self.bandit_lr = query_batch, bandit_lr
        self.diversity_window, self.online_steps, self.n_groups = (
            diversity_window,
            online_steps,
            n_groups,
        )
        self.recipe = recipe or TrainRecipe()

    def __repr__(self) -> str:
        return (
            f"KnockoffNets(strategy={self.strategy!r}, reward={self.reward!r}, "
            f"query_batch={self.query_batch}, bandit_lr={self.bandit_lr}, "
            f"online_steps={self.online_steps}, n_groups={self.n_groups}, recipe={self.recipe})"
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
        start = oracle.ledger.spent
        hard = is_label_only(oracle) or self.recipe.hard_labels
        if self.strategy == "random":
            xs, ys, history, idx = self._random(oracle, pool, budget, gen)
        else:
            xs, ys, history, idx = self._adaptive(oracle, pool, budget, gen, surrogate, dev, hard)
        x, y = torch.cat(xs), torch.cat(ys)
        losses = train_surrogate(surrogate, x, y, self.recipe, hard=hard, seed=seed, device=dev)
        if monitor is not None:
            monitor(surrogate, oracle.ledger.spent - start)
        return AttackResult(
            surrogate=surrogate.eval(),
            queries=oracle.ledger.spent - start,
            history=history,
            info={
                "transfer_set": len(x),
                "final_train_loss": losses[-1] if losses else float("nan"),
                **transfer_set_composition(y, None if pool.labels is None else pool.labels[idx]),
            },
        )

    def _random(self, oracle: Oracle, pool: QueryPool, budget: int, gen: torch.Generator):
        order = torch.randperm(len(pool), generator=gen)[:budget]
        xs, ys = [], []
        for i in range(0, budget, self.query_batch):
            x = pool.images(order[i : i + self.query_batch])
            xs.append(x)
            ys.append(training_targets(oracle.query(x)))
        return xs, ys, [], order

    def _adaptive(self, oracle, pool, budget, gen, surrogate, dev, hard):
        tree = build_hierarchy(
            pool, n_groups=self.n_groups, seed=int(torch.randint(1 << 30, (1,), generator=gen))
        )
        policy = _Policy(tree, gen)
        opt = torch.optim.Adam(surrogate.parameters(), lr=self.recipe.lr)
        xs: list[Tensor] = []
        ys: list[Tensor] = []
        recent: list[Tensor] = []
        seen: dict[str, list[float]] = {"cert": [], "div": [], "loss": []}
        reward_sum, reward_n = 0.0, 0
        history: list[dict[str, float]] = []
        picked: list[int] = []
        spent = 0
        while spent < budget:
            n = min(self.query_batch, budget - spent)
            draws = [policy.draw() for _ in range(n)]
            idx = torch.tensor([d[2] for d in draws])
            picked.extend(idx.tolist())
            x = pool.images(idx)
            surrogate.eval()
            with torch.no_grad():
                logits = surrogate(x.to(dev)).float().cpu()
            y = training_targets(oracle.query(x))
            spent += n
            window = (
                torch.cat(recent)[-self.diversity_window :] if recent else y.mean(0, keepdim=True)
            )
            raw = {
                "cert": certainty_reward(y),
                "div": diversity_reward(y, window.mean(0)),
                "loss": loss_reward(y, logits),
            }
            rewards = self._combine(raw, seen)
            for (g, j, _), r in zip(draws, rewards.tolist(), strict=True):
                baseline = reward_sum / reward_n if reward_n else 0.0
                policy.update(g, j, r, baseline, self.bandit_lr)
                reward_sum += r
                reward_n += 1
            xs.append(x)
            ys.append(y)
            recent.append(y)
            recent = recent[-max(1, self.diversity_window // max(n, 1) + 1) :]
            if self.online_steps:
                self._online(surrogate, xs, ys, gen, opt, dev, hard)
            history.append({"queries": float(spent), "mean_reward": float(rewards.mean())})
        return xs, ys, history, torch.tensor(picked)

    def _combine(self, raw: dict[str, Tensor], seen: dict[str, list[float]]) -> Tensor:
        for k, v in raw.items():
            seen[k].extend([float(v.min()), float(v.max())])
        if self.reward != "all":
            return raw[self.reward]
        total = torch.zeros_like(raw["cert"])
        for k, v in raw.items():
            lo, hi = min(seen[k]), max(seen[k])
            total += (v - lo) / (hi - lo) if hi > lo else torch.zeros_like(v)
        return total / 3.0

    def _online(self, surrogate, xs, ys, gen, opt, dev, hard) -> None:
        x_new, y_new = xs[-1], ys[-1]
        if len(xs) > 1:
            past_x, past_y = torch.cat(xs[:-1]), torch.cat(ys[:-1])
            pick = torch.randint(len(past_x), (len(x_new),), generator=gen)
            x_new, y_new = torch.cat([x_new, past_x[pick]]), torch.cat([y_new, past_y[pick]])
        t = y_new.argmax(1) if hard else y_new
        lf = F.cross_entropy if hard else soft_cross_entropy
        fit(
            surrogate,
            x_new,
            t,
            loss_fn=lf,
            steps=self.online_steps,
            batch_size=len(x_new),
            schedule="constant",
            optimizer_state=opt,
            seed=int(torch.randint(1 << 30, (1,), generator=gen)),
            device=dev,
        )
