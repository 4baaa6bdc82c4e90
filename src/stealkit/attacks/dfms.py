"""DFMS-HL: data-free model stealing in a hard-label setting.

Sanyal, Addepalli and Babu, "Towards Data-Free Model Stealing in a Hard Label Setting", CVPR
2022. https://arxiv.org/abs/2204.11022

The victim T answers top-1 labels only. The thief has no training data of T, only proxy images
(unrelated classes: the thief's pool in ``variant="proxy"``; random shapes in the data-free
``variant="synthetic"``). A GAN (generator G, discriminator D) learns an image prior on the proxy
images, and G is then steered by the clone C so that its images cover every class of T:

    L_adv(G) = E_z softplus(-D(G(z)))                       (stay close to the proxy images)
    L_div(G) = sum_j abar_j log abar_j,  abar = (1/N) sum_i softmax(C(G(z_i)))      (Eq. div)
    L_G      = L_adv + lambda_div * L_div

L_div is the negative entropy of the clone's batch-mean prediction: lowest (-log K, K classes)
when the generated batch spreads evenly over the classes, so no class is left ungenerated. The
clone learns T from T's hard labels on G's images (cross-entropy), so it can stand in for T in
L_div, which needs gradients T does not give.

How the budget is spent (our schedule, documented because the paper stages its training): the
GAN is first trained on ``proxy_images`` proxy images for ``gan_steps`` steps, with no queries
(the pool's images are never sent to T). Then rounds alternate, as in the paper's alternating
stage: buy T's labels for ``query_batch`` fresh images of G (the last round is trimmed, so
exactly ``budget`` queries are spent, all on generated images), take ``clone_steps`` clone
updates on every pair bought so far, then ``gen_steps`` GAN updates of D and of G on L_G (with
C frozen). Finally the clone is trained on the whole transfer set by ``recipe``.

Departures: the paper trains the student from scratch between stages, also on T's labels of
proxy images, with augmentation; we train one clone throughout, on generated images only, and
our synthetic proxy is our own shape generator (rectangles, ellipses, rings and bars). The
weight lambda_div = 10 is that of the authors' released scripts for the diversity stage (500 in
their alternating stage); not verified against the paper's text, nor are its reported figures
(we could not retrieve its tables; its released scripts run CIFAR-10 victims, not MNIST).
"""

from __future__ import annotations

import logging
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stealkit.attacks.base import (
    CLASS_OUTPUTS,
    Attack,
    AttackResult,
    TrainRecipe,
    spend_limit,
    train_surrogate,
)
from stealkit.attacks.data_free import (
    Monitor,
    classifier_classes,
    frozen,
    next_seed,
    resolve_device,
)
from stealkit.attacks.mega import class_balance_loss
from stealkit.data.pool import QueryPool
from stealkit.models.gan import adversarial_step, fit_gan, gan_optimizers
from stealkit.oracle.base import Oracle
from stealkit.train.loop import fit

log = logging.getLogger(__name__)

VARIANTS = ("proxy", "synthetic")


# --- the maths, as pure functions ---------------------------------------------------------------
def class_diversity_loss(logits: Tensor) -> Tensor:
    """L_div = sum_j abar_j log abar_j with abar the batch-mean softmax: minimal (-log K) for a
    uniform batch mean, 0 when every row predicts the same class with certainty."""
    return class_balance_loss(logits)


def synthetic_shapes(
    n: int, channels: int, size: int, generator: torch.Generator, *, max_shapes: int = 3
) -> Tensor:
    """(n, channels, size, size) proxy images in [0, 1]: 1 to ``max_shapes`` rotated filled
    shapes (rectangle, ellipse, ring or bar) of random brightness (colour, for 3 channels) on a
    random dark background, plus mild Gaussian noise."""
    if n < 1 or size < 1 or max_shapes < 1 or channels not in (1, 3):
        raise ValueError(f"need n, size, max_shapes >= 1, channels 1 or 3; got {n, size, channels}")
    out = []
    for lo in range(0, n, 1024):
        out.append(_shapes(min(1024, n - lo), channels, size, max_shapes, generator))
    return torch.cat(out)


