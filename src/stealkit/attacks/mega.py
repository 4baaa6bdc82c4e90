"""MEGA: model stealing via collaborative generator-substitute networks.

Hong, Huang and Chen, arXiv 2022. https://arxiv.org/abs/2202.00008

Data-free and label-only. Unlike the competing (min-max) generator-substitute games of DaST and
DFME, the generator and the substitute S cooperate, and are trained by coordinate descent
(the paper's Algorithm 1). A fixed set of noise seeds Z is drawn once; each round

1. X = G(Z) is sent to the victim T, which answers labels T(X) (``variant="label"``; the
   ``"probability"`` variant keeps the victim's scores instead);
2. the substitute step (Eq. 1): S trains for several passes over (X, T(X)) until its loss stops
   falling (``patience`` passes without a drop of ``min_delta``),
   L_S = CE(T(x), S(x)) = -sum_i T_i(x) log S_i(x);
3. the generator step (Eq. 2): with S fixed, G moves G(Z) to where S is confident,
   L_G = -log S_k(G(z)),   k = argmax_j S_j(G(z)),
   averaged over Z (``gen_loss="log"``), so the next round asks the victim about images the
   substitute believes it understands, and the victim's answer corrects the substitute where it
   was confidently wrong. ``gen_loss="confidence"`` is our earlier form, -S_k(G(z)) (the
   probability, not its log): its gradient is S_k times Eq. 2's, so it all but stops pushing a
   seed once S is confident there.

The stolen model is the last round's substitute (``select="last"``, the paper's Algorithm 1).
``select="fresh"`` (ours) picks a checkpoint without real data: each round buys T's labels for
G(Z) *before* S trains on them, so S's agreement with those fresh labels is a held-out score of
the weights S had before the round. Weights w_r (after round r) are scored by their mean
agreement with the labels bought in the ``select_window`` rounds after r (before any of those
rounds trained on them), and the best-scoring w_r is returned; weights without a full window
(the last ``select_window`` rounds') are not candidates, and when none has one the last weights
are returned. Every round's fresh agreement is in ``history`` (``fresh_agreement``) and in
``info["fresh_agreement"]``, whatever ``select`` is. Caveat: G steers towards where S is
confident, so the score is biased upwards, and more so as the game settles.

Not verified from the paper: its generator's architecture and output layer (the text we have
describes neither), |Z|, the number of substitute passes and generator steps, the optimisers and
learning rates. Since the paper does not say, the default generator stays stealkit's DCGAN-style
one with ``tail="bn-tanh"`` (DFAD/DFME's affine-free batch norm, then (tanh + 1) / 2), which pins
each batch's mean pixel near grey; ``tail="sigmoid"`` is DaST's output layer (no final batch norm,
sigmoid). On the MNIST CNN at 10k label queries (one seed) the sigmoid tail did worse: 0.13 against
0.37 accuracy with Eq. 2 and no balance term (issue 16's measurement).

The optional ``balance_weight`` adds a class-balance term, the negative entropy of the batch-mean
prediction (as in DFAD/DeepInversion), against the generator collapsing onto one class. The
paper's Eq. 2 has no such term, so it is off (0) by default. ``replay``
keeps that many earlier bought pairs (the most recent) in the substitute step beside the current
round's, against forgetting; ``replay_sample`` instead draws that many pairs at random from every
earlier round, so the substitute keeps seeing the whole history at a fixed cost per round (neither
is in the paper; both 0, off, by default).

``z_refresh`` (ours, not in the paper; 0, off, by default) redraws that fraction of Z after each
generator step. With Z fixed the game settles: on the MNIST CNN, from round 20 on, the substitute
already agreed with the victim on 99% of each new round's queries before training on them, so the
queries bought almost nothing and accuracy stopped near 0.70. With half of Z redrawn each round
about a quarter of every round stays informative (``docs/results/data_free_analysis.md``).
``average`` (ours; 0, off, by default) returns, and shows the monitor, an exponential moving average
of the substitute's weights over rounds instead of the last round's weights, which swing from
round to round as each round's pairs pull the substitute their way.

Each round costs ``len(Z) = query_batch`` queries; the last round sends the first
``budget - spent`` seeds only, so exactly ``budget`` queries are spent.
"""

