"""What the data-free attacks (MEGA, DaST, DFME) share: no pool, a generator, and a budget.

A data-free attack sends only images made by its own generator, so its ``run`` takes the oracle,
the surrogate and optionally a generator, and never a pool. These helpers size a default
generator to the oracle's input spec, freeze a network while another one learns through it, and
draw reproducible seeds from one ``torch.Generator``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

from stealkit.attacks.base import Attack, Monitor, spend_limit
from stealkit.models.generators import Generator, build_generator
from stealkit.oracle.base import Oracle
from stealkit.oracle.response import OutputKind
from stealkit.train.loop import default_device

__all__ = ["Monitor", "classifier_classes", "default_generator", "frozen", "next_seed"]


def classifier_classes(oracle: Oracle) -> int:
    """The oracle's number of classes; a clear ValueError for an embedding oracle."""
    if oracle.output is OutputKind.EMBEDDING:
        raise ValueError("data-free classifier stealing needs a classifier oracle, not embeddings")
    return oracle.num_classes


def default_generator(
    oracle: Oracle,
    kind: str,
    nz: int,
    *,
    seed: int,
    num_classes: int | None = None,
    ngf: int = 64,
) -> Generator:
    """A fresh generator (see ``build_generator``) whose images fit the oracle's input spec."""
    spec = oracle.input_spec
    if spec.height != spec.width:
        raise ValueError(
            f"the default generators make square images, the oracle takes {spec.height}x"
            f"{spec.width}; pass a generator of your own"
        )
    if spec.value_range != (0.0, 1.0):
        raise ValueError(f"generators output [0, 1], the oracle takes {spec.value_range}")
    return build_generator(kind, nz, spec.channels, spec.height, num_classes, ngf=ngf, seed=seed)


def resolve_device(device: torch.device | str | None) -> torch.device:
    return torch.device(device) if device is not None else default_device()


def next_seed(gen: torch.Generator) -> int:
    """A seed for a sub-step (shuffling inside ``fit``), drawn from the attack's generator."""
    return int(torch.randint(1 << 30, (1,), generator=gen))


@contextmanager
def frozen(module: nn.Module) -> Iterator[nn.Module]:
    """Stop gradients into ``module``'s parameters for the block, then restore each flag."""
    flags = [p.requires_grad for p in module.parameters()]
    module.requires_grad_(False)
    try:
        yield module
    finally:
        for p, flag in zip(module.parameters(), flags, strict=True):
            p.requires_grad_(flag)


def zeroth_order_setup(
    attack: Attack,
    oracle: Oracle,
    *,
    pool: object,
    budget: int,
    seed: int,
    device: torch.device | str | None,
    generator: nn.Module | None,
    nz: int,
    ngf: int,
    why_scores: str,
) -> tuple[int, torch.device, torch.Generator, Generator]:
    """What DFME and MAZE check and build before their first query: no pool, a budget the
    ledger holds, a classifier answering scores (``why_scores`` says why labels will not do),
    the device, the run's random generator, and an unconditional DCGAN generator (a fresh one
    seeded from ``seed`` unless one is given), whose pre-activation output they perturb."""
    name = type(attack).__name__
    attack.refuse_pool(pool)  # type: ignore[arg-type]
    budget = spend_limit(oracle, budget)
    classifier_classes(oracle)
    if oracle.output is OutputKind.LABEL:
        raise ValueError(
            f"{name} needs the victim's probabilities ({why_scores}); this oracle answers labels "
            "only. Use a label-only attack (MEGA, DaST-L, DFMS-HL) instead."
        )
    attack.check_oracle(oracle)
    dev = resolve_device(device)
    gen = torch.Generator().manual_seed(seed)
    if generator is None:
        generator = default_generator(oracle, "dcgan", nz, seed=next_seed(gen), ngf=ngf)
    if not isinstance(generator, Generator) or generator.conditional:
        raise ValueError(
            f"{name} estimates gradients before the generator's output activation; pass an "
            "unconditional stealkit.models.generators.Generator (build_generator('dcgan', ...))"
        )
    return budget, dev, gen, generator
