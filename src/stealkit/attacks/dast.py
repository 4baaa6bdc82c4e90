"""DaST: data-free substitute training for adversarial attacks.

Zhou, Wu, Hu and Wang, CVPR 2020. https://arxiv.org/abs/2003.12703

Data-free. A label-controllable generator G(z, n), one projection branch per class n feeding a
shared trunk, plays a game against the substitute D:

- D imitates the victim T on generated images, minimising  L_D = d(T(x), D(x))  with x = G(z, n);
- G maximises the imitation error while keeping its class under control,
  L_G = exp(-d(T(x), D(x))) + alpha * CE(D(x), n).

The victim is a black box, so the gradient of d reaches G through D only: T(x) enters as a
constant (the substitute stands in for the victim). d is the cross-entropy of D against T's
top-1 label in DaST-L (``variant="label"``); DaST-P (``variant="probability"``) adds
``beta`` times the mean squared error between the log-probabilities of D and of T, as in the
authors' release. Each round draws fresh noise with classes spread evenly over a batch of
``query_batch``, buys T's answers once, takes ``sub_steps`` substitute updates and one generator
update on that batch; the last batch is trimmed so that exactly ``budget`` queries are spent.
The authors' release also shrinks alpha once the control loss falls below 0.1; we keep alpha
fixed.

The default generator is stealkit's multi-branch one (``build_generator("multibranch", ...)``)
with ``tail="sigmoid"``: its last convolution goes straight into a sigmoid, with no batch norm
before it, as DaST's generator (not verified here from the paper's text, which is not available
offline). ``tail="bn-tanh"`` is our earlier default, DFAD/DFME's affine-free batch norm then
(tanh + 1) / 2, which pins each batch's mean pixel near grey.
"""

from __future__ import annotations

import logging

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
from stealkit.attacks.data_free import (
    Monitor,
    classifier_classes,
    default_generator,
    frozen,
    next_seed,
    resolve_device,
)
from stealkit.data.pool import QueryPool
from stealkit.models.generators import Generator, check_tail
from stealkit.oracle.base import Oracle
from stealkit.oracle.response import OutputKind
from stealkit.train.loop import fit

log = logging.getLogger(__name__)

VARIANTS = ("label", "probability")


# --- the maths, as pure functions ---------------------------------------------------------------
def dast_distance(logits: Tensor, victim_probs: Tensor, *, beta: float = 0.0) -> Tensor:
    """d(T(x), D(x)): CE(D(x), argmax T(x)) + beta * MSE(log softmax D(x), log T(x)).

    ``beta = 0`` is DaST-L (only T's label matters); ``beta > 0`` is DaST-P.
    """
    d = F.cross_entropy(logits, victim_probs.argmax(dim=1))
    if beta:
        log_t = torch.log(victim_probs.clamp_min(1e-8))
        d = d + beta * F.mse_loss(F.log_softmax(logits, dim=1), log_t)
    return d


def imitation_loss(logits: Tensor, victim_probs: Tensor, *, beta: float = 0.0) -> Tensor:
    """exp(-d): the generator lowers it by finding images where D and T disagree."""
    return torch.exp(-dast_distance(logits, victim_probs, beta=beta))


def label_control_loss(logits: Tensor, labels: Tensor) -> Tensor:
    """CE(D(G(z, n)), n): branch n should make images the substitute calls class n."""
    return F.cross_entropy(logits, labels)


def balanced_labels(n: int, num_classes: int, generator: torch.Generator) -> Tensor:
    """n class labels, as even over the classes as n allows, in random order."""
    labels = torch.arange(n) % num_classes
    return labels[torch.randperm(n, generator=generator)]


