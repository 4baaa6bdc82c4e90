"""A victim: a model, the input it expects, what is known about it, and the oracles it gives."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from stealkit.defenses.perturbation import DefendedOracle, Defense, NoDefense
from stealkit.oracle.base import Oracle
from stealkit.oracle.ledger import Ledger
from stealkit.oracle.local import LocalOracle
from stealkit.oracle.response import OutputKind
from stealkit.oracle.spec import InputSpec

KINDS = ("classifier", "encoder")


def probe_output_dim(model: nn.Module, spec: InputSpec, name: str) -> int:
    """The output size of ``model`` on one zero image of ``spec``; ConfigError when the model
    fails on it or does not answer (N, classes) or (N, D)."""
    from stealkit.errors import ConfigError

    try:
        with torch.inference_mode():
            out = model.eval()(torch.zeros(1, *spec.shape))
    except Exception as e:  # noqa: BLE001 - any failure of user code becomes a config error
        raise ConfigError(
            f"{name} fails on a (1, {', '.join(map(str, spec.shape))}) input of the spec: "
            f"{type(e).__name__}: {e}; check the spec's channels, height and width against "
            "what the model takes"
        ) from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        raise ConfigError(
            f"{name} returns {getattr(out, 'shape', type(out).__name__)} for one image; a "
            "victim must return (N, classes) logits or (N, D) embeddings"
        )
    return int(out.shape[1])


@dataclass
class Victim:
    """A loaded victim. ``model`` includes its own preprocessing: it takes images in the spec's
    value range. Nothing outside ``stealkit.victims`` touches ``model``: the thief gets
    ``oracle(...)`` (metered, behind the defence), the judge ``evaluator(...)`` (unmetered, on
    a ledger of its own), so a remote victim fits by giving the same two oracles.
    """

    name: str
    model: nn.Module
    spec: InputSpec
    kind: str = "classifier"  # or "encoder"
    classes: list[str] | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def oracle(
        self,
        *,
        output: OutputKind | str,
        ledger: Ledger,
        k: int = 1,
        defense: Defense | None = None,
        device: torch.device | str = "cpu",
        client: str = "thief",
    ) -> Oracle:
        """The API as ``client`` sees it: answers of kind ``output`` (top-``k`` for ``topk``),
        through ``defense`` when one is given (a ``stealkit.defenses.Defense``; the victim then
        answers the defence in the kind it needs), every input charged to ``ledger``."""
        out = OutputKind(output)
        if defense is None or isinstance(defense, NoDefense):
            inner = LocalOracle(
                self.model, self.spec, output=out, k=k, ledger=ledger, device=device, name=self.name
            )
            inner.client = client
            return inner
        need = defense.needs if defense.needs is not None else out
        inner = LocalOracle(
            self.model, self.spec, output=need, ledger=ledger, device=device, name=self.name
        )
        inner.client = client
        return DefendedOracle(inner, defense)

    def evaluator(self, *, output: OutputKind | str, device: torch.device | str = "cpu") -> Oracle:
        """An unmetered oracle for judges (clean answers of kind ``output``); it never touches a
        thief's ledger."""
        inner = LocalOracle(
            self.model, self.spec, output=OutputKind(output), device=device, name=self.name
        )
        inner.client = "judge"
        return inner

    def __repr__(self) -> str:
        return f"Victim(name={self.name!r}, kind={self.kind}, spec={self.spec.shape}, meta={self.meta})"
