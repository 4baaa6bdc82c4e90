"""Defences that perturb each answer, as oracle wrappers.

A defence sees only the victim's output for the batch it answers; its maths lives in
``stealkit.defenses.functional``. ``DefendedOracle`` keeps the oracle interface and the
wrapped oracle's ledger, so attacks cannot tell a defended API from an undefended one.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from stealkit.defenses import functional as F
from stealkit.oracle.base import Oracle
from stealkit.oracle.response import OutputKind, Response

_CLASS_KINDS = (OutputKind.PROBABILITIES, OutputKind.LOGITS)


class Defense(ABC):
    """Maps one response to another. ``needs`` is the output kind it must receive."""

    needs: OutputKind = OutputKind.PROBABILITIES

    @abstractmethod
    def apply(self, response: Response) -> Response: ...

    def reset(self) -> None:  # noqa: B027 - a hook: most defences keep no state
        """Restore any random state, so a run can be repeated exactly."""


class NoDefense(Defense):
    def apply(self, response: Response) -> Response:
        return response

    def __repr__(self) -> str:
        return "NoDefense()"


class TopK(Defense):
    def __init__(self, *, k: int = 1, renormalize: bool = False) -> None:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k, self.renormalize = k, renormalize

    def apply(self, response: Response) -> Response:
        values = F.topk(response.probs(), self.k, renormalize=self.renormalize)
        return Response(OutputKind.TOPK, values, response.num_classes)

    def __repr__(self) -> str:
        return f"TopK(k={self.k}, renormalize={self.renormalize})"


class Rounding(Defense):
    def __init__(self, *, decimals: int = 1) -> None:
        if decimals < 0:
            raise ValueError(f"decimals must be >= 0, got {decimals}")
        self.decimals = decimals

    def apply(self, response: Response) -> Response:
        values = F.round_probs(response.probs(), self.decimals)
        return Response(OutputKind.PROBABILITIES, values, response.num_classes)

    def __repr__(self) -> str:
        return f"Rounding(decimals={self.decimals})"


class Argmax(Defense):
    def apply(self, response: Response) -> Response:
        return Response(OutputKind.LABEL, F.argmax_labels(response.probs()), response.num_classes)

    def __repr__(self) -> str:
        return "Argmax()"


class GaussianNoise(Defense):
    """Gaussian noise on probabilities (renormalised) or on logits (then softmax)."""

    def __init__(self, *, sigma: float = 0.1, on: str = "probabilities", seed: int = 0) -> None:
        if sigma < 0:
            raise ValueError(f"sigma must be >= 0, got {sigma}")
        if on not in ("probabilities", "logits"):
            raise ValueError(f"on must be 'probabilities' or 'logits', got {on!r}")
        self.sigma, self.on, self.seed = sigma, on, seed
        self.needs = OutputKind.LOGITS if on == "logits" else OutputKind.PROBABILITIES
        self._gen = torch.Generator().manual_seed(seed)

    def reset(self) -> None:
        self._gen.manual_seed(self.seed)

    def apply(self, response: Response) -> Response:
        if self.on == "logits":
            if response.kind is not OutputKind.LOGITS:
                raise TypeError("GaussianNoise(on='logits') needs an oracle that answers logits")
            values = F.gaussian_noise_logits(response.values, self.sigma, generator=self._gen)
        else:
            values = F.gaussian_noise_probs(response.probs(), self.sigma, generator=self._gen)
        return Response(OutputKind.PROBABILITIES, values, response.num_classes)

    def __repr__(self) -> str:
        return f"GaussianNoise(sigma={self.sigma}, on={self.on!r}, seed={self.seed})"


class ReverseSigmoid(Defense):
    def __init__(self, *, beta: float = 0.7, gamma: float = 0.4) -> None:
        if beta < 0 or gamma <= 0:
            raise ValueError(f"need beta >= 0 and gamma > 0, got beta={beta}, gamma={gamma}")
        self.beta, self.gamma = beta, gamma

    def apply(self, response: Response) -> Response:
        values = F.reverse_sigmoid(response.probs(), self.beta, self.gamma)
        return Response(OutputKind.PROBABILITIES, values, response.num_classes)

    def __repr__(self) -> str:
        return f"ReverseSigmoid(beta={self.beta}, gamma={self.gamma})"


class DefendedOracle(Oracle):
    """An oracle whose answers pass through ``defense``; queries are charged to the inner ledger."""

    def __init__(self, inner: Oracle, defense: Defense) -> None:
        if inner.output not in _CLASS_KINDS:
            raise ValueError(
                f"{defense!r} must wrap an oracle that answers probabilities or logits, "
                f"not {inner.output.value}"
            )
        if defense.needs is OutputKind.LOGITS and inner.output is not OutputKind.LOGITS:
            raise ValueError(f"{defense!r} needs an oracle that answers logits")
        if defense.needs is OutputKind.EMBEDDING:
            raise ValueError(
                f"{defense!r} perturbs embeddings; it cannot defend a classifier "
                "(use EmbeddingDefendedOracle around an encoder's oracle)"
            )
        self.inner, self.defense = inner, defense
        self.input_spec = inner.input_spec
        self.ledger = inner.ledger
        probe = defense.apply(Response(inner.output, torch.full((1, 2), 0.5), 2))
        self.output = probe.kind
        defense.reset()

    @property
    def output_dim(self) -> int:
        return self.inner.output_dim

    def query(self, x: Tensor) -> Response:
        return self.defense.apply(self.inner.query(x))

    def _answer(self, x: Tensor) -> Response:  # pragma: no cover - query is overridden
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"DefendedOracle({self.inner!r}, {self.defense!r})"