from __future__ import annotations

import copy
import logging
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stealkit.attacks.base import (
    CLASS_OUTPUTS,
    SCORE_OUTPUTS,
    Attack,
    AttackResult,
    spend_limit,
    training_targets,
)
from stealkit.attacks.checkpoint_selection import FreshSelection, agreement_of
from stealkit.attacks.data_free import (
    Monitor,
    classifier_classes,
    default_generator,
    frozen,
    next_seed,
    resolve_device,
)
from stealkit.data.pool import QueryPool
from stealkit.losses.classification import soft_cross_entropy
from stealkit.models.generators import check_tail
from stealkit.oracle.base import Oracle
from stealkit.oracle.response import OutputKind
from stealkit.train.averaging import ema_
from stealkit.train.loop import fit

log = logging.getLogger(__name__)

VARIANTS = ("label", "probability")
GEN_LOSSES = ("log", "confidence")
SELECTS = ("last", "fresh")


# --- the maths, as pure functions ---------------------------------------------------------------
def confidence(logits: Tensor) -> Tensor:
    """Top-class probability max_c softmax(logits)_c per row (N,)."""
    return F.softmax(logits, dim=1).max(dim=1).values


def log_confidence_loss(logits: Tensor) -> Tensor:
    """The paper's generator loss (Eq. 2): -mean_z log S_k(G(z)), k the top class, computed as
    minus the row maximum of log-softmax (stable where S_k is tiny)."""
    return -F.log_softmax(logits, dim=1).max(dim=1).values.mean()


def confidence_loss(logits: Tensor) -> Tensor:
    """Our earlier generator loss: minus the mean top-class confidence, -mean_z S_k(G(z))."""
    return -confidence(logits).mean()


GENERATOR_LOSSES = {"log": log_confidence_loss, "confidence": confidence_loss}


def class_balance_loss(logits: Tensor) -> Tensor:
    """sum_c pbar_c log pbar_c with pbar the batch-mean prediction: -H(pbar), lowest (-log C) when
    the batch is spread evenly over the classes."""
    pbar = F.softmax(logits, dim=1).mean(dim=0)
    return (pbar * torch.log(pbar.clamp_min(1e-12))).sum()


def substitute_loss(logits: Tensor, targets: Tensor) -> Tensor:
    """Cross-entropy on victim labels (N,) long, or soft cross-entropy on victim scores (N, C)."""
    if targets.dim() == 1:
        return F.cross_entropy(logits, targets)
    return soft_cross_entropy(logits, targets)


