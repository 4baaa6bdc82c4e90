"""Knockoff Nets: stealing functionality of black-box models.

Orekondy, Schiele and Fritz, CVPR 2019. https://arxiv.org/abs/1812.02766

The adversary buys the victim's answers on images from its own pool and trains a knockoff on
them. ``random`` draws pool images uniformly. ``adaptive`` draws them through a coarse-to-fine
hierarchy (root -> coarse groups -> leaves -> images; Sec. 4.1.2) whose node preferences H are
learned by the gradient bandit algorithm (Eqs. 2-3), one backward pass per reward, at every node
on the drawn path and its siblings:

    pi_t(z)         = exp(H_t(z)) / sum_{z' siblings} exp(H_t(z'))
    H_{t+1}(z_t)    = H_t(z_t) + alpha (r_t - rbar_t) (1 - pi_t(z_t))
    H_{t+1}(z')     = H_t(z')  - alpha (r_t - rbar_t) pi_t(z')          for z' != z_t
    alpha           = 1 / N(z_t)        N(z): times node z was drawn (this draw included)
    rbar_t          = mean(r_{t-Delta}, ..., r_{t-1})           (r_1 at t = 1: no step)
    H_0             : every leaf equally likely; with one coarse level, H_0(group) = log #leaves

(The paper prints Eq. 3 with a plus sign; the minus is Sutton and Barto's gradient bandit, which
the paper cites.) Rewards: certainty R_cert = P(k1|x) - P(k2|x) (Eq. 4), diversity
R_div = sum_k max(0, y_k - ybar_k) over the last Delta answers (Eq. 5), loss R_L = CE(y, y_hat)
(Eq. 6); with ``reward="all"`` each is rescaled to [0, 1] by its min and max over the last Delta
time steps and the three are summed. The leaves are the pool's labels (k-means clusters of pixels
when it has none); the parents are the label's source when the pool's class names read
``source:class`` (the paper's D^2: "we add as parents the dataset the images belong to"), else
k-means clusters of the leaves' mean images. The knockoff trains online while querying (for the
loss reward), then offline on the whole transfer set with soft-label cross-entropy, starting from
the same initial weights as ``random`` (the surrogate as passed in).

Options that keep this code's earlier behaviour (all off by default): ``bandit_lr=<float>`` (a
constant step), ``baseline="all-time"`` (mean of every past reward), ``rescale="all-time"`` (min and
max of every reward seen), ``init="zeros"`` (zero preferences: leaves of small groups favoured),
``warm_start=True`` (offline training continues from the online weights). The earlier code also
averaged the three rescaled rewards instead of summing them: ``bandit_lr=0.1 / 3`` with the options
above reproduces its steps.

Not verified from the paper: whether rbar_t and the rescaling window include the current step
(here the baseline excludes it, the rescaling window includes it; a flat window rescales to 0.5);
whether single rewards are rescaled (here only "all" is); the paper draws one action per time step
and returns a sample of images from it, here each image is one action (and one time step), with
``query_batch`` images bought per oracle call and the bandit updated image by image after it.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
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
WINDOWED = ("window", "all-time")
INITS = ("uniform-leaves", "zeros")
HIERARCHIES = ("auto", "kmeans")


# --- the maths, as pure functions ---------------------------------------------------------------
def bandit_update(h: Tensor, action: int, reward: float, baseline: float, lr: float) -> Tensor:
    """One gradient-bandit step (Eqs. 2-3) on preferences ``h`` after taking ``action``."""
    pi = torch.softmax(h, dim=0)
    onehot = torch.zeros_like(h)
    onehot[action] = 1.0
    return h + lr * (reward - baseline) * (onehot - pi)


def windowed_baseline(past: Sequence[float], window: int, current: float) -> float:
    """rbar_t: the mean of the last ``window`` past rewards; ``current`` when there are none."""
    recent = past[-window:]
    return float(np.mean(recent)) if len(recent) else current


def rescale_in_window(series: Tensor, window: int) -> Tensor:
    """Each r_t of a 1-D series rescaled to [0, 1] by the min and max of r_{t-window+1..t};
    0.5 where that window is flat."""
    pad = torch.cat([series[:1].expand(window - 1), series])  # series[0] is in every early window
    win = pad.unfold(0, window, 1)
    lo, hi = win.min(1).values, win.max(1).values
    span = hi - lo
    return torch.where(span > 0, (series - lo) / span.clamp_min(1e-12), torch.full_like(span, 0.5))


def uniform_leaf_preferences(groups: Sequence[Sequence[int]]) -> Tensor:
    """H_0 of the coarse level: log #leaves per group, so that every leaf starts equally likely
    (pi(group) * pi(leaf | group) = n_g / L * 1 / n_g)."""
    return torch.log(torch.tensor([float(len(g)) for g in groups]))


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


def source_of(name: str) -> str | None:
    """The source of a ``source:class`` label name (None without one)."""
    return name.split(":", 1)[0] if ":" in name else None


def transfer_set_composition(
    answers: Tensor, pool_labels: Tensor | None, classes: Sequence[str] | None = None
) -> dict[str, object]:
    """What a transfer set holds: the share of each victim top-1 class among the answers, the
    share of each of the pool's own classes among the images bought (when it has labels), and
    of each source (when its class names read ``source:class``)."""
    out: dict[str, object] = {
        "victim_label_share": (
            torch.bincount(answers.argmax(1), minlength=answers.shape[1]) / len(answers)
        ).tolist()
    }
    if pool_labels is not None:
        n = max(len(classes) if classes else 0, int(pool_labels.max()) + 1)
        out["pool_label_share"] = (
            torch.bincount(pool_labels, minlength=n) / len(pool_labels)
        ).tolist()
        sources = [source_of(c) for c in classes] if classes else []
        if sources and all(sources):
            share: dict[str, float] = dict.fromkeys(sorted(set(map(str, sources))), 0.0)
            for lab, count in enumerate(torch.bincount(pool_labels, minlength=n).tolist()):
                share[str(sources[lab])] += count / len(pool_labels)
            out["pool_source_share"] = share
    return out


# --- the hierarchy ------------------------------------------------------------------------------
@dataclass
class Hierarchy:
    """root -> ``groups[g]`` (lists of leaf ids) -> ``leaves[l]`` (pool indices); ``names`` of
    the groups (sources, or "cluster<k>") and ``leaf_names`` (class names, or "leaf<l>")."""

    groups: list[list[int]]
    leaves: list[Tensor]
    names: list[str] | None = None
    leaf_names: list[str] | None = None


def build_hierarchy(
    pool: QueryPool,
    *,
    n_leaves: int = 10,
    n_groups: int = 3,
    seed: int = 0,
    max_fit: int = 5000,
    by: str = "auto",
) -> Hierarchy:
    """Leaves are the pool's own classes, or k-means clusters of downsampled pixels when it has
    none. Groups are the classes' sources when ``by="auto"`` and every class name reads
    ``source:class`` (two sources at least), else k-means clusters of the leaves' mean images."""
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
    classes = pool.dataset.classes if pool.labels is not None else None
    leaf_names = [classes[i] for i in ids] if classes else [f"leaf{i}" for i in ids]
    sources = [source_of(nm) for nm in leaf_names] if classes else []
    if by == "auto" and sources and all(sources) and len(set(sources)) > 1:
        names = sorted({str(s) for s in sources})
        groups = [[i for i, s in enumerate(sources) if s == nm] for nm in names]
        return Hierarchy(groups, leaves, names, leaf_names)
    centroids = np.stack([small[leaf.numpy()].mean(0) for leaf in leaves])
    k = max(1, min(n_groups, len(leaves)))
    gl = (
        KMeans(n_clusters=k, n_init=5, random_state=seed).fit_predict(centroids)
        if k > 1
        else np.zeros(len(leaves), int)
    )
    kept = [c for c in range(k) if (gl == c).any()]
    groups = [[i for i in range(len(leaves)) if gl[i] == c] for c in kept]
    return Hierarchy(groups, leaves, [f"cluster{c}" for c in kept], leaf_names)


