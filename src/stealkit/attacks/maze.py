"""MAZE: data-free model stealing with zeroth-order gradient estimation.

Kariyappa, Prakash and Qureshi, CVPR 2021. https://arxiv.org/abs/2005.03161

Data-free, probability answers. A generator G makes the queries; the clone C learns the victim T
on them, and G learns to make images where the two disagree most:

    L_C(x) = KL(T(x) || C(x)) = sum_c T(x)_c (log T(x)_c - log softmax(C(x))_c),
    L_G    = -E_z L_C(G(z))                                   (G maximises the disagreement).

T has no gradient, so grad_x L_C is estimated by forward differences along m random unit
directions u_j (each perturbed point is one more query):

    grad_x L_C(x) ~ (d / m) sum_j [L_C(x + eps u_j) - L_C(x)] / eps * u_j,     d = dim(x),

and back-propagated into G by the chain rule. One iteration (the paper's Algorithm 1) is

1. ``g_iter`` generator steps on a fresh batch of n images: n (m + 1) queries each;
2. ``c_iter`` clone steps on fresh generated batches: n queries each; every bought pair
   (x, T(x)) joins the experience-replay buffer;
3. ``replay_iter`` clone steps on batches drawn from the buffer: no queries.

An iteration costs n (g_iter (m + 1) + c_iter) queries; DFME's ``round_plan`` shrinks the last
iteration's batch and buys one final clone batch with the rest, so exactly ``budget`` queries are
spent. The clone uses SGD (momentum 0.9, weight decay), the generator Adam, both with cosine
annealing over the iterations. Defaults follow the authors' release (m = 10, eps = 1e-3,
n_G = 1, n_C = 5, n_R = 10, clone lr 0.1, latent 100).

Departures (ours): G's output is x = (tanh t + 1) / 2 and we perturb its pre-activation t rather
than x (as DFME does), so every perturbed query stays inside [0, 1]; the chain rule runs one step
earlier, through an elementwise map. Not verified from the paper: whether its replay buffer also
keeps the generator step's base points (here only the clone steps' pairs), its exact learning-rate
schedule, and its reported figures (we could not retrieve its tables; to our recollection they
cover FashionMNIST, SVHN, GTSRB and CIFAR-10, not MNIST).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

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
from stealkit.attacks.dfme import forward_difference_gradient, random_directions, round_plan
from stealkit.data.pool import QueryPool
from stealkit.models.generators import Generator
from stealkit.oracle.base import Oracle
from stealkit.train.loop import fit

log = logging.getLogger(__name__)


# --- the maths, as pure functions ---------------------------------------------------------------
def kl_disagreement(victim_probs: Tensor, clone_logits: Tensor, *, eps: float = 1e-8) -> Tensor:
    """Per-row KL(T || C) = sum_c p_c (log p_c - log softmax(C)_c), (N,); 0 where C matches T."""
    p = victim_probs.clamp_min(0.0)
    return (p * (torch.log(p.clamp_min(eps)) - F.log_softmax(clone_logits, dim=1))).sum(dim=1)


def clone_loss(clone_logits: Tensor, victim_probs: Tensor) -> Tensor:
    """L_C averaged over the batch (the clone's training loss; ``fit`` order: logits, target)."""
    return kl_disagreement(victim_probs, clone_logits).mean()


def zeroth_order_gradient(
    f: Callable[[Tensor], Tensor],
    t: Tensor,
    *,
    m: int,
    eps: float,
    generator: torch.Generator,
) -> tuple[Tensor, Tensor]:
    """Forward-difference estimate of grad f at every row of ``t`` (n, *shape).

    ``f`` maps a batch (N, *shape) to (N,) values and is called once, on the n (m + 1) points
    t_i + eps u_ij (m random unit directions per row) and t_i, image-major. Returns the estimate
    (n, *shape) and f(t) (n,).
    """
    n, shape = t.shape[0], tuple(t.shape[1:])
    u = random_directions(n, m, shape, generator).to(t.device)
    points = torch.cat([t.unsqueeze(1) + eps * u, t.unsqueeze(1)], dim=1).flatten(0, 1)
    values = f(points).view(n, m + 1)
    return forward_difference_gradient(values, u, eps), values[:, m]


# --- the attack ---------------------------------------------------------------------------------
class MAZE(Attack):
    """MAZE: generator trained on zeroth-order estimates of the clone-victim KL, with replay.

    Args:
        query_batch: generated images per step (n).
        nz: noise dimension (must match a generator you pass in).
        ngf: width of the default generator's trunk (16-32 is enough for 28x28 digits).
        grad_m: random directions per image in the gradient estimate (m).
        grad_eps: step of the forward differences.
        g_iter: generator steps per iteration (n_G).
        c_iter: clone steps on fresh queries per iteration (n_C).
        replay_iter: clone steps on replayed queries per iteration (n_R; 0: no replay).
        replay_capacity: most pairs the replay buffer keeps (the oldest are overwritten);
            ``None`` keeps every clone-step pair (4 bytes a pixel: ~100 MB per 30k 28x28 pairs).
        clone_lr: SGD learning rate of the clone (momentum 0.9).
        weight_decay: of the clone's SGD.
        generator_lr: Adam learning rate of the generator.

    Example:
        >>> result = MAZE(ngf=16).run(oracle, surrogate=build_model("cnn3", ...), budget=100_000)
    """

    needs_pool = False
    accepts = SCORE_OUTPUTS

    def __init__(
        self,
        *,
        query_batch: int = 128,
        nz: int = 100,
        ngf: int = 64,
        grad_m: int = 10,
        grad_eps: float = 1e-3,
        g_iter: int = 1,
        c_iter: int = 5,
        replay_iter: int = 10,
        replay_capacity: int | None = None,
        clone_lr: float = 0.1,
        weight_decay: float = 5e-4,
        generator_lr: float = 1e-4,
    ) -> None:
        if min(query_batch, nz, ngf, grad_m, g_iter, c_iter) < 1:
            raise ValueError("query_batch, nz, ngf, grad_m, g_iter and c_iter must be >= 1")
        if replay_iter < 0 or (replay_capacity is not None and replay_capacity < 1):
            raise ValueError(
                "replay_iter must be >= 0 and replay_capacity >= 1 (or None to keep every pair)"
            )
        if grad_eps <= 0 or clone_lr <= 0 or generator_lr <= 0 or weight_decay < 0:
            raise ValueError("grad_eps, clone_lr and generator_lr must be > 0, weight_decay >= 0")
        self.query_batch, self.nz, self.ngf = query_batch, nz, ngf
        self.grad_m, self.grad_eps = grad_m, grad_eps
        self.g_iter, self.c_iter, self.replay_iter = g_iter, c_iter, replay_iter
        self.replay_capacity = replay_capacity
        self.clone_lr, self.weight_decay, self.generator_lr = clone_lr, weight_decay, generator_lr

    def __repr__(self) -> str:
        return (
            f"MAZE(query_batch={self.query_batch}, nz={self.nz}, ngf={self.ngf}, "
            f"grad_m={self.grad_m}, grad_eps={self.grad_eps}, g_iter={self.g_iter}, "
            f"c_iter={self.c_iter}, replay_iter={self.replay_iter}, "
            f"replay_capacity={self.replay_capacity}, clone_lr={self.clone_lr}, "
            f"weight_decay={self.weight_decay}, generator_lr={self.generator_lr})"
        )

    @property
    def queries_per_image(self) -> int:
        """Queries one image of an iteration costs: g_iter (m + 1) + c_iter."""
        return self.g_iter * (self.grad_m + 1) + self.c_iter

    def victim_probs(self, oracle: Oracle, x: Tensor) -> Tensor:
        """The victim's distribution on x (len(x) queries), on the CPU."""
        return training_targets(oracle.query(x.detach().float().cpu()))

    def generator_step(
        self,
        oracle: Oracle,
        clone: nn.Module,
        generator: Generator,
        n: int,
        optimizer: torch.optim.Optimizer,
        gen: torch.Generator,
        device: torch.device,
    ) -> float:
        """One ascent step of G on the estimated KL; n (grad_m + 1) queries in one call.
        Returns the mean KL at the base points."""
        generator.train()
        clone.eval()
        z = torch.randn((n, self.nz), generator=gen).to(device)
        pre = generator.pre_activation(z)

        def kl_at(t: Tensor) -> Tensor:
            x = generator.activation(t)
            p = self.victim_probs(oracle, x).to(device)
            with torch.no_grad():
                return kl_disagreement(p, clone(x).float())

        grad, kl = zeroth_order_gradient(
            kl_at, pre.detach(), m=self.grad_m, eps=self.grad_eps, generator=gen
        )
        optimizer.zero_grad(set_to_none=True)
        pre.backward(-grad / n)  # d(-mean KL)/dt: descending -KL ascends the disagreement
        optimizer.step()
        return float(kl.mean())

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

        ``generator`` must be an unconditional ``stealkit.models.generators.Generator`` (MAZE
        perturbs its pre-activation output); a fresh one seeded by ``seed`` when ``None``.
        """
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
            why_scores="its loss is the KL between the victim's and the clone's distributions",
        )
        generator.to(dev)
        surrogate.to(dev)
        opt_c = torch.optim.SGD(
            surrogate.parameters(), lr=self.clone_lr, momentum=0.9, weight_decay=self.weight_decay
        )
        opt_g = torch.optim.Adam(generator.parameters(), lr=self.generator_lr)
        rounds, leftover = round_plan(budget, self.query_batch, self.queries_per_image)
        scheds = [
            torch.optim.lr_scheduler.CosineAnnealingLR(o, max(1, len(rounds)))
            for o in (opt_c, opt_g)
        ]
        clone_pairs = sum(rounds) * self.c_iter + leftover
        capacity = min(clone_pairs, self.replay_capacity or clone_pairs)
        spec = oracle.input_spec
        buffer_x = torch.empty((capacity, *spec.shape))
        buffer_p = torch.empty((capacity, oracle.num_classes))
        stored = 0  # pairs ever written; the buffer holds the last min(stored, capacity)

        def clone_step(n: int) -> float:
            nonlocal stored
            z = torch.randn((n, self.nz), generator=gen).to(dev)
            generator.train()
            with torch.no_grad():
                x = generator(z).float().cpu()
            p = self.victim_probs(oracle, x)
            slots = torch.arange(stored, stored + n) % capacity
            buffer_x[slots], buffer_p[slots] = x, p
            stored += n
            return self._fit(surrogate, x, p, 1, n, opt_c, next_seed(gen), dev)

        start = oracle.ledger.spent
        history: list[dict[str, float]] = []
        for n in rounds:
            kl = [
                self.generator_step(oracle, surrogate, generator, n, opt_g, gen, dev)
                for _ in range(self.g_iter)
            ]
            c_loss = [clone_step(n) for _ in range(self.c_iter)]
            row = {
                "queries": float(oracle.ledger.spent - start),
                "generator_kl": kl[-1],
                "clone_loss": c_loss[-1],
            }
            if self.replay_iter:
                held = min(stored, capacity)
                row["replay_loss"] = self._fit(
                    surrogate,
                    buffer_x[:held],
                    buffer_p[:held],
                    self.replay_iter,
                    self.query_batch,
                    opt_c,
                    next_seed(gen),
                    dev,
                )
            for sched in scheds:
                sched.step()
            history.append(row)
            log.debug("MAZE iteration %d: %s", len(history), row)
            if monitor is not None:
                monitor(surrogate, oracle.ledger.spent - start)
        if leftover:
            clone_step(leftover)
            if monitor is not None:
                monitor(surrogate, oracle.ledger.spent - start)
        return AttackResult(
            surrogate=surrogate.eval(),
            queries=oracle.ledger.spent - start,
            history=history,
            info={
                "iterations": len(rounds),
                "leftover_clone_queries": leftover,
                "queries_per_image": self.queries_per_image,
                "replay_pairs": min(stored, capacity),
                "final_train_loss": history[-1]["clone_loss"] if history else float("nan"),
            },
        )

    @staticmethod
    def _fit(
        clone: nn.Module,
        x: Tensor,
        p: Tensor,
        steps: int,
        batch_size: int,
        optimizer: torch.optim.Optimizer,
        seed: int,
        device: torch.device,
    ) -> float:
        """``steps`` clone updates on L_C over (x, p) with the shared training loop."""
        hist = fit(
            clone,
            x,
            p,
            loss_fn=clone_loss,
            steps=steps,
            batch_size=batch_size,
            schedule="constant",
            optimizer_state=optimizer,
            seed=seed,
            device=device,
        )
        return hist.epoch_loss[-1]
