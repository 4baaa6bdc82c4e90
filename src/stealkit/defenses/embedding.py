"""Defences for APIs that answer embeddings, as oracle wrappers.

The maths are pure functions of the victim's (N, D) embeddings; the ``Defense`` subclasses hold
only their hyperparameters (and a seeded generator for noise); ``DefendedOracle`` wraps an
embedding oracle with them as it wraps a classifier's with the others.
Dziedzic et al. (ICML 2022, https://arxiv.org/abs/2205.07890) evaluate such output perturbations
against encoder stealing and find that they cost legitimate users as much as attackers.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stealkit.defenses.perturbation import Defense
from stealkit.oracle.response import OutputKind, Response


# --- the maths ----------------------------------------------------------------------------------
def embedding_noise(
    z: Tensor, sigma: float, *, relative: bool = False, generator: torch.Generator | None = None
) -> Tensor:
    """Add N(0, sigma^2) to every entry; with ``relative=True`` sigma is in units of each row's
    root-mean-square entry, so one setting means the same for encoders of any scale."""
    if sigma < 0:
        raise ValueError(f"sigma must be >= 0, got {sigma}")
    noise = torch.randn(z.shape, generator=generator, dtype=z.dtype).to(z.device) * sigma
    if relative:
        noise = noise * z.pow(2).mean(dim=1, keepdim=True).sqrt()
    return z + noise


def embedding_topk(z: Tensor, k: int, *, magnitude: bool = False) -> Tensor:
    """Keep the k largest entries of each row (largest in absolute value with ``magnitude=True``)
    and set the others to 0."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, z.shape[1])
    idx = (z.abs() if magnitude else z).topk(k, dim=1).indices
    return torch.zeros_like(z).scatter_(1, idx, z.gather(1, idx))


def embedding_round(z: Tensor, decimals: int) -> Tensor:
    """Round every entry to ``decimals`` decimal places (negative: to tens, hundreds...)."""
    return torch.round(z, decimals=decimals)


# --- the wrappers -------------------------------------------------------------------------------
def _embeddings(response: Response, defense: Defense) -> Tensor:
    if response.kind is not OutputKind.EMBEDDING:
        raise TypeError(f"{defense!r} perturbs embeddings, not {response.kind.value} answers")
    return response.values


class EmbeddingNoise(Defense):
    """Gaussian noise on each embedding entry (see ``embedding_noise``)."""

    needs = OutputKind.EMBEDDING
    gives = OutputKind.EMBEDDING

    def __init__(self, *, sigma: float = 0.1, relative: bool = False, seed: int = 0) -> None:
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        self.sigma, self.relative, self.seed = sigma, relative, seed
        self._gen = torch.Generator().manual_seed(seed)

    def reset(self) -> None:
        self._gen.manual_seed(self.seed)

    def apply(self, response: Response) -> Response:
        z = _embeddings(response, self)
        values = embedding_noise(z, self.sigma, relative=self.relative, generator=self._gen)
        return Response(OutputKind.EMBEDDING, values)

    def __repr__(self) -> str:
        return f"EmbeddingNoise(sigma={self.sigma}, relative={self.relative}, seed={self.seed})"


class EmbeddingTopK(Defense):
    """Reveal only the k largest entries of each embedding (see ``embedding_topk``)."""

    needs = OutputKind.EMBEDDING
    gives = OutputKind.EMBEDDING

    def __init__(self, *, k: int = 64, magnitude: bool = False) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k, self.magnitude = k, magnitude

    def apply(self, response: Response) -> Response:
        z = _embeddings(response, self)
        return Response(OutputKind.EMBEDDING, embedding_topk(z, self.k, magnitude=self.magnitude))

    def __repr__(self) -> str:
        return f"EmbeddingTopK(k={self.k}, magnitude={self.magnitude})"


class EmbeddingRounding(Defense):
    """Round each embedding entry (see ``embedding_round``)."""

    needs = OutputKind.EMBEDDING
    gives = OutputKind.EMBEDDING

    def __init__(self, *, decimals: int = 1) -> None:
        if isinstance(decimals, bool) or not isinstance(decimals, int):
            raise ValueError(f"decimals must be an int, got {decimals!r}")
        self.decimals = decimals

    def apply(self, response: Response) -> Response:
        z = _embeddings(response, self)
        return Response(OutputKind.EMBEDDING, embedding_round(z, self.decimals))

    def __repr__(self) -> str:
        return f"EmbeddingRounding(decimals={self.decimals})"
