"""Dataset inference for classifiers, black-box form: does a suspect carry the victim's private data?

Maini, Yaghini and Papernot, "Dataset Inference: Ownership Resolution in Machine Learning",
ICLR 2021, https://arxiv.org/abs/2104.10706.

A model is more confident (its decision boundary is farther) around the points it was trained on.
A copy stolen from the victim inherits that knowledge, so it too sits farther from its boundary on
the victim's private training points S than on public points P of the same distribution; a model
trained independently cannot tell S from P. The owner measures that distance with label queries
only ("Blind Walk"): for a point (x, y) and a random direction delta,

    delta ~ uniform, gaussian or laplace noise, rescaled so that ||delta||_2 = step * sqrt(d)
    k(x, delta) = min { k in k0..K : f(clip(x + k delta)) != r }      (K + 1 when none does)

where the reference r is the true label y (``reference="true"``, k0 = 0: a point the model
already gets wrong is at distance 0) or the model's own label f(x) (``reference="suspect"``,
k0 = 1). With ``per_noise`` directions of each noise type, a point's feature vector is its
distances sorted within each noise type (so that the order of random directions does not
matter). The owner fits a logistic regression g on the *victim's* features of private points
(label 1) against public points (label 0), then draws m fresh points of each, computes their
features on the *suspect*, scores them with g and runs a one-sided Welch t-test:

    H0: mean g(suspect features of private) <= mean g(suspect features of public)

A small p-value rejects H0: the suspect behaves like the victim on its private data. Every input
sent to the suspect is charged to its oracle's ledger (a batch costs its size): one query per
point (f(x)), then per direction the steps walked (``search="linear"``, the paper's walk) or
exactly ceil(log2(K + 1)) (``search="bisect"``, a binary search for the first change that
assumes the label along a ray changes once); with the true label as reference, a point the
suspect already misclassifies costs its one query only.

The true-label reference is the default: on our toy victims the suspect-label walk carried
almost no membership signal for distilled copies (a memorising victim's copy: effect size
0.03 against 1.5 from the true label); the victim's own margin gap survives distillation mostly
as "the copy is right on the victim's private points more often". Measured query costs are in
``stealkit.experiments.verify``.

Not verified from the paper's text (only its abstract could be read here): whether its walk
compares with the true label (we recall "(x, y) ... until f(x + k delta) != y", unchecked),
the noise scales (the normalisation above is ours), the number of directions (the paper uses
more; few here, for query economy), whether features are sorted, the regressor (the paper's g
is a small network; logistic regression here) and whether its t-test assumes equal variances.
The white-box MinGD features are not implemented.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from stealkit.oracle.base import Oracle

NOISES = ("uniform", "gaussian", "laplace")
Predict = Callable[[Tensor], Tensor]
Search = Literal["linear", "bisect"]
Reference = Literal["true", "suspect"]


def sample_directions(
    n: int,
    shape: Sequence[int],
    *,
    noises: Sequence[str] = NOISES,
    per_noise: int = 1,
    step: float,
    generator: torch.Generator,
) -> Tensor:
    """(n, len(noises) * per_noise, *shape) random directions, grouped by noise type, each of
    L2 norm ``step * sqrt(prod(shape))`` (a root-mean-square change of ``step`` per pixel)."""
    unknown = [z for z in noises if z not in NOISES]
    if unknown or not noises:
        raise ValueError(f"noises must be a non-empty subset of {NOISES}, got {list(noises)}")
    size = (n, per_noise, *shape)
    parts = []
    for z in noises:
        if z == "uniform":
            d = torch.rand(size, generator=generator) * 2 - 1
        elif z == "gaussian":
            d = torch.randn(size, generator=generator)
        else:  # laplace: the difference of two unit exponentials
            e = torch.empty((2, *size)).exponential_(generator=generator)
            d = e[0] - e[1]
        parts.append(d)
    dirs = torch.cat(parts, dim=1)
    norm = dirs.flatten(2).norm(dim=2).clamp_min(1e-12)
    target = step * math.sqrt(math.prod(shape))
    return dirs * (target / norm).view(n, -1, *([1] * len(shape)))


def _per_point(x: Tensor, directions: Tensor) -> Tensor:
    if directions.dim() == x.dim():  # (D, C, H, W): the same directions for every point
        directions = directions.unsqueeze(0).expand(len(x), *directions.shape)
    if directions.dim() != x.dim() + 1 or directions.shape[0] != len(x):
        raise ValueError(
            f"directions must be (D, *x.shape[1:]) or (N, D, *x.shape[1:]); got "
            f"{tuple(directions.shape)} for x of {tuple(x.shape)}"
        )
    if tuple(directions.shape[2:]) != tuple(x.shape[1:]):
        raise ValueError(f"directions {tuple(directions.shape)} do not match x {tuple(x.shape)}")
    return directions


def _check_steps(max_steps: int) -> None:
    if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
        raise ValueError(f"max_steps must be a positive int, got {max_steps!r}")


def _start(
    predict: Predict, x: Tensor, d: int, max_steps: int, reference: Tensor | None
) -> tuple[Tensor, Tensor]:
    """The labels walks compare with, and (N, D) distances so far: 0 where ``reference`` is
    given and x itself is already labelled otherwise, ``max_steps + 1`` (not yet ended) elsewhere.
    One query per point either way."""
    labels = predict(x)
    dist = torch.full((len(x), d), max_steps + 1, dtype=torch.long)
    if reference is None:
        return labels, dist
    if reference.shape != labels.shape:
        raise ValueError(f"reference must be ({len(x)},) labels, got {tuple(reference.shape)}")
    dist[labels != reference] = 0
    return reference, dist


def blind_walk_distances(
    predict: Predict,
    x: Tensor,
    directions: Tensor,
    max_steps: int,
    *,
    reference: Tensor | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> Tensor:
    """The paper's Blind Walk: for each point and direction, the first k in 1..``max_steps`` at
    which ``predict(clip(x + k * delta))`` differs from ``predict(x)``; ``max_steps + 1`` where
    no step changes the label.

    Args:
        predict: labels (B,) of a batch (B, C, H, W); each call is one batch of queries.
        x: (N, C, H, W) points.
        directions: (D, C, H, W) shared by all points, or (N, D, C, H, W) per point.
        max_steps: the cap K.

    Returns:
        (N, D) long distances. Queries: N references, then at step k one per walk not yet ended.
    """
    _check_steps(max_steps)
    dirs = _per_point(x, directions)
    n, d = dirs.shape[:2]
    ref, dist = _start(predict, x, d, max_steps, reference)
    active = dist > 0
    for k in range(1, max_steps + 1):
        idx = active.nonzero()
        if len(idx) == 0:
            break
        i, j = idx[:, 0], idx[:, 1]
        labels = predict((x[i] + k * dirs[i, j]).clamp(*value_range))
        hit = labels != ref[i]
        dist[i[hit], j[hit]] = k
        active[i[hit], j[hit]] = False
    return dist


def bisect_walk_distances(
    predict: Predict,
    x: Tensor,
    directions: Tensor,
    max_steps: int,
    *,
    reference: Tensor | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> Tensor:
    """Blind Walk distances found by binary search on k in 0..``max_steps + 1``: exactly the
    first change where the label along each ray changes at most once (else some change point).

    Same arguments and result as ``blind_walk_distances``; queries: N references, then exactly
    N * D * ceil(log2(max_steps + 1)), whatever the answers.
    """
    _check_steps(max_steps)
    dirs = _per_point(x, directions)
    n, d = dirs.shape[:2]
    ref, hi = _start(predict, x, d, max_steps, reference)  # hi: changed, or past the cap
    walking = (hi > 0).all(dim=1).nonzero().flatten()  # points whose label is the reference
    lo = torch.zeros((len(walking), d), dtype=torch.long)  # the label at lo is the reference
    top = hi[walking]
    flat = dirs[walking].reshape(len(walking) * d, *dirs.shape[2:])
    rows = walking.repeat_interleave(d)
    for _ in range(math.ceil(math.log2(max_steps + 1)) if len(walking) else 0):
        mid = (lo + top) // 2
        k = mid.reshape(-1, *([1] * (x.dim() - 1))).to(x.dtype)
        labels = predict((x[rows] + k * flat).clamp(*value_range)).reshape(len(walking), d)
        changed = labels != ref[walking].view(-1, 1)
        top = torch.where(changed, mid, top)
        lo = torch.where(changed, lo, mid)
    hi[walking] = top
    return hi


def blind_walk_features(
    predict: Predict,
    x: Tensor,
    *,
    noises: Sequence[str] = NOISES,
    per_noise: int = 1,
    step: float,
    max_steps: int,
    search: Search = "linear",
    generator: torch.Generator,
    reference: Tensor | None = None,
    value_range: tuple[float, float] = (0.0, 1.0),
) -> Tensor:
    """(N, len(noises) * per_noise) float features: Blind Walk distances along fresh random
    directions per point (from ``reference`` labels when given, see ``_start``), sorted within
    each noise type."""
    dirs = sample_directions(
        len(x), x.shape[1:], noises=noises, per_noise=per_noise, step=step, generator=generator
    )
    walk = blind_walk_distances if search == "linear" else bisect_walk_distances
    dist = walk(predict, x, dirs, max_steps, reference=reference, value_range=value_range)
    dist = dist.float()
    groups = dist.view(len(x), len(noises), per_noise).sort(dim=2).values
    return groups.reshape(len(x), -1)


class MembershipRegressor:
    """g: standardised features, then an L2-regularised logistic regression that tells private
    (1) from public (0); ``scores`` are its log-odds."""

    def __init__(self, private: Tensor, public: Tensor, *, seed: int = 0) -> None:
        from sklearn.linear_model import LogisticRegression

        feats = torch.cat([private, public]).double().numpy()
        labels = np.r_[np.ones(len(private)), np.zeros(len(public))]
        self.mean = feats.mean(0)
        self.std = feats.std(0) + 1e-9
        self.model = LogisticRegression(C=1.0, random_state=seed, max_iter=1000)
        self.model.fit((feats - self.mean) / self.std, labels)

    def scores(self, features: Tensor) -> Tensor:
        z = (features.double().numpy() - self.mean) / self.std
        return torch.from_numpy(self.model.decision_function(z))


def ownership_test(private_scores: Tensor, public_scores: Tensor) -> tuple[float, float]:
    """One-sided Welch t-test of H0: mean(private) <= mean(public); (t statistic, p-value).

    Two constant samples give p = 0 when the private mean is larger, else 1 (no evidence).
    """
    from scipy.stats import ttest_ind

    a = private_scores.double().numpy()
    b = public_scores.double().numpy()
    if len(a) < 2 or len(b) < 2:
        raise ValueError("the t-test needs at least 2 scores on each side; raise samples")
    tiny = 1e-12 * max(1.0, float(np.abs(a).max()), float(np.abs(b).max()))
    if a.std() <= tiny and b.std() <= tiny:  # two constants (up to rounding)
        return (math.inf, 0.0) if a.mean() - b.mean() > tiny else (0.0, 1.0)
    with warnings.catch_warnings():  # scipy's precision warning on nearly constant samples
        warnings.simplefilter("ignore", RuntimeWarning)
        t, p = ttest_ind(a, b, equal_var=False, alternative="greater")
    return float(t), float(p) if math.isfinite(p) else 1.0


def oracle_labels(oracle: Oracle) -> Predict:
    """``predict`` for the walks: the oracle's top-1 labels, each call charged to its ledger."""
    return lambda x: oracle.query(x).labels()


