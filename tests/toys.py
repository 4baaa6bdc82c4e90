"""Parameter-free toy models the tests share (imported by conftest.py and by test helpers)."""

from __future__ import annotations

from torch import Tensor, nn


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
