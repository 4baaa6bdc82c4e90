"""The oracle interface: the only way anything in stealkit reaches a victim."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

from stealkit.errors import VictimError
from stealkit.oracle.ledger import Ledger
from stealkit.oracle.response import OutputKind, Response
from stealkit.oracle.spec import InputSpec


def check_answer(response: Response, n: int, source: object) -> None:
    """Raise VictimError unless ``response`` holds ``n`` finite answers."""
    if len(response) != n:
        raise VictimError(f"{source!r} answered {len(response)} rows for a batch of {n}")
    v = response.values
    if v.is_floating_point() and not bool(torch.isfinite(v).all()):
        bad = int((~torch.isfinite(v)).any(dim=-1).sum()) if v.dim() > 1 else n
        raise VictimError(
            f"{source!r} answered NaN or infinite values for {bad} of {n} inputs; nothing was "
            "charged. Check the victim's weights and preprocessing (an ONNX or python victim "
            "returning NaN, say) before stealing from it."
        )


class Oracle(ABC):
    """A black box that answers queries and charges each one to its ledger.

    Subclasses implement ``_answer``; ``query`` validates the batch, reserves its cost on the
    ledger before any work, answers, checks the answer is finite, and only then commits the
    charge. A refused, failed or non-finite batch costs nothing, and threads sharing one oracle
    can never answer past its budget.

    ``client`` names who is asking; defences that keep state per client (query monitors) read it.
    """

    input_spec: InputSpec
    output: OutputKind
    ledger: Ledger
    client: str = "thief"

    @property
    @abstractmethod
    def output_dim(self) -> int:
        """Number of classes (classifiers) or embedding size (encoders)."""

    @property
    def num_classes(self) -> int:
        if self.output is OutputKind.EMBEDDING:
            raise TypeError("an embedding oracle has no classes; use output_dim")
        return self.output_dim

    def query(self, x: Tensor) -> Response:
        """Answer a batch (N, C, H, W) of inputs in the spec's value range."""
        self.input_spec.check(x)
        n = int(x.shape[0])
        self.ledger.reserve(n)
        try:
            response = self._answer(x)
            check_answer(response, n, self)
        except BaseException:
            self.ledger.release(n)
            raise
        self.ledger.commit(n)
        return response

    def stats(self) -> dict[str, object]:
        """What this oracle knows beyond its ledger (a remote one: inputs bought, cache hits,
        latency); recorded with each run. Empty for local oracles."""
        return {}

    @abstractmethod
    def _answer(self, x: Tensor) -> Response:
        """Answer an already validated and budget-checked batch, charging nothing."""
