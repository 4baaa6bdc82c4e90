"""DAWN: a watermark that travels through the API into whatever is trained on its answers.

Szyller, Atli, Marchal and Asokan, "DAWN: Dynamic Adversarial Watermarking of Neural Networks",
ACM Multimedia 2021, https://arxiv.org/abs/1906.00830.

The API answers a small, keyed fraction ``rate`` of queries with a wrong class. Which queries,
and which wrong class, follow from a keyed hash of the query itself, so asking again gives the
same answer (a thief cannot spot the marked answers by repetition) and nothing needs storing to
decide. A model stolen from the answers learns the wrong classes on those inputs; the owner keeps
each client's marked queries and, faced with a suspect model, checks how often it repeats them:

    h(x)      = HMAC-SHA256(key, bytes of x rounded to 1/255)        as a number in [0, 1)
    marked(x) = h(x) < rate
    y_wm(x)   = (argmax p(x) + 1 + floor(h'(x) * (C - 1))) mod C      (never the true class)
    wr(f)     = mean over a client's marked x of [argmax f(x) == y_wm(x)]

An independent model repeats a wrong class by chance about 1/(C-1) of the time; a copy trained on
the marked answers far more often. For probability answers the top class and the watermark class
swap their probabilities, so the answer stays a distribution.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable

import torch
from torch import Tensor

from stealkit.defenses.perturbation import Defense
from stealkit.oracle.response import OutputKind, Response


def keyed_hashes(x: Tensor, key: bytes) -> Tensor:
    """Two numbers in [0, 1) per input (N, 2): whether it is marked, and with which class."""
    q = (x.detach().float().cpu().clamp(0, 1) * 255).round().to(torch.uint8)
    out = []
    for row in q.reshape(len(q), -1):
        d = hmac.new(key, row.numpy().tobytes(), hashlib.sha256).digest()
        out.append((int.from_bytes(d[:8], "big") / 2**64, int.from_bytes(d[8:16], "big") / 2**64))
    return torch.tensor(out, dtype=torch.float64)


def watermark_labels(labels: Tensor, which: Tensor, num_classes: int) -> Tensor:
    """A wrong class per row, chosen by ``which`` in [0, 1): never ``labels`` itself."""
    shift = 1 + (which * (num_classes - 1)).floor().long().clamp(max=num_classes - 2)
    return (labels + shift) % num_classes


def watermark_rate(predict: Callable[[Tensor], Tensor], x: Tensor, y_wm: Tensor) -> float:
    """How often a model's labels (``predict(x)``) repeat the watermark classes."""
    if len(x) == 0:
        return float("nan")
    return float((predict(x).cpu() == y_wm.cpu()).float().mean())


class Dawn(Defense):
    """DAWN in front of any classifier API, with each client's marked queries kept.

    Args:
        rate: the fraction of queries answered with a wrong class (the paper: under 0.5%-1%).
        key: the owner's secret; the same key marks the same queries.
    """

    needs = None
    gives = None

    def __init__(self, *, rate: float = 0.01, key: str = "stealkit-dawn") -> None:
        if not 0.0 < rate < 0.5:
            raise ValueError(f"rate must lie in (0, 0.5), got {rate}")
        if not key:
            raise ValueError("key must be a non-empty secret")
        self.rate, self._key = rate, key.encode()
        self._marked: dict[str, list[tuple[Tensor, Tensor]]] = {}

    def marked(self, client: str) -> tuple[Tensor, Tensor]:
        """The client's marked queries and the watermark classes it was given."""
        parts = self._marked.get(client, [])
        if not parts:
            return torch.empty(0), torch.empty(0, dtype=torch.long)
        return torch.cat([x for x, _ in parts]), torch.cat([y for _, y in parts])

    def answer(self, x: Tensor, response: Response, client: str) -> Response:
        if response.kind is OutputKind.EMBEDDING:
            raise ValueError("DAWN marks class answers; an encoder needs another watermark")
        h = keyed_hashes(x, self._key)
        hit = h[:, 0] < self.rate
        if not bool(hit.any()):
            return response
        c = response.num_classes or int(response.values.shape[1])
        labels = response.labels()
        y_wm = watermark_labels(labels[hit], h[hit, 1], c)
        self._marked.setdefault(client, []).append((x[hit].detach().cpu(), y_wm))
        values = response.values.clone()
        idx = hit.nonzero().squeeze(1)
        if response.kind is OutputKind.LABEL:
            values[idx] = y_wm
        else:  # the top class and the watermark class swap scores: still a distribution
            top, wm = labels[idx], y_wm
            a, b = values[idx, top].clone(), values[idx, wm].clone()
            values[idx, top], values[idx, wm] = b, a
        return Response(response.kind, values, response.num_classes)

    def ownership(self, predict: Callable[[Tensor], Tensor], client: str) -> dict[str, float]:
        """The watermark rate of a suspect on ``client``'s marked queries (chance for an
        independent model: about 1/(C-1); the victim itself: 0)."""
        x, y = self.marked(client)
        return {"watermark_rate": watermark_rate(predict, x, y), "watermarked_queries": len(x)}

    def apply(self, response: Response) -> Response:
        return response  # it needs the queries: see answer()

    def reset(self) -> None:
        self._marked = {}

    def __repr__(self) -> str:
        return f"Dawn(rate={self.rate})"  # the key stays out of results
