"""What the encoder-stealing attacks share: a cache of bought embeddings, the transfer set, the
surrogate encoder and its training through the shared loop.

An encoder attack buys the victim's embedding of each transfer image once (``EmbeddingCache``),
keeps the transfer images as uint8 (they are converted to the victim's input spec batch by batch, so
a large spec costs no memory up front), and trains a ``SurrogateEncoder`` with ``stealkit.train.fit``.

What the surrogate sees of transfer image i in a training batch (``training_batches``):

- a fresh ``train_augment`` view of x_i (or x_i itself), drawn from the training generator;
- with ``same_view``, exactly the image the victim was sent for x_i: the bought view is kept as
  8-bit pixels, and it is those pixels that were sent, so both sides see one identical image;
- for the first ``clean`` transfer images, x_i un-augmented, which is also what the victim was sent
  for them (view "original"): clean pairs, the pairs a linear probe is judged on.

A recipe that trains for no steps (``max_steps: 0``) buys nothing and returns the untrained,
seeded surrogate: the floor that a report measures every attack's gain against.
"""

from __future__ import annotations

import dataclasses
import logging
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

log = logging.getLogger(__name__)

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
    slot: Tensor | None = None  # (len(pool),) row of each kept input in ``kept``, -1 if none
    kept: list[Tensor] = dataclasses.field(default_factory=list)  # uint8 chunks, as sent


def to_pixels(x: Tensor, value_range: tuple[float, float]) -> Tensor:
    """Float images in ``value_range`` -> uint8 pixels (0..255), rounded to the nearest level."""
    lo, hi = value_range
    return ((x - lo) / (hi - lo) * 255.0).round_().clamp_(0.0, 255.0).to(torch.uint8)


def from_pixels(u: Tensor, value_range: tuple[float, float]) -> Tensor:
    """uint8 pixels -> float images in ``value_range``; ``to_pixels`` inverts it exactly."""
    lo, hi = value_range
    x = u.float().div_(255.0)
    return x if (lo, hi) == (0.0, 1.0) else x * (hi - lo) + lo