@dataclass(frozen=True)
class InferenceResult:
    """The outcome of a dataset-inference test (classifier or encoder form)."""

    p_value: float
    statistic: float
    samples: int  # m: fresh points of each set shown to the suspect
    suspect_queries: int
    victim_queries: int
    private_scores: Tensor
    public_scores: Tensor

    def is_copy(self, alpha: float) -> bool:
        return self.p_value < alpha


class DatasetInference:
    """Black-box dataset inference for a suspect classifier; see the module docstring.

    The defaults are the most query-frugal configuration we found that is reliable where the
    victim memorises its private set: m = 15, one gaussian direction, one step (about 3m
    queries to the suspect: f(x), then f(x + delta) where f(x) is right). The paper's richer walk
    is ``noises=NOISES, max_steps=7, search="bisect"`` (about 10 queries a point).

    Args:
        samples: m, fresh private and public points each shown to the suspect.
        train_samples: private and public points each whose victim features train g.
        noises, per_noise: the noise types and directions per type of each point's walks.
        step: root-mean-square pixel change per step of a walk.
        max_steps: the cap K of a walk.
        search: "linear" (the paper's walk) or "bisect" (binary search, a fixed cost).
        reference: what a walk must leave: "true" (the images' own labels, which ``run`` then
            needs; distance 0 where the model already errs) or "suspect" (the model's label of
            the image itself).
        seed: draws the points and the directions.

    Example:
        >>> di = DatasetInference(samples=15)
        >>> r = di.run(victim.evaluator(output="label"), suspect_oracle, private=x_s,
        ...            public=x_p, private_labels=y_s, public_labels=y_p)
        >>> r.p_value, r.suspect_queries
    """

    def __init__(
        self,
        *,
        samples: int = 15,
        train_samples: int = 500,
        noises: Sequence[str] = ("gaussian",),
        per_noise: int = 1,
        step: float = 0.05,
        max_steps: int = 1,
        search: Search = "linear",
        reference: Reference = "true",
        seed: int = 0,
    ) -> None:
        for name, value, low in (
            ("samples", samples, 2),
            ("train_samples", train_samples, 2),
            ("per_noise", per_noise, 1),
            ("max_steps", max_steps, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if not noises or any(z not in NOISES for z in noises):
            raise ValueError(f"noises must be a non-empty subset of {NOISES}, got {noises!r}")
        if not (isinstance(step, int | float) and 0 < step <= 1):
            raise ValueError(f"step must be in (0, 1] (a pixel change per step), got {step!r}")
        if search not in ("linear", "bisect"):
            raise ValueError(f"search must be 'linear' or 'bisect', got {search!r}")
        if reference not in ("true", "suspect"):
            raise ValueError(f"reference must be 'true' or 'suspect', got {reference!r}")
        self.samples = samples
        self.train_samples = train_samples
        self.noises = tuple(noises)
        self.per_noise = per_noise
        self.step = float(step)
        self.max_steps = max_steps
        self.search: Search = search
        self.reference: Reference = reference
        self.seed = seed

    def features(
        self, oracle: Oracle, x: Tensor, labels: Tensor | None, generator: torch.Generator
    ) -> Tensor:
        """Blind Walk features of ``x`` on ``oracle`` (from ``labels`` for reference "true")."""
        return blind_walk_features(
            oracle_labels(oracle),
            x,
            noises=self.noises,
            per_noise=self.per_noise,
            step=self.step,
            max_steps=self.max_steps,
            search=self.search,
            generator=generator,
            reference=labels if self.reference == "true" else None,
            value_range=oracle.input_spec.value_range,
        )

    def run(
        self,
        victim: Oracle,
        suspect: Oracle,
        *,
        private: Tensor,
        public: Tensor,
        private_labels: Tensor | None = None,
        public_labels: Tensor | None = None,
    ) -> InferenceResult:
        """Test ``suspect`` with the victim's ``private`` training images and ``public`` ones of
        the same distribution (both (N, C, H, W) in the oracles' value range, with (N,) labels
        for reference "true")."""
        need = self.samples + self.train_samples
        g = torch.Generator().manual_seed(self.seed)
        sets = []
        for name, pool, labels in (
            ("private", private, private_labels),
            ("public", public, public_labels),
        ):
            if len(pool) < need:
                raise ValueError(
                    f"{name} has {len(pool)} images; samples + train_samples = {need} are needed"
                )
            if self.reference == "true" and (labels is None or len(labels) != len(pool)):
                raise ValueError(
                    f"reference 'true' needs the {name} images' labels ({name}_labels); pass "
                    "them, or use reference='suspect' for unlabelled images"
                )
            idx = torch.randperm(len(pool), generator=g)[:need]
            sets.append((pool[idx], None if labels is None else labels[idx]))
        (xs, ys), (xp, yp) = sets
        m = self.samples

        def part(y: Tensor | None, sl: slice) -> Tensor | None:
            return None if y is None else y[sl]

        v0, s0 = victim.ledger.spent, suspect.ledger.spent
        train, test = slice(m, None), slice(None, m)
        reg = MembershipRegressor(
            self.features(victim, xs[train], part(ys, train), g),
            self.features(victim, xp[train], part(yp, train), g),
            seed=self.seed,
        )
        private_scores = reg.scores(self.features(suspect, xs[test], part(ys, test), g))
        public_scores = reg.scores(self.features(suspect, xp[test], part(yp, test), g))
        t, p = ownership_test(private_scores, public_scores)
        return InferenceResult(
            p_value=p,
            statistic=t,
            samples=m,
            suspect_queries=suspect.ledger.spent - s0,
            victim_queries=victim.ledger.spent - v0,
            private_scores=private_scores,
            public_scores=public_scores,
        )

    def __repr__(self) -> str:
        return (
            f"DatasetInference(samples={self.samples}, train_samples={self.train_samples}, "
            f"noises={self.noises}, per_noise={self.per_noise}, step={self.step}, "
            f"max_steps={self.max_steps}, search={self.search!r}, reference={self.reference!r}, "
            f"seed={self.seed})"
        )