class HierarchicalBandit:
    """Node preferences H and draw counts N of a two-level tree; draws go down the tree, without
    replacement within leaves; ``update`` is the backward pass of Eqs. 2-3 with alpha = 1/N(z)
    (or the constant ``lr``)."""

    def __init__(
        self,
        tree: Hierarchy,
        gen: torch.Generator,
        *,
        lr: float | None = None,
        init: str = "uniform-leaves",
    ) -> None:
        self.tree, self.gen, self.lr = tree, gen, lr
        zeros = torch.zeros(len(tree.groups))
        self.h_root = uniform_leaf_preferences(tree.groups) if init == "uniform-leaves" else zeros
        self.h_group = [torch.zeros(len(grp)) for grp in tree.groups]
        self.n_root = [0] * len(tree.groups)
        self.n_group = [[0] * len(grp) for grp in tree.groups]
        self.unused = [
            leaf[torch.randperm(len(leaf), generator=gen)].tolist() for leaf in tree.leaves
        ]

    def group_probabilities(self) -> Tensor:
        return torch.softmax(self.h_root, 0)

    def leaf_probabilities(self) -> Tensor:
        """P(leaf) for every leaf id (ignoring exhausted leaves)."""
        out = torch.zeros(len(self.tree.leaves))
        for g, (grp, pg) in enumerate(
            zip(self.tree.groups, self.group_probabilities(), strict=True)
        ):
            out[grp] = pg * torch.softmax(self.h_group[g], 0)
        return out

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

    def update(self, g: int, j: int, reward: float, baseline: float) -> None:
        self.n_root[g] += 1
        self.n_group[g][j] += 1
        a_root = self.lr if self.lr is not None else 1.0 / self.n_root[g]
        a_leaf = self.lr if self.lr is not None else 1.0 / self.n_group[g][j]
        self.h_root = bandit_update(self.h_root, g, reward, baseline, a_root)
        self.h_group[g] = bandit_update(self.h_group[g], j, reward, baseline, a_leaf)


