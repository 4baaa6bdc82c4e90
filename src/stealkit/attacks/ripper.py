"""Black-Box Ripper: copying black-box models with generative evolutionary algorithms.

Barbalau, Cosma, Ionescu and Popescu, NeurIPS 2020. https://arxiv.org/abs/2010.11158

The victim T answers class probabilities; the thief has proxy images only (other classes than
T's). A generator G learns an image prior on the proxy images (here a small DCGAN, trained for
``gan_steps`` steps with no queries). Then, for each class c of T, an evolutionary search in G's
latent space looks for images T gives to c:

    population   Z = {z_1, ..., z_K},  z_i ~ N(0, I)
    fitness      f_c(z) = T(G(z))_c                     (one query per evaluated latent)
    step         keep the u fittest (elites, fitness known: no new query), and make K - u
                 children z' = z_e + sigma * eps, eps ~ N(0, I), from the elites in turn;
                 evaluate the children (K - u queries)
    stop         when the best fitness reaches ``threshold``, or after ``generations`` steps.

Because the elites survive unchanged, a step never lowers the best fitness. Searches run for
every class at once (one oracle call per generation for all classes still searching) and are
repeated with fresh populations until the budget is spent; the last evaluation is trimmed, so
exactly ``budget`` queries are spent. The clone is then trained on the images with T's answers
(soft cross-entropy, ``recipe``): by default every evaluated image, since each is a bought answer
(``transfer="all"``), or only the final population of each search (``transfer="found"``, the
paper's optimised samples).

Not verified from the paper: its population size, elite count, mutation scale and threshold (our
defaults: 30, 10, 0.5, 0.9), whether its fitness is the target probability or a distance to the
one-hot target, and its reported figures (we could not retrieve its tables; its released
scripts cover CIFAR-10, Fashion-MNIST and 10 Monkey Species as true data sets, not MNIST). Its
generators were pretrained VAEs and GANs (SNGAN, ProGAN); ours is trained here, small and briefly.
The generator runs in eval mode during the search, so an elite's image (and bought answer) does
not depend on the batch it was drawn in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial

import torch
from torch import Tensor, nn

from stealkit.attacks.base import (
    SCORE_OUTPUTS,
    Attack,
    AttackResult,
    TrainRecipe,
    spend_limit,
    train_surrogate,
    training_targets,
)
from stealkit.attacks.data_free import Monitor, classifier_classes, next_seed, resolve_device
from stealkit.data.pool import QueryPool
from stealkit.models.gan import fit_gan
from stealkit.oracle.base import Oracle

log = logging.getLogger(__name__)

TRANSFER = ("all", "found")


# --- the maths, as pure functions ---------------------------------------------------------------
def evolution_step(
    population: Tensor,
    fitness: Tensor,
    evaluate: Callable[[Tensor], Tensor],
    *,
    elite: int,
    sigma: float,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """One generation of the search, for a batch of independent populations.

    Args:
        population: (B, K, nz) latents, one population of K per search.
        fitness: (B, K) their fitness.
        evaluate: maps children (B, K - elite, nz) to their fitness (B, K - elite).
        elite: u, the fittest kept unchanged (1 <= u < K).
        sigma: scale of the Gaussian mutation.

    Returns the next population (B, K, nz), elites first, and its fitness (B, K).
    """
    b, k, nz = population.shape
    if not 1 <= elite < k:
        raise ValueError(f"elite must lie in [1, {k - 1}] for a population of {k}, got {elite}")
    top = fitness.topk(elite, dim=1).indices  # (B, u), fittest first
    elites = population.gather(1, top.unsqueeze(2).expand(b, elite, nz))
    parents = elites[:, torch.arange(k - elite) % elite]
    children = parents + sigma * torch.randn(parents.shape, generator=generator).to(parents)
    return (
        torch.cat([elites, children], dim=1),
        torch.cat([fitness.gather(1, top), evaluate(children)], dim=1),
    )


# --- the attack ---------------------------------------------------------------------------------
class BlackBoxRipper(Attack):
    """Black-Box Ripper: per-class evolutionary search in a proxy-trained generator's latents.

    Args:
        nz: latent dimension of the generator (must match a generator you pass in).
        ngf: width of the generator's trunk; ndf: of the discriminator.
        proxy_images: pool images the GAN learns from.
        gan_steps: GAN training steps (no queries).
        gan_batch: batch of the GAN steps.
        gan_lr: Adam learning rate of G and D.
        population: K, latents per search.
        elite: u, survivors per generation.
        sigma: mutation scale.
        generations: most generations per search.
        threshold: fitness T(G(z))_c that ends a search.
        transfer: "all" (every evaluated image) or "found" (each search's final population).
        recipe: the clone's training on the transfer set.

    Example:
        >>> result = BlackBoxRipper().run(oracle, pool=fashion, surrogate=s, budget=20000)
    """

    needs_pool = True
    accepts = SCORE_OUTPUTS

    buys_pool_images = False  # the pool trains its GAN; the queries are generated

    def __init__(
        self,
        *,
        nz: int = 100,
        ngf: int = 32,
        ndf: int = 32,
        proxy_images: int = 10000,
        gan_steps: int = 2000,
        gan_batch: int = 64,
        gan_lr: float = 2e-4,
        population: int = 30,
        elite: int = 10,
        sigma: float = 0.5,
        generations: int = 10,
        threshold: float = 0.9,
        transfer: str = "all",
        recipe: TrainRecipe | None = None,
    ) -> None:
        if min(nz, ngf, ndf, proxy_images, gan_steps, gan_batch, generations) < 1:
            raise ValueError(
                "nz, ngf, ndf, proxy_images, gan_steps, gan_batch and generations must be >= 1"
            )
        if not 1 <= elite < population:
            raise ValueError(f"need 1 <= elite < population, got elite={elite}, {population=}")
        if sigma <= 0 or gan_lr <= 0 or not 0 < threshold <= 1:
            raise ValueError("sigma and gan_lr must be > 0 and threshold in (0, 1]")
        if transfer not in TRANSFER:
            raise ValueError(f"transfer must be one of {TRANSFER}, got {transfer!r}")
        self.nz, self.ngf, self.ndf, self.proxy_images = nz, ngf, ndf, proxy_images
        self.gan_steps, self.gan_batch, self.gan_lr = gan_steps, gan_batch, gan_lr
        self.population, self.elite, self.sigma = population, elite, sigma
        self.generations, self.threshold, self.transfer = generations, threshold, transfer
        self.recipe = recipe or TrainRecipe()

    def __repr__(self) -> str:
        return (
            f"BlackBoxRipper(nz={self.nz}, ngf={self.ngf}, ndf={self.ndf}, "
            f"proxy_images={self.proxy_images}, gan_steps={self.gan_steps}, "
            f"gan_batch={self.gan_batch}, gan_lr={self.gan_lr}, population={self.population}, "
            f"elite={self.elite}, sigma={self.sigma}, generations={self.generations}, "
            f"threshold={self.threshold}, transfer={self.transfer!r}, recipe={self.recipe})"
        )

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
        """Search the generator's latents with exactly ``budget`` queries, then train
        ``surrogate`` on what was found. ``generator`` maps (N, nz) latents to images in the
        oracle's spec; when ``None``, a DCGAN is trained on ``pool`` first (no queries)."""
        pool = self.require_pool(pool)
        budget = spend_limit(oracle, budget)
        num_classes = classifier_classes(oracle)
        self.check_oracle(oracle)
        dev = resolve_device(device)
        gen = torch.Generator().manual_seed(seed)
        if generator is None:
            real = pool.images(torch.randperm(len(pool), generator=gen)[: self.proxy_images])
            generator, _, _ = fit_gan(
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
        generator.to(dev).eval()
        start = oracle.ledger.spent
        xs: list[Tensor] = []
        ps: list[Tensor] = []
        answered: dict[str, Tensor] = {}  # the images and answers of the last evaluation
        spent = 0
        shape = oracle.input_spec.shape

        def evaluate(z: Tensor, classes: Tensor) -> Tensor:
            """f_c for (B, M, nz) latents of the searches for ``classes`` (B,): one query per
            latent, as many as the budget still pays for (the rest get fitness -inf)."""
            nonlocal spent
            b, m = z.shape[:2]
            fit_ = torch.full((b * m,), -float("inf"))
            x_all, p_all = torch.zeros((b * m, *shape)), torch.zeros((b * m, num_classes))
            paid = min(b * m, budget - spent)
            if paid:
                with torch.no_grad():
                    x = generator(z.reshape(b * m, -1)[:paid].to(dev)).float().cpu()
                p = training_targets(oracle.query(x))
                spent += paid
                fit_[:paid] = p.gather(1, classes.repeat_interleave(m)[:paid, None]).squeeze(1)
                x_all[:paid], p_all[:paid] = x, p
                if self.transfer == "all":
                    xs.append(x)
                    ps.append(p)
            answered["x"], answered["p"] = x_all.view(b, m, *shape), p_all.view(b, m, -1)
            return fit_.view(b, m)

        searches, reached, steps_taken = 0, 0, 0
        while spent < budget:
            classes = torch.arange(num_classes)
            z = torch.randn((num_classes, self.population, self.nz), generator=gen)
            fitness = evaluate(z, classes)
            images, answers = answered["x"], answered["p"]  # the population's, row for row
            for _ in range(self.generations):
                active = fitness.max(dim=1).values < self.threshold
                if spent >= budget or not bool(active.any()):
                    break
                top = fitness[active].topk(self.elite, dim=1).indices  # the elites, as kept
                rows = torch.arange(len(top)).unsqueeze(1)
                kept_x, kept_p = images[active][rows, top], answers[active][rows, top]
                z[active], fitness[active] = evolution_step(
                    z[active],
                    fitness[active],
                    partial(evaluate, classes=classes[active]),
                    elite=self.elite,
                    sigma=self.sigma,
                    generator=gen,
                )
                images[active] = torch.cat([kept_x, answered["x"]], dim=1)
                answers[active] = torch.cat([kept_p, answered["p"]], dim=1)
                steps_taken += 1
            if self.transfer == "found":  # each search's final population, where it was paid
                paid = fitness > -float("inf")
                xs.append(images[paid])
                ps.append(answers[paid])
            searches += 1
            reached += int((fitness.max(dim=1).values >= self.threshold).sum())
            log.debug("Ripper search %d: %d queries spent", searches, spent)
        x_all, p_all = torch.cat(xs), torch.cat(ps)
        losses = train_surrogate(
            surrogate, x_all, p_all, self.recipe, hard=False, seed=next_seed(gen), device=dev
        )
        if monitor is not None:
            monitor(surrogate, spent)
        return AttackResult(
            surrogate=surrogate.eval(),
            queries=oracle.ledger.spent - start,
            history=[{"queries": float(spent), "train_loss": losses[-1]}],
            info={
                "searches": searches,
                "class_searches_at_threshold": reached,
                "generations_run": steps_taken,
                "transfer_size": len(x_all),
                "final_train_loss": losses[-1],
                "label_histogram": torch.bincount(p_all.argmax(1), minlength=num_classes).tolist(),
            },
        )