class EmbeddingCache:
    """The victim's embeddings bought so far, per pool image and view: an attacker keeps what it
    paid for, so a second pass over the same images costs no queries.

    ``view`` names what was sent for an image ("original", or an augmented view drawn once when the
    image was first bought); each view of each pool index is bought at most once. Bought with
    ``keep_inputs``, the inputs themselves are kept too (as the 8-bit pixels that were sent), so an
    attack can train on exactly what the victim saw (``inputs``).
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
        keep_inputs: bool = False,
    ) -> Tensor:
        """Embeddings (len(idx), D) for pool indices ``idx``; only images not bought before for
        ``view`` are sent, in batches of ``query_batch``, as ``make_inputs(indices)`` (default
        ``pool.images``). With ``keep_inputs`` each batch is rounded to 8-bit pixels first; those
        pixels are sent and kept."""
        if query_batch < 1:
            raise ValueError(f"query_batch must be >= 1, got {query_batch}")
        entry = self._entry(pool, view)
        make = make_inputs if make_inputs is not None else pool.images
        missing = torch.unique(idx[~entry.have[idx]])
        for chunk in missing.split(query_batch) if len(missing) else ():
            x = make(chunk)
            pixels = to_pixels(x, pool.spec.value_range) if keep_inputs else None
            if pixels is not None:
                x = from_pixels(pixels, pool.spec.value_range)
            r = oracle.query(x)
            if r.kind is not OutputKind.EMBEDDING:
                raise TypeError(f"the oracle answered {r.kind.value}, not embeddings")
            if entry.values is None:
                entry.values = torch.zeros((len(pool), r.values.shape[1]), dtype=torch.float32)
            entry.values[chunk] = r.values.float()
            entry.have[chunk] = True
            if pixels is not None:  # kept only once paid for
                if entry.slot is None:
                    entry.slot = torch.full((len(pool),), -1, dtype=torch.long)
                start = sum(len(k) for k in entry.kept)
                entry.slot[chunk] = torch.arange(start, start + len(chunk))
                entry.kept.append(pixels.cpu())
        if entry.values is None:
            raise ValueError("nothing to fetch: no indices given")
        return entry.values[idx].clone()

    def inputs(self, pool: QueryPool, idx: Tensor, *, view: str) -> Tensor:
        """The kept uint8 inputs (len(idx), C, H, W) that were sent for ``view`` of ``idx``;
        ValueError when some were bought without ``keep_inputs``."""
        entry = self._entry(pool, view)
        slots = entry.slot[idx] if entry.slot is not None else torch.full_like(idx, -1)
        if len(idx) == 0 or bool((slots < 0).any()):
            raise ValueError(
                f"view {view!r}: the inputs of {int((slots < 0).sum())} of these images were not "
                "kept; buy them with keep_inputs=True (a fresh cache, or another view name)"
            )
        return torch.cat(entry.kept)[slots]

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


def training_batches(
    raw: Tensor,
    spec: InputSpec,
    view: View | None = None,
    *,
    kept: Tensor | None = None,
    clean: int = 0,
) -> Callable[[Tensor, torch.Generator], Tensor]:
    """Positions (B,) in the transfer set -> the surrogate's float inputs of ``spec`` for them.

    ``raw`` holds the transfer images as uint8 (N, C, H, W) at the pool's size. A position's input
    is ``kept[pos]`` (uint8 at the spec's size: the pixels the victim was sent) when ``kept`` is
    given, else ``view`` (if any) of raw[pos] in [0, 1] drawn from the generator; positions below
    ``clean`` get raw[pos] un-augmented. Without ``kept`` and ``clean`` this is
    ``spec_batches(spec, view)`` applied to raw[pos], random draws included.
    """
    unit = dataclasses.replace(spec, value_range=(0.0, 1.0))
    lo, hi = spec.value_range

    def convert(pos: Tensor, g: torch.Generator) -> Tensor:
        p, dev = pos.cpu(), pos.device
        plain = to_spec(raw[p].to(dev).float().div_(255.0), unit)
        if kept is not None:
            x = from_pixels(kept[p].to(dev), (0.0, 1.0))
        else:
            x = view(plain, g) if view is not None else plain
        if clean > 0:
            x = torch.where((p < clean).to(dev).view(-1, 1, 1, 1), plain, x)
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
    same_view: bool = False,
    clean: int = 0,
) -> AttackResult:
    """The skeleton every encoder attack runs: choose ``budget`` pool images (a seeded random
    order), buy the victim's embedding of each (of ``victim_view`` of it, if given) through
    ``cache``, then fit the surrogate encoder on (images, embeddings) with ``loss_fn``.

    The surrogate's input for each image is a fresh ``train_augment`` view (applied in [0, 1]
    after conversion to the spec), or with ``same_view`` the very pixels the victim was sent.
    The first ``clean`` images of the order are bought un-augmented (view "original") and trained
    on un-augmented. Victim views are drawn from ``torch.Generator().manual_seed(seed + 1)`` in
    query order. A recipe of no steps buys nothing and returns the untrained surrogate."""
    pool = attack.require_pool(pool)
    victim_dim = require_embeddings(oracle, attack)
    budget = pool_spend_limit(oracle, pool, budget)
    if not 0 <= clean <= budget:
        raise ValueError(f"clean must be in [0, budget={budget}], got {clean}")
    cache = cache if cache is not None else EmbeddingCache()
    dev = torch.device(device) if device is not None else default_device()
    idx = transfer_indices(pool, budget, seed)
    raw = pool.dataset.x[idx]  # uint8; converted batch by batch
    start = oracle.ledger.spent
    before = cache.count(view_name)
    with torch.random.fork_rng(devices=[]):  # a seeded projection; the global RNG is left alone
        torch.manual_seed(seed)
        encoder = surrogate_encoder(surrogate, pool.spec, victim_dim)
    steps = recipe.steps_for(len(raw))
    info: dict[str, object] = {
        "transfer_set": len(raw),
        "cached_before": before,
        "victim_dim": victim_dim,
        "surrogate_dim": encoder.in_dim,
    }
    if victim_view is not None:
        info.update(view=view_name, clean_pairs=clean, same_view=same_view)
    if steps == 0:  # the floor: an untrained surrogate needs no answers
        log.info(
            "%r: the recipe trains no steps; nothing bought, the surrogate is untrained", attack
        )
        if monitor is not None:
            monitor(encoder, 0)
        return AttackResult(
            surrogate=encoder.eval(),
            queries=0,
            info={**info, "steps": 0, "final_train_loss": float("nan")},
        )
    view_gen = torch.Generator().manual_seed(seed + 1)
    to_victim = spec_batches(pool.spec, victim_view)
    parts = []
    if clean:
        plain = spec_batches(pool.spec, None)
        parts.append(
            cache.fetch(
                oracle,
                pool,
                idx[:clean],
                make_inputs=lambda i: plain(pool.dataset.x[i], view_gen),
                query_batch=query_batch,
            )
        )
    if clean < budget:
        parts.append(
            cache.fetch(
                oracle,
                pool,
                idx[clean:],
                view=view_name,
                make_inputs=lambda i: to_victim(pool.dataset.x[i], view_gen),
                query_batch=query_batch,
                keep_inputs=same_view,
            )
        )
    targets = torch.cat(parts)
    bought = oracle.ledger.spent - start
    kept = None
    if same_view and clean < budget:
        sent = cache.inputs(pool, idx[clean:], view=view_name)  # levels of the spec's range
        kept = torch.zeros((len(raw), *sent.shape[1:]), dtype=torch.uint8)
        kept[clean:] = sent
    hist = fit(
        encoder,
        torch.arange(len(raw)),  # positions: training_batches turns them into images
        targets,
        loss_fn=loss_fn,
        steps=steps,
        batch_size=recipe.batch_size,
        lr=recipe.lr,
        weight_decay=recipe.weight_decay,
        augment=training_batches(raw, pool.spec, train_augment, kept=kept, clean=clean),
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
            **info,
            "steps": hist.steps,
            "final_train_loss": hist.epoch_loss[-1] if hist.epoch_loss else float("nan"),
        },
    )
