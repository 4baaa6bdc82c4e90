"""D-DAE: detect which defence perturbs the answers, then undo it, before the surrogate trains.

Chen, Guan, Gong, Dong and Xue, "D-DAE: Defense-Penetrating Model Extraction Attacks", IEEE
Symposium on Security and Privacy (S&P) 2023 (IEEE Xplore; no arXiv version found).

A pool thief has bought answers y~ = D(f(x)) from a victim f behind an unknown defence D. It
spends no further query. It trains a shadow model s on a share of its own bought (x, argmax y~)
(hard labels: the defences that keep top-1 cannot touch them), then plays defender itself: each
candidate defence D_k (stealkit's own classes, at a few strengths, through their own
``answer(x, response)``) answers for s on every bought image, at a temperature T drawn per image:

    p    = softmax(s(x) / T),  log T ~ U[log T_lo, log T_hi]     the shadow's clean posterior
    q_k  = D_k(x, p)                                             what D_k would have answered

Two small networks learn from these simulated pairs (k = 0 is "clean", q_0 = p):

    detector   h(phi(q)) -> k      phi(q) = (sort(q), log sort(q)), class-order free
    restorer   r_k(q)    -> p      r_k(q)_j = softmax_j (log q_j + g_k(q_j, log q_j, rank_j, phi))

the detector by cross-entropy with each defence weighted as one class whatever its variants, the
restorer by soft cross-entropy -sum_j p_j log r_k(q)_j (KL(p || r_k(q)) up to a constant). On the
victim's answers the batch gets one verdict, every answer counting as evidence,

    k*         = argmax_k  (1/N) sum_i log max(h(phi(y~_i))_k, floor)

and the restored transfer set is r_k*(y~) (y~ itself when k* is clean); when D_k* kept the
shadow's top-1 class in simulation, the restored answers keep each answer's top-1 class. g_k is
shared by every class (a per-class MLP fed the row's sorted scores as context), so r_k is
equivariant to any renaming of the classes, as the defences are.

Departures and what was not verified (the paper's text was not available here, only its title and
the brief's summary of its idea): the paper's detector is a meta-classifier and its recovery a
generative model; here both are small MLPs, the detector judges single answers whose log-
probabilities are averaged over the batch, and the restorer is a deterministic regression, not a
generative model. The shadow's training set and loss (here the answers' argmax), the temperature
jitter that widens the shadow's posteriors towards the victim's, and the top-1 lock are this
module's. The simulated MAD uses the thief's own random surrogate, not the defender's. It works
only as far as the shadow's posteriors resemble the victim's: on a toy victim whose posteriors
are much softer than any shadow's, clean answers were taken for reverse sigmoid.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stealkit.attacks.base import TrainRecipe, train_surrogate, training_targets
from stealkit.defenses.mad import Mad
from stealkit.defenses.perturbation import Defense, GaussianNoise, ReverseSigmoid
from stealkit.losses.classification import soft_cross_entropy
from stealkit.oracle.response import OutputKind, Response
from stealkit.train.loop import default_device, fit, predict

log = logging.getLogger(__name__)

CLEAN = "clean"
"""The detector's name for answers no defence touched."""
_EPS = 1e-6


# --- the maths, as pure functions ---------------------------------------------------------------
def detector_features(probs: Tensor, eps: float = _EPS) -> Tensor:
    """phi(q) (N, 2C): each row's scores sorted high to low, and their logs; the order of the
    classes does not enter."""
    s = probs.float().sort(dim=1, descending=True).values
    return torch.cat([s, s.clamp_min(eps).log()], dim=1)


def restorer_features(probs: Tensor, eps: float = _EPS) -> Tensor:
    """(N, C, 2 + 3C) per class j: q_j, log q_j, the one-hot rank of q_j in its row, and the
    row's phi(q) as context."""
    q = probs.float()
    n, c = q.shape
    rank = q.argsort(dim=1, descending=True).argsort(dim=1)  # 0 for the top class
    own = torch.stack([q, q.clamp_min(eps).log()], dim=2)
    context = detector_features(q, eps)[:, None, :].expand(n, c, 2 * c)
    return torch.cat([own, F.one_hot(rank, c).float(), context], dim=2)


def kl_rows(p: Tensor, q: Tensor, eps: float = _EPS) -> Tensor:
    """KL(p || q) per row (N,), with 0 log 0 = 0 and q clamped at ``eps``."""
    p = p.float()
    ratio = p.clamp_min(eps).log() - q.float().clamp_min(eps).log()
    return torch.where(p > 0, p * ratio, torch.zeros_like(p)).sum(dim=1)