# --- the attack ---------------------------------------------------------------------------------
class MEGA(Attack):
    """MEGA: cooperative generator and substitute, trained by coordinate descent.

    Args:
        variant: "label" (the paper's setting: top-1 labels only) or "probability".
        query_batch: size of the fixed noise set Z, i.e. queries per round.
        nz: noise dimension (must match a generator you pass in).
        ngf: width of the default generator's trunk (64 as in DFAD/DFME; 16-32 is enough for
            28x28 digits and several times faster on a CPU).
        sub_batch: mini-batch of the substitute step.
        sub_lr: Adam learning rate of the substitute (one optimizer for the whole run).
        max_epochs: most passes of one substitute step.
        patience: passes without improvement that end a substitute step.
        min_delta: smallest drop of the pass loss that counts as improvement.
        gen_steps: generator updates per round.
        gen_lr: Adam learning rate of the generator.
        gen_loss: "log" (Eq. 2, -log S_k) or "confidence" (ours, -S_k).
        tail: output layer of the default generator: "bn-tanh" (affine-free batch norm, then
            tanh) or "sigmoid" (no final batch norm, as DaST); see ``build_generator``.
        select: "last" (the paper: the last round's substitute) or "fresh" (the checkpoint whose
            agreement with the next rounds' freshly bought labels is highest; no real data).
        select_window: rounds of fresh labels that score one checkpoint (``select="fresh"``).
        balance_weight: weight of ``class_balance_loss`` in the generator step (0: off).
        replay: earlier bought pairs (the most recent ones) the substitute step also trains on;
            0 trains on the current round's pairs only, as the paper.
        replay_sample: pairs drawn afresh each round, uniformly from all earlier rounds, that the
            substitute step also trains on (0: off). Keeps every bought pair in memory
            (4 bytes per pixel: about 1.3 GB for 400k 28x28 images).
        z_refresh: fraction of the noise set Z drawn anew after each generator step, in [0, 1];
            0 keeps Z fixed, as the paper.
        average: decay in [0, 1) of an exponential moving average of the substitute's weights,
            updated after each round's substitute step; the stolen model is that average. 0
            returns the last round's weights, as the paper.

    Example:
        >>> result = MEGA().run(oracle, surrogate=build_model("lenet5", ...), budget=20000)
    """

    needs_pool = False

    @property
    def accepts(self) -> frozenset[OutputKind]:  # type: ignore[override]
        """The label variant learns from any classifier answer, the probability one from scores."""
        return CLASS_OUTPUTS if self.variant == "label" else SCORE_OUTPUTS

    def __init__(
        self,
        *,
        variant: str = "label",
        query_batch: int = 256,
        nz: int = 100,
        ngf: int = 64,
        sub_batch: int = 64,
        sub_lr: float = 1e-3,
        max_epochs: int = 30,
        patience: int = 3,
        min_delta: float = 1e-3,
        gen_steps: int = 5,
        gen_lr: float = 1e-3,
        gen_loss: str = "log",
        tail: str = "bn-tanh",
        select: str = "last",
        select_window: int = 3,
        balance_weight: float = 0.0,
        replay: int = 0,
        replay_sample: int = 0,
        z_refresh: float = 0.0,
        average: float = 0.0,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if gen_loss not in GEN_LOSSES:
            raise ValueError(
                f"gen_loss must be one of {GEN_LOSSES} ('log': the paper's Eq. 2), got {gen_loss!r}"
            )
        if select not in SELECTS:
            raise ValueError(
                f"select must be one of {SELECTS} ('last': the paper; 'fresh': best held-out "
                f"agreement on freshly bought labels), got {select!r}"
            )
        if (
            isinstance(select_window, bool)
            or not isinstance(select_window, int)
            or select_window < 1
        ):
            raise ValueError(
                f"select_window must be a whole number of rounds >= 1, got {select_window!r}"
            )
        self.gen_loss, self.tail = gen_loss, check_tail(tail)
        self.select, self.select_window = select, select_window
        if min(query_batch, nz, ngf, sub_batch, max_epochs, patience, gen_steps) < 1:
            raise ValueError(
                "query_batch, nz, ngf, sub_batch, max_epochs, patience and gen_steps must be >= 1"
            )
        if sub_lr <= 0 or gen_lr <= 0 or min_delta < 0 or balance_weight < 0:
            raise ValueError("sub_lr and gen_lr must be > 0; min_delta and balance_weight >= 0")
        self.variant, self.query_batch, self.nz, self.ngf = variant, query_batch, nz, ngf
        self.sub_batch, self.sub_lr, self.max_epochs = sub_batch, sub_lr, max_epochs
        self.patience, self.min_delta = patience, min_delta
        self.gen_steps, self.gen_lr, self.balance_weight = gen_steps, gen_lr, balance_weight
        self.replay = _pair_count("replay", replay)
        self.replay_sample = _pair_count("replay_sample", replay_sample)
        if not _is_number(z_refresh) or not 0.0 <= z_refresh <= 1.0:
            raise ValueError(
                f"z_refresh is the fraction of Z redrawn each round, in [0, 1]; got {z_refresh!r}"
            )
        self.z_refresh = float(z_refresh)
        if not _is_number(average) or not 0.0 <= average < 1.0:
            raise ValueError(
                f"average is the decay of the weight average, in [0, 1) (0: off); got {average!r}"
            )
        self.average = float(average)
        if replay and replay_sample:
            raise ValueError("use replay (the most recent pairs) or replay_sample, not both")

    def __repr__(self) -> str:
        return (
            f"MEGA(variant={self.variant!r}, query_batch={self.query_batch}, nz={self.nz}, ngf={self.ngf}, "
            f"sub_batch={self.sub_batch}, sub_lr={self.sub_lr}, max_epochs={self.max_epochs}, "
            f"patience={self.patience}, min_delta={self.min_delta}, gen_steps={self.gen_steps}, "
            f"gen_lr={self.gen_lr}, gen_loss={self.gen_loss!r}, tail={self.tail!r}, "
            f"select={self.select!r}, select_window={self.select_window}, "
            f"balance_weight={self.balance_weight}, replay={self.replay}, "
            f"replay_sample={self.replay_sample}, z_refresh={self.z_refresh}, "
            f"average={self.average})"
        )

    # --- one round's two coordinate steps ---------------------------------------------------
    def substitute_step(
        self,
        substitute: nn.Module,
        x: Tensor,
        targets: Tensor,
        optimizer: torch.optim.Optimizer,
        *,
        seed: int,
        device: torch.device,
    ) -> list[float]:
        """Passes of the shared training loop over (x, targets) until the pass loss stops falling;
        returns the loss of each pass."""
        losses: list[float] = []
        best, stale = float("inf"), 0
        for epoch in range(self.max_epochs):
            hist = fit(
                substitute,
                x,
                targets,
                loss_fn=substitute_loss,
                epochs=1,
                batch_size=self.sub_batch,
                schedule="constant",
                optimizer_state=optimizer,
                seed=seed + epoch,
                device=device,
            )
            losses.append(hist.epoch_loss[-1])
            if losses[-1] < best - self.min_delta:
                best, stale = losses[-1], 0
            else:
                stale += 1
                if stale >= self.patience:
                    break
        return losses

    def generator_step(
        self,
        generator: nn.Module,
        substitute: nn.Module,
        z: Tensor,
        optimizer: torch.optim.Optimizer,
    ) -> list[float]:
        """``gen_steps`` updates of G towards confident substitute predictions on G(z) (Eq. 2, or
        the ``gen_loss`` chosen), with the substitute frozen (kept in train mode, as while it
        trains); returns each step's loss."""
        generator.train()
        substitute.train()
        losses = []
        loss_fn = GENERATOR_LOSSES[self.gen_loss]
        with frozen(substitute):
            for _ in range(self.gen_steps):
                logits = substitute(generator(z))
                loss = loss_fn(logits)
                if self.balance_weight:
                    loss = loss + self.balance_weight * class_balance_loss(logits)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
        substitute.eval()
        return losses

    # --- the attack ---------------------------------------------------------------------------
    def run(
        self,
        oracle: Oracle,
        *,
        pool: QueryPool | None = None,
        surrogate: nn.Module,
        generator: nn.Module | None = None,
        budget: int,
        seed: int = 0,
        device: torch.device | str | None = None,
        monitor: Monitor | None = None,
    ) -> AttackResult:
        """Steal with exactly ``budget`` queries of generated images; no data is used.

        ``generator`` maps (N, nz) noise to images in the oracle's spec; a fresh DCGAN-style one
        (``build_generator("dcgan", ..., tail=self.tail)``, seeded by ``seed``) when ``None``.
        """
        self.refuse_pool(pool)
        budget = spend_limit(oracle, budget)
        if self.variant == "probability" and oracle.output is OutputKind.LABEL:
            raise ValueError("MEGA's probability variant needs scores; this oracle gives labels")
        num_classes = classifier_classes(oracle)
        self.check_oracle(oracle)
        dev = resolve_device(device)
        gen = torch.Generator().manual_seed(seed)
        if generator is None:
            generator = default_generator(
                oracle, "dcgan", self.nz, seed=next_seed(gen), ngf=self.ngf
            ).set_tail(self.tail)
        generator.to(dev)
        surrogate.to(dev)
        z = torch.randn((self.query_batch, self.nz), generator=gen).to(dev)
        opt_s = torch.optim.Adam(surrogate.parameters(), lr=self.sub_lr)
        opt_g = torch.optim.Adam(generator.parameters(), lr=self.gen_lr, betas=(0.5, 0.999))
        start = oracle.ledger.spent
        xs: list[Tensor] = []
        ts: list[Tensor] = []
        past: tuple[Tensor, Tensor] | None = None  # every bought pair, for replay_sample
        history: list[dict[str, float]] = []
        label_counts = torch.zeros(num_classes, dtype=torch.long)
        averaged: nn.Module | None = None  # the weight average, when self.average
        chooser = FreshSelection(self.select_window) if self.select == "fresh" else None
        spent = 0
        while spent < budget:
            n = min(self.query_batch, budget - spent)
            generator.train()
            with torch.no_grad():
                x = generator(z)[:n].float().cpu()
            response = oracle.query(x)
            spent += n
            labels = response.labels()
            stolen = averaged if averaged is not None else surrogate
            fresh = agreement_of(stolen, x, labels, dev)  # before this round trains on them
            if chooser is not None:
                chooser.score(x, labels, dev)
            t = labels if self.variant == "label" else training_targets(response)
            label_counts += torch.bincount(labels, minlength=num_classes)
            xs, ts = (
                _keep_recent(xs + [x], self.replay + n),
                _keep_recent(ts + [t], self.replay + n),
            )
            x_train, t_train = torch.cat(xs), torch.cat(ts)
            if self.replay_sample:
                if past is None:  # one buffer for the whole budget, filled as pairs are bought
                    past = (
                        x.new_empty((budget, *x.shape[1:])),
                        t.new_empty((budget, *t.shape[1:])),
                    )
                before = spent - n
                if before:
                    pick = torch.randperm(before, generator=gen)[: self.replay_sample]
                    x_train = torch.cat([x_train, past[0][pick]])
                    t_train = torch.cat([t_train, past[1][pick]])
                past[0][before:spent], past[1][before:spent] = x, t
            s_losses = self.substitute_step(
                surrogate, x_train, t_train, opt_s, seed=next_seed(gen), device=dev
            )
            row = {
                "queries": float(spent),
                "fresh_agreement": fresh,
                "substitute_loss": s_losses[-1],
                "substitute_passes": float(len(s_losses)),
            }
            if spent < budget:  # a generator step after the last purchase would be wasted
                row["generator_loss"] = self.generator_step(generator, surrogate, z, opt_g)[-1]
                refresh = round(self.z_refresh * self.query_batch)
                if refresh:
                    pick = torch.randperm(self.query_batch, generator=gen)[:refresh]
                    z[pick.to(dev)] = torch.randn((refresh, self.nz), generator=gen).to(dev)
            history.append(row)
            log.debug("MEGA round %d: %s", len(history), row)
            if self.average:
                averaged = weight_average(averaged, surrogate, self.average)
            stolen = averaged if averaged is not None else surrogate
            if chooser is not None and spent < budget:  # the last weights get no fresh labels
                chooser.add(len(history), spent, stolen)
            if monitor is not None:
                monitor(stolen, spent)
        if averaged is not None:
            surrogate.load_state_dict(averaged.state_dict())
        info: dict[str, Any] = {
            "rounds": len(history),
            "final_train_loss": history[-1]["substitute_loss"],
            "label_histogram": label_counts.tolist(),
            "fresh_agreement": [round(r["fresh_agreement"], 5) for r in history],
        }
        if chooser is not None:
            info |= chooser.summary()
            if chooser.best is not None:
                surrogate.load_state_dict(chooser.best.state)
        return AttackResult(
            surrogate=surrogate.eval(),
            queries=oracle.ledger.spent - start,
            history=history,
            info=info,
        )


def weight_average(averaged: nn.Module | None, model: nn.Module, decay: float) -> nn.Module:
    """One step of an exponential moving average of ``model``'s weights: a copy of ``model`` the
    first time, then ``decay * averaged + (1 - decay) * model`` per floating-point tensor (buffers
    such as batch-norm statistics are averaged too; integer buffers are copied)."""
    if averaged is None:
        return copy.deepcopy(model).eval()
    ema_(averaged, model, decay, buffers="average")
    return averaged


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _pair_count(name: str, value: object) -> int:
    """A number of bought pairs, checked: a whole number >= 0 (not a bool, not 2000.0)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be a whole number of pairs >= 0, got {value!r}")
    return value


def _keep_recent(chunks: list[Tensor], rows: int) -> list[Tensor]:
    """The last ``rows`` rows of a list of tensors, as a list of (possibly trimmed) chunks."""
    out: list[Tensor] = []
    for c in reversed(chunks):
        if rows <= 0:
            break
        out.append(c[-rows:])
        rows -= len(out[-1])
    return out[::-1]
