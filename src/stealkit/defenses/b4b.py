"""B4B: noise that grows with how much of the embedding space a client has seen, and answers
that differ per client so that several accounts cannot be pooled.

Dubinski, Pawlak, Boenisch, Trzcinski and Dziedzic, "Bucks for Buckets (B4B): Active Defenses
Against Stealing Encoders", NeurIPS 2023, https://arxiv.org/abs/2310.08571.

An honest user solves one downstream task, so the embeddings it is sent fill a small part of the
space; a thief who wants the whole encoder must cover all of it. B4B has three parts:

1. Coverage. ``n`` random hyperplanes (w_1..w_n ~ N(0, I), drawn once from ``seed``) cut the
   embedding space into 2^n buckets (SimHash locality-sensitive hashing):

       bucket(z) = sum_j 2^j [ w_j . (z - c) > 0 ]        c: an optional centre

   Each client's occupied buckets are kept; its coverage after its k-th query is
   ``cov_k = |{bucket(z_1), ..., bucket(z_k)}| / 2^n``.
2. Cost. The coverage is mapped to a noise scale by the paper's exponential calibration

       sigma(cov) = lam * (exp(ln(alpha / lam) * cov / beta) - 1)

   (0 at no coverage, about ``alpha`` at coverage ``beta``, growing steeply after), and the answer
   is ``z + sigma(cov_k) * eps`` with eps ~ N(0, I) (with ``relative=True``, eps is scaled by
   the row's root-mean-square entry, so one setting means the same for encoders of any scale).
3. Per-client transformation. The noisy answer is mapped by a map keyed by (``seed``, client):

       T_u(z) = ((z R_u) + b_u)[perm_u]        R_u orthogonal, b_u ~ N(0, bias^2 I)

   An orthogonal map and a shift keep every distance and every linear probe's accuracy, so an
   honest user loses nothing, but two accounts' answers to the same images live in different
   coordinates and cannot be merged without first learning the map between them.

Not verified against the paper (only its abstract could be read here): the default constants
(``lam=1e-6, alpha=1, beta=0.8``, 12 hyperplanes), that sigma is the noise's standard deviation in
absolute units (``relative=False``) rather than relative to the embedding, and the exact family
of transformations; the paper also pads representations with extra dimensions, left out here
because a defended oracle reports the victim's embedding size. The centre ``c`` is an addition:
for encoders whose features are all positive (after a ReLU) hyperplanes through the origin put
nearly everything in one bucket; pass the owner's mean embedding.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from stealkit.defenses.perturbation import Defense
from stealkit.oracle.response import OutputKind, Response


# --- the maths ----------------------------------------------------------------------------------
def noise_scale(coverage: float | Tensor, *, lam: float, alpha: float, beta: float) -> Tensor:
    """``lam * (exp(ln(alpha / lam) * coverage / beta) - 1)``: B4B's cost of a coverage in [0, 1]."""
    if not lam > 0 or not alpha > lam or not 0 < beta <= 1:
        raise ValueError(f"need 0 < lam < alpha and 0 < beta <= 1, got {lam}, {alpha}, {beta}")
    c = torch.as_tensor(coverage, dtype=torch.float64)
    return lam * torch.expm1(math.log(alpha / lam) * c / beta)


def lsh_hyperplanes(dim: int, n: int, seed: int) -> Tensor:
    """``n`` random hyperplane normals (n, dim) ~ N(0, I), the same for every client."""
    if dim < 1 or not 1 <= n <= 24:
        raise ValueError(f"need dim >= 1 and 1 <= n <= 24 hyperplanes, got {dim}, {n}")
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def lsh_buckets(z: Tensor, planes: Tensor, center: Tensor | None = None) -> Tensor:
    """The bucket of each row (N,) in [0, 2^n): bit j is set when ``w_j . (z - c) > 0``."""
    if z.dim() != 2 or z.shape[1] != planes.shape[1]:
        raise ValueError(f"need (N, {planes.shape[1]}) embeddings, got {tuple(z.shape)}")
    zc = z.double() if center is None else z.double() - center.double()
    bits = (zc @ planes.double().T > 0).long()
    return (bits << torch.arange(planes.shape[0])).sum(dim=1)


def running_coverage(buckets: Tensor, occupied: Tensor) -> Tensor:
    """Coverage after each of ``buckets`` in turn (N,), marking them in ``occupied`` (in place)."""
    count = int(occupied.sum())
    out = torch.empty(len(buckets), dtype=torch.float64)
    for i, b in enumerate(buckets.tolist()):
        if not occupied[b]:
            occupied[b] = True
            count += 1
        out[i] = count / len(occupied)
    return out


