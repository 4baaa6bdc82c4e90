"""Defences as oracle wrappers: one ``DefendedOracle`` for every output kind.

A defence receives each answered batch together with the queried inputs and the client that asked
(``Defense.answer(x, response, client)``), so a query monitor that keeps state per client fits the
same interface as a stateless perturbation. A defence may refuse a batch by raising
``stealkit.errors.QueryRefused``: the ledger then charges nothing, as for any refusal. Stateless
defences implement only ``apply(response)``, whose maths lives in ``stealkit.defenses.functional``
(classifiers) and ``stealkit.defenses.embedding`` (encoders). ``DefendedOracle`` keeps the oracle
interface and the wrapped oracle's ledger, so attacks cannot tell a defended API from another.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable

import torch
from torch import Tensor

from stealkit.defenses import functional as F
from stealkit.oracle.base import Oracle, check_answer
from stealkit.oracle.response import OutputKind, Response

_CLASS_KINDS = frozenset({OutputKind.PROBABILITIES, OutputKind.LOGITS})


class Defense(ABC):
    """Maps the victim's answer to a batch to the answer the client gets.

    ``needs`` is the output kind it must receive (``PROBABILITIES`` also takes logits, which it
    reads as their softmax; ``None``: any kind); ``gives`` is the kind it answers (``None``: the
    kind it received).
    """

    needs: OutputKind | None = OutputKind.PROBABILITIES
    gives: OutputKind | None = OutputKind.PROBABILITIES

    def answer(self, x: Tensor, response: Response, client: str) -> Response:
        """The answer ``client`` gets for queries ``x``; stateless defences ignore both."""
        return self.apply(response)

    @abstractmethod
    def apply(self, response: Response) -> Response:
        """The pure perturbation of one answer."""

    def accepts(self, kind: OutputKind) -> bool:
        """Whether this defence can wrap an oracle that answers ``kind``."""
        if self.needs is None:
            return True
        if self.needs is OutputKind.PROBABILITIES:
            return kind in _CLASS_KINDS
        return kind is self.needs

    def output_kind(self, inner: OutputKind) -> OutputKind:
        """What a client of an oracle answering ``inner`` gets through this defence."""
        return inner if self.gives is None else self.gives

    def ownership(self, predict: Callable[[Tensor], Tensor], client: str) -> dict[str, float]:
        """What this defence can tell of a suspect model (its labels: ``predict``) that was
        stolen through ``client``'s queries, e.g. a watermark's rate; most defences: nothing."""
        return {}

    def reset(self) -> None:  # noqa: B027 - a hook: most defences keep no state
        """Restore any random state and forget any per-client state, so a run repeats exactly."""


class NoDefense(Defense):
    needs = None
    gives = None

    def apply(self, response: Response) -> Response:
        return response

    def __repr__(self) -> str:
        return "NoDefense()"


def defense_repr(defense: Defense | None) -> str:
    """How a run records its defence: its repr, ``NoDefense()`` for none."""
    return repr(NoDefense() if defense is None else defense)


class TopK(Defense):
    gives = OutputKind.TOPK

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
    gives = OutputKind.LABEL

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
    """An oracle whose answers pass through ``defense``; queries are charged to the inner
    oracle's ledger, once, and only when the defence answered (a refusal charges nothing)."""

    def __init__(self, inner: Oracle, defense: Defense) -> None:
        if not defense.accepts(inner.output):
            want = (
                "probabilities or logits"
                if defense.needs is OutputKind.PROBABILITIES
                else defense.needs.value
                if defense.needs is not None
                else "any kind"
            )
            raise ValueError(
                f"{defense!r} must wrap an oracle that answers {want}, not {inner.output.value}"
            )
        self.inner, self.defense = inner, defense
        self.input_spec = inner.input_spec
        self.ledger = inner.ledger
        self.client = inner.client
        self.output = defense.output_kind(inner.output)
        defense.reset()

    @property
    def output_dim(self) -> int:
        return self.inner.output_dim

    def stats(self) -> dict[str, object]:
        return self.inner.stats()

    def _answer(self, x: Tensor) -> Response:
        raw = self.inner._answer(x)
        check_answer(raw, int(x.shape[0]), self.inner)
        return self.defense.answer(x, raw, self.client)

    def __repr__(self) -> str:
        return f"DefendedOracle({self.inner!r}, {self.defense!r})"