def batch_verdict(
    per_answer: Tensor, names: Sequence[str], floor: float = 1e-3
) -> tuple[str, float, dict[str, float]]:
    """The defence the whole batch comes from, given each answer's detector probabilities
    (N, K): every answer is evidence, so k* maximises the mean log-probability (each probability
    floored at ``floor``, so that a few answers unlike any simulated one cannot veto a
    defence); the scores are the geometric means exp(mean_i log h_k(y_i)) normalised over k,
    and the confidence is k*'s score."""
    if per_answer.dim() != 2 or per_answer.shape[1] != len(names) or len(per_answer) == 0:
        raise ValueError(f"need (N, {len(names)}) probabilities, got {tuple(per_answer.shape)}")
    mean_log = per_answer.double().clamp_min(floor).log().mean(dim=0)
    score = torch.softmax(mean_log, dim=0)
    k = int(mean_log.argmax())
    return names[k], float(score[k]), {n: float(v) for n, v in zip(names, score, strict=True)}


def keep_top1(restored: Tensor, answers: Tensor) -> Tensor:
    """``restored`` with, per row, the entry of the answer's top-1 class swapped with the
    restored maximum, so both agree on the top class (still a distribution, same values)."""
    out = restored.clone()
    a = answers.argmax(dim=1, keepdim=True)
    m = restored.argmax(dim=1, keepdim=True)
    va, vm = restored.gather(1, a), restored.gather(1, m)
    out.scatter_(1, m, va)
    out.scatter_(1, a, vm)
    return out


# --- the two networks ---------------------------------------------------------------------------
class Detector(nn.Module):
    """h: answers (N, C) -> logits over K defences (clean first), from phi(q) alone."""

    def __init__(self, num_classes: int, num_defences: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2 * num_classes, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, num_defences),
        )

    def forward(self, probs: Tensor) -> Tensor:
        return self.net(detector_features(probs))


class Restorer(nn.Module):
    """r: perturbed answers (N, C) -> logits (N, C) of the clean posterior; one MLP g shared by
    every class, so renaming the classes renames the output."""

    def __init__(self, num_classes: int, hidden: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(2 + 3 * num_classes, hidden),
            nn.ReLU(),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Linear(hidden, 1),
        )

    def forward(self, probs: Tensor) -> Tensor:
        base = probs.float().clamp_min(_EPS).log()  # a residual: g = 0 gives q back
        return base + self.net(restorer_features(probs)).squeeze(2)


# --- the candidates ------------------------------------------------------------------------------
def default_candidates(seed: int = 0) -> dict[str, list[Defense]]:
    """stealkit's classifier perturbations at the strengths of its presets (name -> variants).

    The simulated MADs' random surrogates are seeded away from the defender's default seed (the
    thief cannot know it). Adaptive misinformation is left out: on the real MNIST CNN this
    detector could not tell its answers from clean ones (it leaves confident answers untouched
    and its reversed ones look confident), so undefended answers were 'restored' and lost a
    third of their top-1 classes; pass it explicitly to try."""
    s = 1_000_003 + seed
    return {
        "reverse_sigmoid": [
            ReverseSigmoid(beta=0.7, gamma=0.4),
            ReverseSigmoid(beta=1.0, gamma=0.2),
        ],
        "mad": [Mad(epsilon=0.5, seed=s), Mad(epsilon=1.0, seed=s)],
        "mad_argmax": [
            Mad(epsilon=0.5, argmax=True, seed=s),
            Mad(epsilon=1.0, argmax=True, seed=s),
        ],
        "gaussian_noise": [GaussianNoise(sigma=0.1, seed=seed)],
    }


def _variants(defences: Mapping[str, Defense | Sequence[Defense]]) -> dict[str, list[Defense]]:
    out: dict[str, list[Defense]] = {}
    for name, d in defences.items():
        variants = [d] if isinstance(d, Defense) else list(d)
        if name == CLEAN:
            raise ValueError(f"{CLEAN!r} names the undefended answers; rename that candidate")
        if not variants or not all(isinstance(v, Defense) for v in variants):
            raise ValueError(f"candidate {name!r} must be a Defense or a non-empty list of them")
        out[name] = variants
    if not out:
        raise ValueError("pass at least one candidate defence, e.g. default_candidates()")
    return out


def jitter_temperatures(n: int, low: float, high: float, generator: torch.Generator) -> Tensor:
    """n temperatures (N, 1), log-uniform on [low, high]."""
    u = torch.rand((n, 1), generator=generator)
    return torch.exp(math.log(low) + u * (math.log(high) - math.log(low)))


