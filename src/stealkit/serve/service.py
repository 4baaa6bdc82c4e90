"""What a served API answers: a victim behind a stack of defences, per key.

The defences are the same objects an in-process run uses (``stealkit.defenses``); each batch
reaches them with the key's id as the client, so a stateful defence (a query monitor) keeps its
state per key and honest and attacking keys can share one server. A *trusted* key (the owner's
evaluation key, ``stealkit keys create --trusted``) gets the victim's clean answers: a judge
measures the stolen model against the real victim, never billed to a thief's key.

State of stateful defences lives in the server process: with several worker processes each keeps
its own per-key state, while quotas and rate limits live in the shared SQL ledger.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from stealkit.defenses import Defense
from stealkit.errors import ConfigError
from stealkit.oracle.base import Oracle
from stealkit.oracle.probs import can_reduce, reduce
from stealkit.oracle.response import OutputKind, Response
from stealkit.oracle.spec import InputSpec
from stealkit.victims.base import Victim


@dataclass(frozen=True)
class Limits:
    """What one request may carry."""

    max_batch: int = 256
    max_body_bytes: int = 16 * 2**20

    def __post_init__(self) -> None:
        if self.max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1 input, got {self.max_batch}")
        if self.max_body_bytes < 1024:
            raise ConfigError(f"max_body_bytes must be at least 1 KiB, got {self.max_body_bytes}")


class Service:
    """Answers batches for keys: the victim, then each defence in order.

    Args:
        victim: the loaded victim (any registered one).
        output: the kind of answer the API gives; with defences that change the kind (top-k,
            argmax), what the last one gives, reduced to ``output`` where it can be (labels).
        k: classes revealed for ``topk`` answers.
        defenses: applied in order to every untrusted key's answers.
        limits: batch and body limits per request.
        device: where the victim runs.
    """

    def __init__(
        self,
        victim: Victim,
        *,
        output: OutputKind | str,
        k: int = 1,
        defenses: list[Defense] | None = None,
        limits: Limits | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        self.victim = victim
        self.defenses = list(defenses or [])
        self.limits = limits or Limits()
        self.k = k
        want = OutputKind(output)
        from stealkit.experiments.judges import get_family

        family = get_family(victim.kind)
        if want not in family.outputs:
            gives = ", ".join(sorted(k.value for k in family.outputs))
            raise ConfigError(
                f"victim.output: {want.value!r}, but {victim.name!r} is a {victim.kind}, which "
                f"answers {gives}"
            )
        need = self.defenses[0].needs if self.defenses and self.defenses[0].needs else want
        kind = need
        for d in self.defenses:
            if not d.accepts(kind):
                raise ConfigError(
                    f"defence {d!r} cannot take {kind.value} answers (what comes before it in "
                    "the stack); reorder the defences or change the output"
                )
            kind = d.output_kind(kind)
        if not can_reduce(kind, want):
            # as in-process (Victim.oracle): a defence that changes the kind of answer (top-k,
            # argmax) decides what the API gives; an output it can be reduced to is kept
            want = kind
        self.output = want
        self._clean: Oracle = victim.evaluator(output=need, device=device)
        self._trusted: Oracle = victim.evaluator(output=want, device=device)
        self.output_dim = self._clean.output_dim
        self._lock = threading.Lock()  # defences with random state are not thread-safe
        for d in self.defenses:
            d.reset()

    @property
    def spec(self) -> InputSpec:
        return self.victim.spec

    def answer(self, x: Tensor, client: str, *, trusted: bool = False) -> Response:
        """The answer ``client`` gets for ``x`` (already checked against the spec). A defence may
        raise ``QueryRefused``."""
        with self._lock:
            if trusted:
                return reduce(self._trusted.query(x), self.output, self.k)
            response = self._clean.query(x)
            for d in self.defenses:
                response = d.answer(x, response, client)
        return reduce(response, self.output, self.k)

    def info(self) -> dict[str, Any]:
        """The API's documentation, as data."""
        spec = self.spec
        return {
            "victim": self.victim.name,
            "kind": self.victim.kind,
            "input": {
                "shape": list(spec.shape),
                "value_range": list(spec.value_range),
                "dtype": "float32",
                "forms": ["inputs", "npy", "png"],
            },
            "output": self.output.value,
            "k": self.k if self.output is OutputKind.TOPK else None,
            "num_classes": self.output_dim if self.victim.kind == "classifier" else None,
            "embedding_dim": self.output_dim if self.victim.kind == "encoder" else None,
            "classes": self.victim.classes,
            "defenses": [repr(d) for d in self.defenses],
            "limits": {
                "max_batch": self.limits.max_batch,
                "max_body_bytes": self.limits.max_body_bytes,
            },
        }

    def __repr__(self) -> str:
        return (
            f"Service(victim={self.victim.name!r}, output={self.output.value}, "
            f"defenses={self.defenses!r})"
        )