def _shapes(n: int, c: int, s: int, k: int, g: torch.Generator) -> Tensor:
    def r(*shape: int, lo: float = 0.0, hi: float = 1.0) -> Tensor:
        return lo + (hi - lo) * torch.rand(shape, generator=g)

    grid = (torch.arange(s) + 0.5) / s
    yy, xx = grid.view(1, 1, s, 1), grid.view(1, 1, 1, s)
    cx, cy = r(n, k, 1, 1, lo=0.15, hi=0.85), r(n, k, 1, 1, lo=0.15, hi=0.85)
    a, b = r(n, k, 1, 1, lo=0.08, hi=0.35), r(n, k, 1, 1, lo=0.08, hi=0.35)
    theta = r(n, k, 1, 1, hi=math.pi)
    u = (xx - cx) * torch.cos(theta) + (yy - cy) * torch.sin(theta)
    v = (yy - cy) * torch.cos(theta) - (xx - cx) * torch.sin(theta)
    ellipse = (u / a) ** 2 + (v / b) ** 2 <= 1.0
    masks = torch.stack(
        [
            (u.abs() <= a) & (v.abs() <= b),  # rectangle
            ellipse,
            ellipse & ((u / (0.6 * a)) ** 2 + (v / (0.6 * b)) ** 2 > 1.0),  # ring
            (u.abs() <= a) & (v.abs() <= 0.05),  # bar
        ]
    )
    kind = torch.randint(4, (n, k), generator=g)
    mask = masks.gather(0, kind.view(1, n, k, 1, 1).expand(1, n, k, s, s)).squeeze(0)
    count = torch.randint(1, k + 1, (n, 1), generator=g)
    mask &= (torch.arange(k).view(1, k) < count).view(n, k, 1, 1)
    colour = r(n, k, c, lo=0.4, hi=1.0)
    img = r(n, c, 1, 1, hi=0.3).expand(n, c, s, s).clone()
    for j in range(k):
        img = torch.where(mask[:, j : j + 1], colour[:, j].view(n, c, 1, 1), img)
    return (img + 0.03 * torch.randn(img.shape, generator=g)).clamp_(0.0, 1.0)


