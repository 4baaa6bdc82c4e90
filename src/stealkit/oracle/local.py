"""An oracle around a local torch module."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stealkit.oracle.base import Oracle, check_answer
from stealkit.oracle.ledger import Ledger
from stealkit.oracle.probs import argmax_labels, topk
from stealkit.oracle.response import OutputKind, Response
from stealkit.oracle.spec import InputSpec


class LocalOracle(Oracle):
    """Serves a torch module (inputs in [0, 1], preprocessing included) as a black box.

    Args:
        model: maps a (N, C, H, W) batch in the spec's range to logits or embeddings.
        input_spec: what the model accepts.
        output: the kind of answer this API gives.
        k: for ``OutputKind.TOPK``, how many classes are revealed.
        ledger: where queries are counted; a fresh unlimited one by default.
        device: where the model runs; answers always come back on the CPU.
        max_batch: the model is run on chunks of at most this many inputs.
    """

    def __init__(
        self,
        model: nn.Module,
        input_spec: InputSpec,
        *,
        output: OutputKind | str = OutputKind.PROBABILITIES,
        k: int = 1,
        ledger: Ledger | None = None,
        device: str | torch.device = "cpu",
        max_batch: int = 1024,
        name: str = "local",
    ) -> None:
        self.output = OutputKind(output)
        if self.output is OutputKind.TOPK and k < 1:
            raise ValueError(f"k must be >= 1 for top-k answers, got {k}")
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.input_spec = input_spec
        self.k = k
        self.ledger = ledger if ledger is not None else Ledger()
        self.device = torch.device(device)
        self.max_batch = max_batch
        self.name = name
        self._model = model.to(self.device).eval()
        self._output_dim: int | None = None

    @property
    def output_dim(self) -> int:
        if self._output_dim is None:
            probe = torch.zeros((1, *self.input_spec.shape), device=self.device)
            with torch.inference_mode():
                self._output_dim = int(self._model(probe).shape[1])
        return self._output_dim

    def _forward(self, x: Tensor) -> Tensor:
        with torch.inference_mode():
            outs = [
                self._model(x[i : i + self.max_batch].to(self.device, non_blocking=True))
                for i in range(0, x.shape[0], self.max_batch)
            ]
        out = outs[0] if len(outs) == 1 else torch.cat(outs)
        return out.float().cpu()

    def _answer(self, x: Tensor) -> Response:
        raw = self._forward(x)
        check_answer(Response(OutputKind.LOGITS, raw), len(x), self)  # before any softmax/argmax
        c = int(raw.shape[1])
        if self.output is OutputKind.EMBEDDING:
            return Response(OutputKind.EMBEDDING, raw)
        if self.output is OutputKind.LOGITS:
            return Response(OutputKind.LOGITS, raw, c)
        probs = raw.softmax(dim=1)
        if self.output is OutputKind.PROBABILITIES:
            return Response(OutputKind.PROBABILITIES, probs, c)
        if self.output is OutputKind.TOPK:
            return Response(OutputKind.TOPK, topk(probs, self.k), c)
        return Response(OutputKind.LABEL, argmax_labels(probs), c)

    def __repr__(self) -> str:
        return (
            f"LocalOracle(name={self.name!r}, output={self.output.value}, "
            f"spec={self.input_spec.shape}, ledger={self.ledger!r})"
        )