# --- the attack ---------------------------------------------------------------------------------
class DaST(Attack):
    """DaST-L / DaST-P with a multi-branch label-controllable generator.

    Args:
        variant: "label" (DaST-L) or "probability" (DaST-P).
        query_batch: generated images bought per round.
        nz: noise dimension (must match a generator you pass in).
        ngf: width of the default generator's trunk (64 as in DFAD/DFME; 16-32 is enough for
            28x28 digits and several times faster on a CPU).
        lr: Adam learning rate of both networks (betas 0.5, 0.999, as the authors).
        alpha: weight of the label-control loss.
        beta: weight of the log-probability MSE in DaST-P's distance.
        sub_steps: substitute updates per bought batch.
        tail: output layer of the default generator: "sigmoid" (DaST's) or "bn-tanh" (ours
            before); see ``build_generator``.

    Example:
        >>> result = DaST(variant="label").run(oracle, surrogate=s, budget=50000)
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
        query_batch: int = 500,
        nz: int = 128,
        ngf: int = 64,
        lr: float = 1e-4,
        alpha: float = 0.2,
        beta: float = 0.1,
        sub_steps: int = 1,
        tail: str = "sigmoid",
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if min(query_batch, nz, ngf, sub_steps) < 1 or lr <= 0 or alpha < 0 or beta < 0:
            raise ValueError(
                "query_batch, nz, ngf and sub_steps must be >= 1, lr > 0, alpha and beta >= 0"
            )
        self.variant, self.query_batch, self.nz, self.lr = variant, query_batch, nz, lr
        self.alpha, self.beta, self.sub_steps, self.ngf = alpha, beta, sub_steps, ngf
        self.tail = check_tail(tail)

    def __repr__(self) -> str:
        return (
            f"DaST(variant={self.variant!r}, query_batch={self.query_batch}, nz={self.nz}, ngf={self.ngf}, "
            f"lr={self.lr}, alpha={self.alpha}, beta={self.beta}, sub_steps={self.sub_steps}, "
            f"tail={self.tail!r})"
        )

    @property
    def _beta(self) -> float:
        return self.beta if self.variant == "probability" else 0.0

    def substitute_step(
        self,
        substitute: nn.Module,
        x: Tensor,
        victim_probs: Tensor,
        optimizer: torch.optim.Optimizer,
        *,
        seed: int,
        device: torch.device,
    ) -> float:
        """``sub_steps`` updates of D on the whole bought batch; returns the last loss."""
        beta = self._beta
        hist = fit(
            substitute,
            x,
            victim_probs,
            loss_fn=lambda logits, p: dast_distance(logits, p, beta=beta),
            steps=self.sub_steps,
            batch_size=len(x),
            schedule="constant",
            optimizer_state=optimizer,
            seed=seed,
            device=device,
        )
        return hist.epoch_loss[-1]

    def generator_step(
        self,
        generator: nn.Module,
        substitute: nn.Module,
        z: Tensor,
        labels: Tensor,
        victim_probs: Tensor,
        optimizer: torch.optim.Optimizer,
    ) -> tuple[float, float]:
        """One update of G on L_G, with D frozen (in train mode, as the authors); returns the
        imitation and label-control losses."""
        generator.train()
        substitute.train()
        with frozen(substitute):
            logits = substitute(generator(z, labels))
            imitate = imitation_loss(logits, victim_probs, beta=self._beta)
            control = label_control_loss(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            (imitate + self.alpha * control).backward()
            optimizer.step()
        substitute.eval()
        return float(imitate.detach()), float(control.detach())

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

        ``generator(z, labels)`` maps (N, nz) noise and (N,) classes to images in the oracle's
        spec; a fresh multi-branch one (seeded by ``seed``) when ``None``.
        """
        self.refuse_pool(pool)
        budget = spend_limit(oracle, budget)
        num_classes = classifier_classes(oracle)
        if self.variant == "probability" and oracle.output is OutputKind.LABEL:
            raise ValueError("DaST-P needs scores; this oracle gives labels only (use DaST-L)")
        self.check_oracle(oracle)
        dev = resolve_device(device)
        gen = torch.Generator().manual_seed(seed)
        if generator is None:
            generator = default_generator(
                oracle,
                "multibranch",
                self.nz,
                seed=next_seed(gen),
                num_classes=num_classes,
                ngf=self.ngf,
            ).set_tail(self.tail)
        if isinstance(generator, Generator) and not generator.conditional:
            raise ValueError("DaST needs a label-controllable generator, e.g. 'multibranch'")
        generator.to(dev)
        surrogate.to(dev)
        opt_d = torch.optim.Adam(surrogate.parameters(), lr=self.lr, betas=(0.5, 0.999))
        opt_g = torch.optim.Adam(generator.parameters(), lr=self.lr, betas=(0.5, 0.999))
        start = oracle.ledger.spent
        label_counts = torch.zeros(num_classes, dtype=torch.long)
        history: list[dict[str, float]] = []
        spent = 0
        while spent < budget:
            n = min(self.query_batch, budget - spent)
            z = torch.randn((n, self.nz), generator=gen).to(dev)
            labels = balanced_labels(n, num_classes, gen).to(dev)
            generator.train()
            with torch.no_grad():
                x = generator(z, labels).float().cpu()
            response = oracle.query(x)
            spent += n
            label_counts += torch.bincount(response.labels(), minlength=num_classes)
            if self.variant == "probability":
                p = training_targets(response)
            else:  # DaST-L keeps T's label only, as a one-hot row
                p = F.one_hot(response.labels(), num_classes).float()
            d_loss = self.substitute_step(surrogate, x, p, opt_d, seed=next_seed(gen), device=dev)
            imitate, control = self.generator_step(
                generator, surrogate, z, labels, p.to(dev), opt_g
            )
            row = {"queries": float(spent), "substitute_loss": d_loss}
            row |= {"imitation_loss": imitate, "control_loss": control}
            history.append(row)
            log.debug("DaST round %d: %s", len(history), row)
            if monitor is not None:
                monitor(surrogate, spent)
        return AttackResult(
            surrogate=surrogate.eval(),
            queries=oracle.ledger.spent - start,
            history=history,
            info={
                "rounds": len(history),
                "final_train_loss": history[-1]["substitute_loss"],
                "label_histogram": label_counts.tolist(),
            },
        )