# --- the attack ---------------------------------------------------------------------------------
class DFMSHL(Attack):
    """DFMS-HL: a proxy-trained GAN steered to class diversity by the clone; hard labels only.

    Args:
        variant: "proxy" (GAN trained on images of the thief's pool) or "synthetic" (on random
            shapes: data-free, refuses a pool).
        query_batch: generated images bought per round.
        nz: noise dimension of the generator.
        ngf: width of the generator's trunk; ndf: of the discriminator.
        proxy_images: proxy images the GAN learns from (drawn from the pool, or made).
        gan_steps: GAN steps on the proxy images before the first query.
        gan_batch: batch of the GAN steps (pre-training and rounds).
        gan_lr: Adam learning rate of G and D (betas 0.5, 0.999).
        diversity_weight: lambda_div.
        gen_steps: GAN steps (D then G on L_G) per round.
        clone_steps: clone updates per round, on all pairs bought so far.
        clone_batch: batch of the clone updates.
        clone_lr: Adam learning rate of the clone during the rounds.
        recipe: the final training of the clone on the whole transfer set.

    Example:
        >>> result = DFMSHL().run(oracle, pool=fashion, surrogate=s, budget=20000)
    """

    accepts = CLASS_OUTPUTS

    @property
    def needs_pool(self) -> bool:  # type: ignore[override]
        """The proxy variant learns its GAN from the thief's pool; the synthetic one needs none."""
        return self.variant == "proxy"

    buys_pool_images = False  # the pool trains its GAN; the queries are generated

    def __init__(
        self,
        *,
        variant: str = "proxy",
        query_batch: int = 500,
        nz: int = 100,
        ngf: int = 32,
        ndf: int = 32,
        proxy_images: int = 10000,
        gan_steps: int = 2000,
        gan_batch: int = 64,
        gan_lr: float = 2e-4,
        diversity_weight: float = 10.0,
        gen_steps: int = 5,
        clone_steps: int = 20,
        clone_batch: int = 128,
        clone_lr: float = 1e-3,
        recipe: TrainRecipe | None = None,
    ) -> None:
        if variant not in VARIANTS:
            raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
        if min(query_batch, nz, ngf, ndf, proxy_images, gan_steps, gan_batch, clone_batch) < 1:
            raise ValueError(
                "query_batch, nz, ngf, ndf, proxy_images, gan_steps, gan_batch and clone_batch "
                "must be >= 1"
            )
        if gen_steps < 0 or clone_steps < 0:
            raise ValueError("gen_steps and clone_steps must be >= 0 (0 turns that step off)")
        if gan_lr <= 0 or clone_lr <= 0 or diversity_weight < 0:
            raise ValueError("gan_lr and clone_lr must be > 0 and diversity_weight >= 0")
        self.variant, self.query_batch, self.nz = variant, query_batch, nz
        self.ngf, self.ndf, self.proxy_images = ngf, ndf, proxy_images
        self.gan_steps, self.gan_batch, self.gan_lr = gan_steps, gan_batch, gan_lr
        self.diversity_weight, self.gen_steps = diversity_weight, gen_steps
        self.clone_steps, self.clone_batch, self.clone_lr = clone_steps, clone_batch, clone_lr
        self.recipe = recipe or TrainRecipe()

    def __repr__(self) -> str:
        return (
            f"DFMSHL(variant={self.variant!r}, query_batch={self.query_batch}, nz={self.nz}, "
            f"ngf={self.ngf}, ndf={self.ndf}, proxy_images={self.proxy_images}, "
            f"gan_steps={self.gan_steps}, gan_batch={self.gan_batch}, gan_lr={self.gan_lr}, "
            f"diversity_weight={self.diversity_weight}, gen_steps={self.gen_steps}, "
            f"clone_steps={self.clone_steps}, clone_batch={self.clone_batch}, "
            f"clone_lr={self.clone_lr}, recipe={self.recipe})"
        )

    def proxy(self, oracle: Oracle, pool: QueryPool | None, gen: torch.Generator) -> Tensor:
        """The proxy images in the oracle's spec: a random subset of the pool, or shapes."""
        if self.variant == "synthetic":
            self.refuse_pool(pool)
            spec = oracle.input_spec
            if spec.height != spec.width or spec.value_range != (0.0, 1.0):
                raise ValueError("synthetic proxy images are square and in [0, 1]")
            return synthetic_shapes(self.proxy_images, spec.channels, spec.height, gen)
        pool = self.require_pool(pool)
        return pool.images(torch.randperm(len(pool), generator=gen)[: self.proxy_images])

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
        """Learn a GAN on proxy images (no queries), then buy exactly ``budget`` labels of its
        diversity-steered images and train ``surrogate`` on them."""
        if self.variant == "synthetic":
            self.refuse_pool(pool)
        else:
            self.require_pool(pool)
        budget = spend_limit(oracle, budget)
        num_classes = classifier_classes(oracle)
        self.check_oracle(oracle)
        dev = resolve_device(device)
        gen = torch.Generator().manual_seed(seed)
        real = self.proxy(oracle, pool, gen)
        g, d, gan_hist = fit_gan(
            real,
            nz=self.nz,
            ngf=self.ngf,
            ndf=self.ndf,
            steps=self.gan_steps,
            batch_size=self.gan_batch,
            lr=self.gan_lr,
            seed=next_seed(gen),
            device=dev,
        )
        opt_g, opt_d = gan_optimizers(g, d, self.gan_lr)
        surrogate.to(dev)
        opt_c = torch.optim.Adam(surrogate.parameters(), lr=self.clone_lr)
        start = oracle.ledger.spent
        xs: list[Tensor] = []
        ys: list[Tensor] = []
        history: list[dict[str, float]] = []
        spent = 0
        while spent < budget:
            n = min(self.query_batch, budget - spent)
            g.train()
            with torch.no_grad():
                x = g(torch.randn((n, self.nz), generator=gen).to(dev)).float().cpu()
            xs.append(x)
            ys.append(oracle.query(x).labels())
            spent += n
            row = {"queries": float(spent)}
            if self.clone_steps:
                row["clone_loss"] = self.clone_step(
                    surrogate, torch.cat(xs), torch.cat(ys), opt_c, seed=next_seed(gen), dev=dev
                )
            if spent < budget:  # a generator step after the last purchase would be wasted
                for _ in range(self.gen_steps):
                    row |= self.generator_step(g, d, surrogate, real, opt_g, opt_d, gen, dev)
            history.append(row)
            log.debug("DFMS-HL round %d: %s", len(history), row)
            if monitor is not None and spent < budget:
                monitor(surrogate, spent)
        x_all, y_all = torch.cat(xs), torch.cat(ys)
        losses = train_surrogate(
            surrogate, x_all, y_all, self.recipe, hard=True, seed=next_seed(gen), device=dev
        )
        if monitor is not None:
            monitor(surrogate, spent)
        return AttackResult(
            surrogate=surrogate.eval(),
            queries=oracle.ledger.spent - start,
            history=history,
            info={
                "rounds": len(history),
                "gan_final_d_loss": gan_hist.d_loss[-1],
                "gan_final_g_loss": gan_hist.g_loss[-1],
                "final_train_loss": losses[-1],
                "label_histogram": torch.bincount(y_all, minlength=num_classes).tolist(),
            },
        )

    def clone_step(
        self,
        clone: nn.Module,
        x: Tensor,
        y: Tensor,
        optimizer: torch.optim.Optimizer,
        *,
        seed: int,
        dev: torch.device,
    ) -> float:
        """``clone_steps`` cross-entropy updates on T's labels of every image bought so far."""
        hist = fit(
            clone,
            x,
            y,
            loss_fn=F.cross_entropy,
            steps=self.clone_steps,
            batch_size=self.clone_batch,
            schedule="constant",
            optimizer_state=optimizer,
            seed=seed,
            device=dev,
        )
        return hist.epoch_loss[-1]

    def generator_step(
        self,
        g: nn.Module,
        d: nn.Module,
        clone: nn.Module,
        real: Tensor,
        opt_g: torch.optim.Optimizer,
        opt_d: torch.optim.Optimizer,
        gen: torch.Generator,
        dev: torch.device,
    ) -> dict[str, float]:
        """One D update and one G update on L_adv + lambda_div L_div (the clone frozen, in eval
        mode); no queries. Returns the three losses."""
        bs = min(self.gan_batch, len(real))
        batch = real[torch.randint(len(real), (bs,), generator=gen)].to(dev)
        z = torch.randn((bs, self.nz), generator=gen).to(dev)
        clone.eval()
        div: list[float] = []

        def diversity(fake: Tensor) -> Tensor:
            loss = class_diversity_loss(clone(fake))
            div.append(float(loss.detach()))
            return self.diversity_weight * loss

        with frozen(clone):
            d_loss, g_loss = adversarial_step(g, d, batch, z, opt_g, opt_d, extra=diversity)
        return {"d_loss": d_loss, "g_adv_loss": g_loss, "diversity_loss": div[-1]}
