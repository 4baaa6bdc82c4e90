"""What the encoder-stealing attacks share: a cache of bought embeddings, the transfer set, the
surrogate encoder and its training through the shared loop.

An encoder attack buys the victim's embedding of each transfer image once (``EmbeddingCache``),
keeps the transfer images as uint8 (they are converted to the victim's input spec batch by batch, so
a large spec costs no memory up front), and trains a ``SurrogateEncoder`` with ``stealkit.train.fit``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from stealkit.attacks.base import Attack, AttackResult, Monitor, TrainRecipe, pool_spend_limit
from stealkit.data.dataset import to_spec
from stealkit.data.pool import QueryPool
from stealkit.losses.stealing import StealingLoss
from stealkit.models.encoder import SurrogateEncoder
from stealkit.oracle.base import Oracle
from stealkit.oracle.response import OutputKind
from stealkit.oracle.spec import InputSpec
from stealkit.train.loop import Augment, default_device, fit

# Encoder attacks augment views themselves; the recipe's own affine warp is off by default.
ENCODER_RECIPE = TrainRecipe(epochs=30, min_steps=300, batch_size=128, lr=1e-3, augment=False)

View = Callable[[Tensor, torch.Generator], Tensor]


def require_embeddings(oracle: Oracle, attack: object) -> int:
    """The oracle's embedding size; ValueError when it does not answer embeddings."""
    if oracle.output is not OutputKind.EMBEDDING:
        raise ValueError(
            f"{attack!r} steals encoders; the oracle answers {oracle.output.value}, not embeddings"
        )
    return oracle.output_dim


@dataclass
class _Entry:
    have: Tensor
    values: Tensor | None = None


class EmbeddingCache:
    """The victim's embeddings bought so far, per pool image and view: an attacker keeps what it
    paid for, so a second pass over the same images costs no queries.

    ``view`` names what was sent for an image ("original", or an augmented view drawn once when the
    image was first bought); each view of each pool index is bought at most once.
    """

    def __init__(self) -> None:
        self._pool: tuple[str, int] | None = None
        self._views: dict[str, _Entry] = {}

    def _entry(self, pool: QueryPool, view: str) -> _Entry:
        key = (pool.name, len(pool))
        if self._pool is None:
            self._pool = key
        elif self._pool != key:
            raise ValueError(f"this cache holds answers for pool {self._pool}, not {key}")
        if view not in self._views:
            self._views[view] = _Entry(torch.zeros(len(pool), dtype=torch.bool))
        return self._views[view]

    def views(self) -> list[str]:
        """The views this cache holds answers for."""
        return sorted(self._views)

    def count(self, view: str = "original") -> int:
        """How many pool images have a bought embedding for ``view``."""
        entry = self._views.get(view)
        return 0 if entry is None else int(entry.have.sum())

    def fetch(
        self,
        oracle: Oracle,
        pool: QueryPool,
        idx: Tensor,
        *,
        view: str = "original",
        make_inputs: Callable[[Tensor], Tensor] | None = None,
        query_batch: int = 256,
    ) -> Tensor:
        """Embeddings (len(idx), D) for pool indices ``idx``; only images not bought before for
        ``view`` are sent, in batches of ``query_batch``, as ``make_inputs(indices)`` (default
        ``pool.images``)."""
        if query_batch < 1:
            raise ValueError(f"query_batch must be >= 1, got {query_batch}")
        entry = self._entry(pool, view)
        make = make_inputs if make_inputs is not None else pool.images
        missing = torch.unique(idx[~entry.have[idx]])
        for chunk in missing.split(query_batch) if len(missing) else ():
            r = oracle.query(make(chunk))
            if r.kind is not OutputKind.EMBEDDING:
                raise TypeError(f"the oracle answered {r.kind.value}, not embeddings")
            if entry.values is None:
                entry.values = torch.zeros((len(pool), r.values.shape[1]), dtype=torch.float32)
            entry.values[chunk] = r.values.float()
            entry.have[chunk] = True
        if entry.values is None:
            raise ValueError("nothing to fetch: no indices given")
        return entry.values[idx].clone()

    def __repr__(self) -> str:
        counts = {v: self.count(v) for v in self._views}
        return f"EmbeddingCache(pool={self._pool}, bought={counts})"