# --- the attack ---------------------------------------------------------------------------------
class KnockoffNets(Attack):
    """Knockoff Nets with a random or adaptive (gradient-bandit) transfer set.

    Args:
        strategy: "random" or "adaptive".
        reward: "cert", "div", "loss" or "all" (adaptive only).
        query_batch: inputs sent per oracle call.
        bandit_lr: None for the paper's alpha = 1/N(z); a float for a constant step.
        window: Delta, the time steps (images) behind the diversity mean, the reward baseline and
            the rescaling of "all".
        baseline: "window" (the paper) or "all-time" (mean of every past reward).
        rescale: "window" (the paper) or "all-time" (min/max of every reward seen), for "all".
        init: "uniform-leaves" (the paper: every leaf equally likely) or "zeros".
        warm_start: offline training continues from the online weights (else, as the paper's
            knockoff, from the surrogate's initial weights, those ``random`` trains from).
        online_steps: knockoff updates after each bought batch (adaptive uses them for its loss
            reward); 0 trains only offline.
        n_groups: coarse groups of the hierarchy when they come from k-means.
        hierarchy: "auto" (sources of ``source:class`` labels, else k-means) or "kmeans".
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
        bandit_lr: float | None = None,
        window: int = 25,
        baseline: str = "window",
        rescale: str = "window",
        init: str = "uniform-leaves",
        warm_start: bool = False,
        online_steps: int = 2,
        n_groups: int = 3,
        hierarchy: str = "auto",
        recipe: TrainRecipe | None = None,
    ) -> None:
        for name, value, allowed in [
            ("strategy", strategy, ("random", "adaptive")),
            ("reward", reward, REWARDS),
            ("baseline", baseline, WINDOWED),
            ("rescale", rescale, WINDOWED),
            ("init", init, INITS),
            ("hierarchy", hierarchy, HIERARCHIES),
        ]:
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        if bandit_lr is not None and bandit_lr <= 0:
            raise ValueError(f"bandit_lr must be positive (or None for 1/N), got {bandit_lr}")
        if query_batch < 1 or window < 1 or online_steps < 0 or n_groups < 1:
            raise ValueError("query_batch, window, n_groups must be positive; online_steps >= 0")
        self.strategy, self.reward, self.query_batch = strategy, reward, query_batch
        self.bandit_lr, self.window, self.baseline, self.rescale = (
            bandit_lr,
            window,
            baseline,
            rescale,
        )
        self.init, self.warm_start, self.online_steps = init, warm_start, online_steps
        self.n_groups, self.hierarchy = n_groups, hierarchy
        self.recipe = recipe or TrainRecipe()

    def __repr__(self) -> str:
        if self.strategy == "random":  # the bandit's parameters do not apply
            return (
                f"KnockoffNets(strategy='random', query_batch={self.query_batch}, "
                f"recipe={self.recipe})"
            )
        return (
            f"KnockoffNets(strategy={self.strategy!r}, reward={self.reward!r}, "
            f"query_batch={self.query_batch}, bandit_lr={self.bandit_lr}, window={self.window}, "
            f"baseline={self.baseline!r}, rescale={self.rescale!r}, init={self.init!r}, "
            f"warm_start={self.warm_start}, online_steps={self.online_steps}, "
            f"n_groups={self.n_groups}, hierarchy={self.hierarchy!r}, recipe={self.recipe})"
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
        info: dict[str, object] = {}
        if self.strategy == "random":
            xs, ys, history, idx = self._random(oracle, pool, budget, gen)
        else:
            init = None if self.warm_start else copy.deepcopy(surrogate.state_dict())
            xs, ys, history, idx = self._adaptive(
                oracle, pool, budget, gen, surrogate, dev, hard, info
            )
            if init is not None:
                surrogate.load_state_dict(init)
        x, y = torch.cat(xs), torch.cat(ys)
        if self.recipe.undo == "ddae" and not hard and y.dim() == 2:
            from stealkit.attacks.ddae import DDAE

            fresh = copy.deepcopy(surrogate)  # untrained here: the shadow model starts from it
            y, info["ddae"] = DDAE().restore(
                y, x, lambda: copy.deepcopy(fresh), seed=seed, device=dev
            )
        losses = train_surrogate(surrogate, x, y, self.recipe, hard=hard, seed=seed, device=dev)
        if monitor is not None:
            monitor(surrogate, oracle.ledger.spent - start)
        labels = None if pool.labels is None else pool.labels[idx]
        return AttackResult(
            surrogate=surrogate.eval(),
            queries=oracle.ledger.spent - start,
            history=history,
            info={
                "transfer_set": len(x),
                "final_train_loss": losses[-1] if losses else float("nan"),
                **transfer_set_composition(y, labels, pool.dataset.classes),
                **info,
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

    def _adaptive(self, oracle, pool, budget, gen, surrogate, dev, hard, info):
        tree = build_hierarchy(
            pool,
            n_groups=self.n_groups,
            seed=int(torch.randint(1 << 30, (1,), generator=gen)),
            by=self.hierarchy,
        )
        policy = HierarchicalBandit(tree, gen, lr=self.bandit_lr, init=self.init)
        opt = torch.optim.Adam(surrogate.parameters(), lr=self.recipe.lr)
        xs: list[Tensor] = []
        ys: list[Tensor] = []
        past: list[float] = []
        seen: dict[str, Tensor] = {k: torch.empty(0) for k in ("cert", "div", "loss")}
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
            recent = torch.cat(ys)[-self.window :] if ys else y
            raw = {
                "cert": certainty_reward(y),
                "div": diversity_reward(y, recent.mean(0)),
                "loss": loss_reward(y, logits),
            }
            rewards = self._combine(raw, seen)
            for (g, j, _), r in zip(draws, rewards.tolist(), strict=True):
                if self.baseline == "window":
                    rbar = windowed_baseline(past, self.window, r)
                else:
                    rbar = float(np.mean(past)) if past else 0.0
                policy.update(g, j, r, rbar)
                past.append(r)
            xs.append(x)
            ys.append(y)
            if self.online_steps:
                self._online(surrogate, xs, ys, gen, opt, dev, hard)
            history.append({"queries": float(spent), "mean_reward": float(rewards.mean())})
        names = tree.names or [str(i) for i in range(len(tree.groups))]
        info["policy_group_probability"] = dict(
            zip(names, policy.group_probabilities().tolist(), strict=True)
        )
        leaf_names = tree.leaf_names or [str(i) for i in range(len(tree.leaves))]
        info["policy_leaf_probability"] = dict(
            zip(leaf_names, policy.leaf_probabilities().tolist(), strict=True)
        )
        return xs, ys, history, torch.tensor(picked)

    def _combine(self, raw: dict[str, Tensor], seen: dict[str, Tensor]) -> Tensor:
        """The reward of each image: a single raw reward, or the sum of the three rescaled."""
        if self.reward != "all":
            return raw[self.reward]
        total = torch.zeros_like(raw["cert"])
        for k, v in raw.items():
            series = torch.cat([seen[k], v])
            if self.rescale == "window":
                total += rescale_in_window(series, self.window)[-len(v) :]
                seen[k] = series[-(self.window - 1) :] if self.window > 1 else series[:0]
            else:
                lo, hi = float(series.min()), float(series.max())
                total += (v - lo) / (hi - lo) if hi > lo else torch.zeros_like(v)
                seen[k] = torch.stack([series.min(), series.max()])
        return total

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