def simulate(defence: Defense | None, images: Tensor, logits: Tensor) -> Tensor:
    """What ``defence`` (None: no defence) answers, as distributions (N, C), for a victim whose
    logits on ``images`` are ``logits``: the defence's own ``answer``, reset first, as a
    DefendedOracle would call it; no victim is queried."""
    probs = logits.softmax(dim=1)
    if defence is None:
        return probs
    defence.reset()
    c = int(logits.shape[1])
    if defence.needs is OutputKind.LOGITS:
        raw = Response(OutputKind.LOGITS, logits, c)
    else:
        raw = Response(OutputKind.PROBABILITIES, probs, c)
    return training_targets(defence.answer(images, raw, "ddae-shadow"))


def _seeded(build: Callable[[], nn.Module], seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):  # seeded weights, global RNG untouched
        torch.manual_seed(seed)
        return build()


# --- the attack step ----------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class DDAE:
    """D-DAE's hyperparameters; ``restore`` runs it on one transfer set.

    Args:
        shadow_share: the share of the bought (image, answer) pairs the shadow trains on.
        shadow_recipe: its training (always on the answers' argmax).
        temperature_range: each bought image's shadow logits are divided by a temperature drawn
            log-uniformly from this range before the defences are simulated on them.
        hidden: width of the detector's and the restorers' hidden layers.
        detector_steps, restorer_steps: their updates (batch ``batch_size``, Adam at ``lr``).
        holdout: the share of simulated rows kept out to report the restorer's KL.
        lock_top1: when the detected defence kept the shadow's top-1 class on at least this
            share of simulated rows, the restored answers keep each answer's top-1 class (None:
            never).

    Example:
        >>> restored, report = DDAE().restore(answers, images, lambda: build_model("cnn3", ...))
        >>> report["detected"], report["confidence"]
    """

    shadow_share: float = 0.5
    shadow_recipe: TrainRecipe = field(default_factory=lambda: TrainRecipe(epochs=6, min_steps=250))
    temperature_range: tuple[float, float] = (0.5, 2.0)
    hidden: int = 64
    detector_steps: int = 400
    restorer_steps: int = 600
    batch_size: int = 256
    lr: float = 3e-3
    holdout: float = 0.1
    lock_top1: float | None = 0.99

    def __post_init__(self) -> None:
        if not 0.0 < self.shadow_share <= 1.0:
            raise ValueError(f"shadow_share must lie in (0, 1], got {self.shadow_share}")
        lo, hi = self.temperature_range
        if not 0 < lo <= hi < math.inf:
            raise ValueError(
                "temperature_range must be (low, high) with 0 < low <= high, got "
                f"{self.temperature_range}"
            )
        if min(self.hidden, self.detector_steps, self.restorer_steps, self.batch_size) < 1:
            raise ValueError("hidden, detector_steps, restorer_steps and batch_size must be >= 1")
        if self.lock_top1 is not None and not 0.0 <= self.lock_top1 <= 1.0:
            raise ValueError(
                f"lock_top1 must lie in [0, 1] (None: never lock), got {self.lock_top1}"
            )
        if not self.lr > 0 or not 0.0 <= self.holdout < 1.0:
            raise ValueError(f"need lr > 0 and holdout in [0, 1), got {self.lr}, {self.holdout}")

    def restore(
        self,
        answers: Tensor,
        pool_images: Tensor,
        surrogate_factory: Callable[[], nn.Module],
        *,
        defences: Mapping[str, Defense | Sequence[Defense]] | None = None,
        seed: int = 0,
        device: torch.device | str | None = None,
    ) -> tuple[Tensor, dict[str, Any]]:
        """The restored answers (N, C) and a report: ``detected``, ``confidence`` and
        ``scores`` (``batch_verdict``), ``mean_probability`` (each name's mean detector
        probability), the shadow's agreement with the answers' top-1 and its and the answers'
        mean top probability; unless clean was detected, ``restorer_kl`` (the restorer's
        held-out KL(p || q) -> KL(p || r(q)) on simulated rows) and ``top1_kept`` (how often
        the detected defence kept the shadow's top-1 in simulation: at least ``lock_top1``, the
        restored answers keep each answer's top-1 class too).

        ``surrogate_factory()`` builds the untrained shadow (called with the global RNG seeded
        from ``seed`` and restored after); ``defences`` maps a name to a Defense or its variants
        (default ``default_candidates(seed)``); no victim is queried."""
        if answers.dim() != 2 or len(answers) != len(pool_images) or pool_images.dim() != 4:
            raise ValueError(
                f"need answers (N, C) and the N images they answer (N, C, H, W), got "
                f"{tuple(answers.shape)} and {tuple(pool_images.shape)}"
            )
        cands = _variants(defences if defences is not None else default_candidates(seed))
        dev = torch.device(device) if device is not None else default_device()
        y = answers.float().clamp_min(0.0)
        y = y / y.sum(dim=1, keepdim=True).clamp_min(1e-12)
        shadow, shadow_rows = self._shadow(y, pool_images, surrogate_factory, seed, dev)
        names = [CLEAN, *cands]
        sims: list[tuple[int, Defense | None]] = [(0, None)]
        sims += [(k, d) for k, name in enumerate(names[1:], start=1) for d in cands[name]]
        gen = torch.Generator().manual_seed(seed + 1)
        raw = predict(shadow, pool_images, device="cpu")
        logits = raw / jitter_temperatures(len(raw), *self.temperature_range, gen)
        p = logits.softmax(dim=1)
        q_all = torch.cat([simulate(d, pool_images, logits) for _, d in sims])
        k_all = torch.cat([torch.full((len(p),), k) for k, _ in sims])
        p_all = p.repeat(len(sims), 1)
        weight = 1.0 / torch.bincount(torch.tensor([k for k, _ in sims])).float()  # classes even

        def balanced(z: Tensor, k: Tensor) -> Tensor:
            return F.cross_entropy(z, k, weight=weight.to(z.device))

        detector = _seeded(lambda: Detector(y.shape[1], len(names), self.hidden), seed + 1)
        self._fit(detector, q_all, k_all, balanced, self.detector_steps, seed + 1, dev)
        per_answer = predict(detector, y, device=dev).softmax(dim=1)
        detected, confidence, scores = batch_verdict(per_answer, names)
        log.info("D-DAE detected %s (confidence %.3f)", detected, confidence)
        report: dict[str, Any] = {
            "detected": detected,
            "confidence": confidence,
            "scores": scores,
            "shadow_rows": shadow_rows,
            "shadow_agreement": float((raw.argmax(1) == y.argmax(1)).float().mean()),
            "mean_probability": dict(zip(names, per_answer.mean(dim=0).tolist(), strict=True)),
            "shadow_confidence": float(raw.softmax(dim=1).max(dim=1).values.mean()),
            "answer_confidence": float(y.max(dim=1).values.mean()),
            "simulated_rows": len(q_all),
            "candidates": {name: [repr(d) for d in v] for name, v in cands.items()},
            "ddae": repr(self),
        }
        if detected == CLEAN:
            return y, report
        k = names.index(detected)
        mine = k_all == k
        restored, kl, kept = self._restore(y, p_all[mine], q_all[mine], seed + 1 + k, dev)
        report.update(restorer_kl=kl, top1_kept=kept)
        return restored, report

    def _shadow(
        self,
        y: Tensor,
        images: Tensor,
        factory: Callable[[], nn.Module],
        seed: int,
        dev: torch.device,
    ) -> tuple[nn.Module, int]:
        """The shadow trained on the argmax of a random ``shadow_share`` of the bought rows."""
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
        take = order[: max(1, round(self.shadow_share * len(y)))]
        shadow = _seeded(factory, seed)
        train_surrogate(
            shadow, images[take], y[take], self.shadow_recipe, hard=True, seed=seed, device=dev
        )
        return shadow.cpu().eval(), len(take)

    def _restore(
        self, y: Tensor, p: Tensor, q: Tensor, seed: int, dev: torch.device
    ) -> tuple[Tensor, list[float], float]:
        """Train r on simulated (q -> p) pairs and apply it to the answers ``y``."""
        split = torch.randperm(len(q), generator=torch.Generator().manual_seed(seed))
        held, used = split[: int(self.holdout * len(q))], split[int(self.holdout * len(q)) :]
        restorer = _seeded(lambda: Restorer(y.shape[1], self.hidden), seed)
        self._fit(restorer, q[used], p[used], soft_cross_entropy, self.restorer_steps, seed, dev)
        kl = [float("nan"), float("nan")]
        if len(held):
            out = predict(restorer, q[held], device=dev).softmax(dim=1)
            kl = [float(kl_rows(p[held], q[held]).mean()), float(kl_rows(p[held], out).mean())]
        kept = float((p.argmax(1) == q.argmax(1)).float().mean())
        restored = predict(restorer, y, device=dev).softmax(dim=1)
        if self.lock_top1 is not None and kept >= self.lock_top1:
            restored = keep_top1(restored, y)
        return restored, kl, kept

    def _fit(
        self,
        model: nn.Module,
        x: Tensor,
        target: Tensor,
        loss_fn: Callable[[Tensor, Tensor], Tensor],
        steps: int,
        seed: int,
        dev: torch.device,
    ) -> None:
        fit(
            model,
            x,
            target,
            loss_fn=loss_fn,
            steps=steps,
            batch_size=self.batch_size,
            lr=self.lr,
            seed=seed,
            device=dev,
            progress="D-DAE",
        )