def client_seed(seed: int, client: str, what: str) -> int:
    """A 63-bit seed for ``what`` of ``client`` under the owner's ``seed``."""
    digest = hashlib.sha256(f"b4b:{seed}:{what}:{client}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


@dataclass(frozen=True)
class ClientTransform:
    """``T(z) = ((z @ rotation) + bias)[:, perm]``: an orthogonal map, a shift, a shuffle."""

    rotation: Tensor
    bias: Tensor
    perm: Tensor

    def apply(self, z: Tensor) -> Tensor:
        return ((z @ self.rotation.to(z.dtype)) + self.bias.to(z.dtype))[:, self.perm]

    def invert(self, y: Tensor) -> Tensor:
        unshuffled = torch.empty_like(y)
        unshuffled[:, self.perm] = y
        return (unshuffled - self.bias.to(y.dtype)) @ self.rotation.to(y.dtype).T


def client_transform(dim: int, client: str, *, seed: int, bias: float = 1.0) -> ClientTransform:
    """The transformation of ``client`` (deterministic in ``seed`` and ``client``)."""
    g = torch.Generator().manual_seed(client_seed(seed, client, "transform"))
    q, r = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
    q = q * torch.where(torch.diagonal(r) < 0, -1.0, 1.0)  # a unique, Haar-distributed Q
    shift = torch.randn(dim, generator=g, dtype=torch.float64) * bias
    return ClientTransform(q.float(), shift.float(), torch.randperm(dim, generator=g))


# --- the defence --------------------------------------------------------------------------------
@dataclass
class _Account:
    occupied: Tensor
    noise: torch.Generator
    transform: ClientTransform | None
    queries: int = 0
    last_sigma: float = 0.0


class B4B(Defense):
    """B4B in front of an encoder API: per-client coverage, noise by coverage, per-client maps.

    Args:
        hyperplanes: LSH hyperplanes n; the space has 2^n buckets.
        lam, alpha, beta: the calibration ``sigma(cov) = lam * (exp(ln(alpha/lam) cov/beta) - 1)``.
        relative: sigma in units of each answer's root-mean-square entry (else absolute).
        transform: apply each client's orthogonal map, shift and shuffle.
        bias: standard deviation of the per-client shift.
        center: the point the hyperplanes pass through (e.g. the owner's mean embedding).
        seed: the owner's seed for the hyperplanes, each client's map and its noise.
    """

    needs = OutputKind.EMBEDDING
    gives = OutputKind.EMBEDDING

    def __init__(
        self,
        *,
        hyperplanes: int = 12,
        lam: float = 1e-6,
        alpha: float = 1.0,
        beta: float = 0.8,
        relative: bool = True,
        transform: bool = True,
        bias: float = 1.0,
        center: Sequence[float] | Tensor | None = None,
        seed: int = 0,
    ) -> None:
        if isinstance(hyperplanes, bool) or not isinstance(hyperplanes, int):
            raise ValueError(f"hyperplanes must be an int, got {hyperplanes!r}")
        if not 1 <= hyperplanes <= 24:
            raise ValueError(f"hyperplanes must lie in [1, 24] (2^n buckets), got {hyperplanes}")
        noise_scale(0.0, lam=lam, alpha=alpha, beta=beta)  # validates the calibration
        if bias < 0:
            raise ValueError(f"bias must be >= 0, got {bias}")
        self.hyperplanes, self.lam, self.alpha, self.beta = hyperplanes, lam, alpha, beta
        self.relative, self.transform, self.bias, self.seed = relative, transform, bias, seed
        self.center = None if center is None else torch.as_tensor(center, dtype=torch.float32)
        if self.center is not None and self.center.dim() != 1:
            raise ValueError(f"center must be one (D,) embedding, got {tuple(self.center.shape)}")
        self._planes: Tensor | None = None
        self._accounts: dict[str, _Account] = {}

    def _account(self, client: str, dim: int) -> _Account:
        if client not in self._accounts:
            seed = client_seed(self.seed, client, "noise")
            t = client_transform(dim, client, seed=self.seed, bias=self.bias)
            self._accounts[client] = _Account(
                occupied=torch.zeros(2**self.hyperplanes, dtype=torch.bool),
                noise=torch.Generator().manual_seed(seed),
                transform=t if self.transform else None,
            )
        return self._accounts[client]

    def coverage(self, client: str) -> float:
        """The fraction of buckets ``client``'s answers have fallen in so far."""
        a = self._accounts.get(client)
        return 0.0 if a is None else float(a.occupied.float().mean())

    def last_sigma(self, client: str) -> float:
        """The noise scale of ``client``'s latest answer (0 before any)."""
        a = self._accounts.get(client)
        return 0.0 if a is None else a.last_sigma

    def untransform(self, y: Tensor, client: str) -> Tensor:
        """Undo ``client``'s transformation (what only the owner can do)."""
        a = self._accounts.get(client)
        if a is None:
            raise ValueError(f"client {client!r} has not been answered yet")
        return y if a.transform is None else a.transform.invert(y)

    def answer(self, x: Tensor, response: Response, client: str) -> Response:
        if response.kind is not OutputKind.EMBEDDING:
            raise TypeError(f"{self!r} perturbs embeddings, not {response.kind.value} answers")
        z = response.values.float()
        d = int(z.shape[1])
        if self.center is not None and len(self.center) != d:
            raise ValueError(f"center has {len(self.center)} entries; the embeddings have {d}")
        if self._planes is None or self._planes.shape[1] != d:
            self._planes = lsh_hyperplanes(d, self.hyperplanes, self.seed)
        acc = self._account(client, d)
        cov = running_coverage(lsh_buckets(z, self._planes, self.center), acc.occupied)
        sigma = noise_scale(cov, lam=self.lam, alpha=self.alpha, beta=self.beta).float()
        eps = torch.randn(z.shape, generator=acc.noise)
        if self.relative:
            eps = eps * z.pow(2).mean(dim=1, keepdim=True).sqrt()
        out = z + sigma[:, None] * eps
        acc.queries += len(z)
        if len(sigma):
            acc.last_sigma = float(sigma[-1])
        if acc.transform is not None:
            out = acc.transform.apply(out)
        return Response(OutputKind.EMBEDDING, out)

    def apply(self, response: Response) -> Response:
        raise TypeError("B4B answers per client: call answer(x, response, client)")

    def reset(self) -> None:
        self._accounts = {}

    def __repr__(self) -> str:
        return (
            f"B4B(hyperplanes={self.hyperplanes}, lam={self.lam}, alpha={self.alpha}, "
            f"beta={self.beta}, relative={self.relative}, transform={self.transform}, "
            f"bias={self.bias}, center={'set' if self.center is not None else None}, "
            f"seed={self.seed})"
        )
