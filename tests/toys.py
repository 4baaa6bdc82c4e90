"""Parameter-free toy models the tests share (imported by conftest.py and by test helpers)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from stealkit.attacks import TrainRecipe
from stealkit.data import ImageDataset
from stealkit.data.pool import QueryPool
from stealkit.models import build_model
from stealkit.oracle import InputSpec, LocalOracle


class RowBands(nn.Module):
    """A parameter-free classifier on (N, 1, 8, 8): class j scores the mean of rows 2j and 2j+1.

    Logits are ``scale * band_mean``, so the answer depends on the input and is easy to predict.
    """

    num_classes = 4

    def __init__(self, scale: float = 10.0) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, x: Tensor) -> Tensor:
        return self.scale * x.reshape(x.shape[0], 4, 16).mean(dim=2)


# --- the 8x8 row-band set-up the pool-attack tests share ---------------------------------------
SPEC = InputSpec(channels=1, height=8, width=8)
ROUND = TrainRecipe(epochs=3, min_steps=30, batch_size=64, lr=3e-3)  # per-round training
FINAL = TrainRecipe(epochs=10, min_steps=100, batch_size=64, lr=3e-3)  # the final fit


class Recording(LocalOracle):
    """A LocalOracle that keeps every batch it answered."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.seen: list[Tensor] = []

    def _answer(self, x: Tensor) -> Tensor:
        self.seen.append(x.clone())
        return super()._answer(x)


def noise_pool(n: int) -> QueryPool:
    """``n`` distinct-with-overwhelming-odds uniform-noise 8x8 grey images (seed 0)."""
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    return QueryPool(ImageDataset("noise", images), SPEC)


def mlp_surrogate() -> nn.Module:
    """A fresh 4-class MLP for 8x8 inputs, the same weights every call (torch seed 1)."""
    torch.manual_seed(1)
    return build_model("mlp", in_channels=1, num_classes=4, image_size=8)
