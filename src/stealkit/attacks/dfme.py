"""DFME: data-free model extraction.

Truong, Maini, Walls and Papernot, CVPR 2021. https://arxiv.org/abs/2011.14779

Data-free and probability-only. A generator G and the student S play a min-max game on the L1
disagreement between S's logits and the victim's logits on generated images:

    L(x) = mean_c |S(x)_c - l_c(x)|,     l(x) = log p(x) - mean_c log p(x)_c,

where p(x) are the victim's probabilities (the logits are recovered up to a constant by the
mean correction, as the paper does). log p is taken in float64 with p floored at ``prob_floor``
(1e-30): a confident victim's small classes (p ~ 1e-10 .. 1e-25 on the MNIST CNN) keep their
differences, which our earlier float32 floor of 1e-8 flattened to one value, erasing their signal
(``prob_floor=1e-8`` restores it). Where the oracle answers logits, they are centred directly,
with no round trip through probabilities. S minimises L on fresh generated batches (``d_iter``
steps per round); G maximises it (``g_iter`` steps per round). The victim has no gradient, so
G's gradient with respect to its pre-activation output t = G_pre(z) is estimated by forward
differences along m random unit directions u_j (the paper's Eq. 5), with x = act(t):

    grad_t f(t) ~ (d / m) sum_j [f(t + eps u_j) - f(t)] / eps * u_j,    f = -L,  d = dim(t),

then back-propagated through G. One generator step therefore queries every image at its point
and at m perturbed points: n (m + 1) queries, all through ``oracle.query``; one student step
queries n. A round costs n (g_iter (m + 1) + d_iter); ``round_plan`` shrinks the last round's
batch and spends the rest on one final student step so that exactly ``budget`` queries are
spent. Student: SGD with momentum and weight decay; generator: Adam; both learning rates are
multiplied by ``lr_scale`` at the fractions ``lr_milestones`` of the rounds (as the authors).

The default generator is stealkit's DCGAN-style one with ``tail="bn-tanh"``: an affine-free batch
norm on the output channels, then (tanh + 1) / 2. That is our reading of the DFME generator (the
DFAD layout); not verified here, the DFME paper's text is not available offline.
``tail="sigmoid"`` drops the batch norm and ends in a sigmoid.
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stealkit.attacks.base import (
    SCORE_OUTPUTS,
    Attack,
    AttackResult,
    training_targets,
)
from stealkit.attacks.data_free import (
    Monitor,
    next_seed,
    zeroth_order_setup,
)
from stealkit.data.pool import QueryPool
from stealkit.models.generators import Generator, check_tail
from stealkit.oracle.base import Oracle
from stealkit.oracle.response import OutputKind, Response
from stealkit.train.loop import fit

log = logging.getLogger(__name__)


# --- the maths, as pure functions ---------------------------------------------------------------
def logits_from_probs(probs: Tensor, *, floor: float = 1e-30) -> Tensor:
    """l = log p - mean_c log p per row, the victim's logits up to nothing (if p is exact),
    computed in float64 with p floored at ``floor``; returned as float32."""
    logp = torch.log(probs.double().clamp_min(floor))
    return (logp - logp.mean(dim=1, keepdim=True)).float()


def centred_logits(logits: Tensor) -> Tensor:
    """l - mean_c l per row: what ``logits_from_probs`` recovers, from logits themselves."""
    v = logits.double()
    return (v - v.mean(dim=1, keepdim=True)).float()


def victim_logits_of(response: Response, *, floor: float = 1e-30) -> Tensor:
    """The approximate victim logits of one answer: centred logits where the oracle answers
    logits, else ``logits_from_probs`` of its (renormalised) scores."""
    if response.kind is OutputKind.LOGITS:
        return centred_logits(response.values)
    return logits_from_probs(training_targets(response), floor=floor)


def disagreement(student_logits: Tensor, victim_logits: Tensor) -> Tensor:
    """Per-row L1 disagreement mean_c |s_c - l_c| (N,)."""
    return (student_logits - victim_logits).abs().mean(dim=1)


def random_directions(n: int, m: int, shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
    """(n, m, *shape) directions drawn uniformly from the unit sphere of dimension prod(shape)."""
    u = torch.randn((n, m, math.prod(shape)), generator=generator)
    return (u / u.norm(dim=2, keepdim=True)).view(n, m, *shape)


def forward_difference_gradient(values: Tensor, directions: Tensor, eps: float) -> Tensor:
    """Zeroth-order gradient (n, *shape) from f at the m perturbed points and then the base point.

    Args:
        values: (n, m + 1) f(t + eps u_1), ..., f(t + eps u_m), f(t) per row.
        directions: (n, m, *shape) unit directions u_j.
        eps: step of the differences.
    """
    n, m = directions.shape[:2]
    d = math.prod(directions.shape[2:])
    diffs = (values[:, :m] - values[:, m:]) / eps
    return d * (diffs.view(n, m, *([1] * (directions.dim() - 2))) * directions).mean(dim=1)


def round_plan(budget: int, query_batch: int, per_image: int) -> tuple[list[int], int]:
    """Batch sizes of the rounds and the leftover queries of one last student step.

    A round on n images costs ``n * per_image``; rounds use ``query_batch`` images until the
    rest cannot pay for one, the last round takes as many images as the rest pays for, and the
    leftover (< per_image) buys one final student batch, so the plan spends ``budget`` exactly.
    """
    full, rest = divmod(budget, query_batch * per_image)
    rounds = [query_batch] * full
    if rest >= per_image:
        rounds.append(rest // per_image)
    return rounds, rest % per_image


# --- the attack ---------------------------------------------------------------------------------
class DFME(Attack):
    """Data-free model extraction with zeroth-order gradient estimates for the generator.

    Args:
        query_batch: generated images per step.
        nz: noise dimension.
        ngf: width of the default generator's trunk (64 as in DFAD/DFME; 16-32 is enough for
            28x28 digits and several times faster on a CPU).
        grad_m: random directions per image in the gradient estimate.
        grad_eps: step of the forward differences.
        g_iter: generator steps per round.
        d_iter: student steps per round.
        student_lr: SGD learning rate of the student (momentum 0.9).
        weight_decay: of the student's SGD.
        generator_lr: Adam learning rate of the generator.
        lr_milestones: fractions of the rounds after which both learning rates are scaled.
        lr_scale: the factor applied at each milestone.
        prob_floor: smallest probability before the log of the logit recovery, in (0, 1).
        tail: output layer of the default generator: "bn-tanh" (DFME's) or "sigmoid".

    Example:
        >>> result = DFME().run(oracle, surrogate=build_model("resnet8", ...), budget=2_000_000)
    """

    needs_pool = False
    accepts = SCORE_OUTPUTS

    def __init__(
        self,
        *,
        query_batch: int = 256,
        nz: int = 256,
        ngf: int = 64,
        grad_m: int = 1,
        grad_eps: float = 1e-3,
        g_iter: int = 1,
        d_iter: int = 5,
        student_lr: float = 0.1,
        weight_decay: float = 5e-4,
        generator_lr: float = 1e-4,
        lr_milestones: tuple[float, ...] = (0.1, 0.3, 0.5),
        lr_scale: float = 0.3,
        prob_floor: float = 1e-30,
        tail: str = "bn-tanh",
    ) -> None:
        if min(query_batch, nz, ngf, grad_m, g_iter, d_iter) < 1:
            raise ValueError("query_batch, nz, ngf, grad_m, g_iter and d_iter must be >= 1")
        if grad_eps <= 0 or student_lr <= 0 or generator_lr <= 0 or weight_decay < 0:
            raise ValueError("grad_eps, student_lr and generator_lr must be > 0, weight_decay >= 0")
        if not all(0 < f < 1 for f in lr_milestones) or not 0 < lr_scale <= 1:
            raise ValueError("lr_milestones must lie in (0, 1) and lr_scale in (0, 1]")
        self.query_batch, self.nz, self.grad_m, self.grad_eps = query_batch, nz, grad_m, grad_eps
        self.g_iter, self.d_iter, self.ngf = g_iter, d_iter, ngf
        self.student_lr, self.weight_decay = student_lr, weight_decay
        self.generator_lr = generator_lr
        self.lr_milestones, self.lr_scale = tuple(lr_milestones), lr_scale
        if isinstance(prob_floor, bool) or not isinstance(prob_floor, int | float):
            raise ValueError(f"prob_floor must be a number in (0, 1), got {prob_floor!r}")
        if not 0.0 < prob_floor < 1.0:
            raise ValueError(
                f"prob_floor must lie in (0, 1) (1e-30 keeps a confident victim's small classes), "
                f"got {prob_floor!r}"
            )
        self.prob_floor, self.tail = float(prob_floor), check_tail(tail)

    def __repr__(self) -> str:
        return (
            f"DFME(query_batch={self.query_batch}, nz={self.nz}, ngf={self.ngf}, grad_m={self.grad_m}, "
            f"grad_eps={self.grad_eps}, g_iter={self.g_iter}, d_iter={self.d_iter}, "
            f"student_lr={self.student_lr}, weight_decay={self.weight_decay}, "
            f"generator_lr={self.generator_lr}, lr_milestones={self.lr_milestones}, "
            f"lr_scale={self.lr_scale}, prob_floor={self.prob_floor}, tail={self.tail!r})"
        )

    @property
    def queries_per_image(self) -> int:
        """Queries one image of a round costs: g_iter (m + 1) + d_iter."""
        return self.g_iter * (self.grad_m + 1) + self.d_iter

    def victim_logits(self, oracle: Oracle, x: Tensor) -> Tensor:
        """Query the victim on x (n queries) and recover its logits from its scores."""
        response = oracle.query(x.detach().float().cpu())
        return victim_logits_of(response, floor=self.prob_floor)

    def estimate_gradient(
        self,
        oracle: Oracle,
        student: nn.Module,
        generator: Generator,
        pre: Tensor,
        gen: torch.Generator,
    ) -> tuple[Tensor, float]:
        """Forward-difference estimate of grad_t f at the pre-activations ``pre`` (n, C, H, W),
        f = -L; costs exactly n (grad_m + 1) queries, in one oracle call. Returns the estimate
        (on pre's device) and the mean disagreement at the base points."""
        n, m = pre.shape[0], self.grad_m
        u = random_directions(n, m, tuple(pre.shape[1:]), gen).to(pre.device)
        t = pre.detach()
        points = torch.cat([t.unsqueeze(1) + self.grad_eps * u, t.unsqueeze(1)], dim=1)
        x = generator.activation(points.flatten(0, 1))  # (n (m + 1), C, H, W), image-major
        v = self.victim_logits(oracle, x).to(pre.device)
        student.eval()
        with torch.no_grad():
            f = -disagreement(student(x).float(), v).view(n, m + 1)
        return forward_difference_gradient(f, u, self.grad_eps), float(-f[:, m].mean())

    def generator_step(
        self,
        oracle: Oracle,
        student: nn.Module,
        generator: Generator,
        n: int,
        optimizer: torch.optim.Optimizer,
        gen: torch.Generator,
        device: torch.device,
    ) -> float:
        """One ascent step of G on the estimated disagreement; n (grad_m + 1) queries."""
        generator.train()
        z = torch.randn((n, self.nz), generator=gen).to(device)
        pre = generator.pre_activation(z)
        grad, loss = self.estimate_gradient(oracle, student, generator, pre, gen)
        optimizer.zero_grad(set_to_none=True)
        pre.backward(grad / n)  # the gradient of the batch mean of f = -L: descending it ascends L
        optimizer.step()
        return loss

    def student_step(
        self,
        oracle: Oracle,
        student: nn.Module,
        generator: Generator,
        n: int,
        optimizer: torch.optim.Optimizer,
        gen: torch.Generator,
        device: torch.device,
    ) -> float:
        """One descent step of S on L over a fresh generated batch; n queries."""
        z = torch.randn((n, self.nz), generator=gen).to(device)
        with torch.no_grad():
            x = generator(z).float().cpu()
        v = self.victim_logits(oracle, x)
        hist = fit(
            student,
            x,
            v,
            loss_fn=F.l1_loss,
            steps=1,
            batch_size=n,
            schedule="constant",
            optimizer_state=optimizer,
            seed=next_seed(gen),
            device=device,
        )
        return hist.epoch_loss[-1]

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

        ``generator`` must be an unconditional ``stealkit.models.generators.Generator`` (DFME
        perturbs its pre-activation output); a fresh one seeded by ``seed`` when ``None``.
        """
        own_generator = generator is None
        budget, dev, gen, generator = zeroth_order_setup(
            self,
            oracle,
            pool=pool,
            budget=budget,
            seed=seed,
            device=device,
            generator=generator,
            nz=self.nz,
            ngf=self.ngf,
            why_scores="it approximates logits as log p minus its mean",
        )
        if own_generator:
            generator.set_tail(self.tail)
        generator.to(dev)
        surrogate.to(dev)
        opt_s = torch.optim.SGD(
            surrogate.parameters(),
            lr=self.student_lr,
            momentum=0.9,
            weight_decay=self.weight_decay,
        )
        opt_g = torch.optim.Adam(generator.parameters(), lr=self.generator_lr)
        rounds, leftover = round_plan(budget, self.query_batch, self.queries_per_image)
        milestones = sorted({max(1, int(f * len(rounds))) for f in self.lr_milestones})
        scheds = [
            torch.optim.lr_scheduler.MultiStepLR(o, milestones, self.lr_scale)
            for o in (opt_s, opt_g)
        ]
        start = oracle.ledger.spent
        history: list[dict[str, float]] = []
        for n in rounds:
            g_loss = [
                self.generator_step(oracle, surrogate, generator, n, opt_g, gen, dev)
                for _ in range(self.g_iter)
            ]
            s_loss = [
                self.student_step(oracle, surrogate, generator, n, opt_s, gen, dev)
                for _ in range(self.d_iter)
            ]
            for sched in scheds:
                sched.step()
            history.append(
                {
                    "queries": float(oracle.ledger.spent - start),
                    "generator_disagreement": g_loss[-1],
                    "student_loss": s_loss[-1],
                }
            )
            log.debug("DFME round %d: %s", len(history), history[-1])
            if monitor is not None:
                monitor(surrogate, oracle.ledger.spent - start)
        if leftover:
            self.student_step(oracle, surrogate, generator, leftover, opt_s, gen, dev)
            if monitor is not None:
                monitor(surrogate, oracle.ledger.spent - start)
        return AttackResult(
            surrogate=surrogate.eval(),
            queries=oracle.ledger.spent - start,
            history=history,
            info={
                "rounds": len(rounds),
                "leftover_student_queries": leftover,
                "queries_per_image": self.queries_per_image,
                "final_train_loss": history[-1]["student_loss"] if history else float("nan"),
            },
        )