def transfer_indices(pool: QueryPool, budget: int, seed: int) -> Tensor:
    """``budget`` distinct pool indices (at most ``len(pool)``), a seeded random choice."""
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(len(pool), generator=g)[:budget]


def spec_batches(
    spec: InputSpec, view: View | None = None
) -> Callable[[Tensor, torch.Generator], Tensor]:
    """uint8 pool images (N, C, H, W) -> float inputs of ``spec``; ``view`` (if any) augments them
    in [0, 1] before they are scaled to the spec's value range."""
    unit = dataclasses.replace(spec, value_range=(0.0, 1.0))
    lo, hi = spec.value_range

    def convert(xb: Tensor, g: torch.Generator) -> Tensor:
        x = to_spec(xb.float().div_(255.0), unit)
        if view is not None:
            x = view(x, g)
        return x if (lo, hi) == (0.0, 1.0) else x * (hi - lo) + lo

    return convert


def surrogate_encoder(surrogate: nn.Module, spec: InputSpec, victim_dim: int) -> SurrogateEncoder:
    """Wrap the attacker's network (any architecture) so it outputs ``victim_dim`` values."""
    return SurrogateEncoder(surrogate, spec.shape, victim_dim)


def steal_encoder(
    attack: Attack,
    oracle: Oracle,
    pool: QueryPool | None,
    *,
    surrogate: nn.Module,
    monitor: Monitor | None = None,
    budget: int,
    seed: int,
    device: torch.device | str | None,
    cache: EmbeddingCache | None,
    query_batch: int,
    recipe: TrainRecipe,
    loss_fn: StealingLoss | Callable[[Tensor, Tensor], Tensor],
    victim_view: View | None = None,
    view_name: str = "original",
    train_augment: Augment | None = None,
) -> AttackResult:
    """The skeleton every encoder attack runs: choose ``budget`` pool images, buy the victim's
    embedding of each (of ``victim_view`` of it, if given) through ``cache``, then fit the
    surrogate encoder on (images, embeddings) with ``loss_fn`` and ``train_augment`` (applied in
    [0, 1] to each batch, after conversion to the spec)."""
    pool = attack.require_pool(pool)
    victim_dim = require_embeddings(oracle, attack)
    budget = pool_spend_limit(oracle, pool, budget)
    cache = cache if cache is not None else EmbeddingCache()
    dev = torch.device(device) if device is not None else default_device()
    idx = transfer_indices(pool, budget, seed)
    raw = pool.dataset.x[idx]  # uint8; converted batch by batch
    start = oracle.ledger.spent
    before = cache.count(view_name)
    view_gen = torch.Generator().manual_seed(seed + 1)
    to_victim = spec_batches(pool.spec, victim_view)
    targets = cache.fetch(
        oracle,
        pool,
        idx,
        view=view_name,
        make_inputs=lambda i: to_victim(pool.dataset.x[i], view_gen),
        query_batch=query_batch,
    )
    bought = oracle.ledger.spent - start
    with torch.random.fork_rng(devices=[]):  # a seeded projection; the global RNG is left alone
        torch.manual_seed(seed)
        encoder = surrogate_encoder(surrogate, pool.spec, victim_dim)
    hist = fit(
        encoder,
        raw,
        targets,
        loss_fn=loss_fn,
        steps=recipe.steps_for(len(raw)),
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
        augment=spec_batches(pool.spec, train_augment),
        seed=seed,
        device=dev,
    )
    if monitor is not None:
        monitor(encoder, oracle.ledger.spent - start)
    return AttackResult(
        surrogate=encoder.eval(),
        queries=bought,
        history=[{"epoch": float(i), "loss": v} for i, v in enumerate(hist.epoch_loss)],
        info={
            "transfer_set": len(raw),
            "cached_before": before,
            "victim_dim": victim_dim,
            "surrogate_dim": encoder.in_dim,
            "steps": hist.steps,
            "final_train_loss": hist.epoch_loss[-1] if hist.epoch_loss else float("nan"),
        },
    )
