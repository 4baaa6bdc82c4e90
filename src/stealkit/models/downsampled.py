"""A backbone that sees its input average-pooled: a CPU-sized surrogate for a victim that takes
large images (EfficientNet-Lite0 at 96 px is stolen with a ResNet-8 on 32 px).

    net = build_model("resnet8-down3", in_channels=3, num_classes=10, image_size=96)
    net.features(x)   # (N, 128): resnet8's features of avg_pool2d(x, 3)
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from stealkit.models.encoder import embed


class Downsampled(nn.Module):
    """``net`` on its input average-pooled by ``factor`` (kernel and stride ``factor``).

    ``features`` is the pooled backbone's embedding (``embed(net, .)``), ``forward`` its output,
    so the module serves both as an encoder backbone and as a classifier.
    """

    def __init__(self, net: nn.Module, factor: int) -> None:
        super().__init__()
        if factor < 1:
            raise ValueError(f"factor must be >= 1, got {factor}")
        self.net, self.factor = net, factor

    def pool(self, x: Tensor) -> Tensor:
        return x if self.factor == 1 else F.avg_pool2d(x, self.factor)

    def features(self, x: Tensor) -> Tensor:
        return embed(self.net, self.pool(x))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(self.pool(x))

    def extra_repr(self) -> str:
        return f"factor={self.factor}"


def resnet8_down3(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """``Downsampled(resnet8, 3)``: resnet8 built for ``image_size // 3`` px inputs."""
    from stealkit.models.registry import build_model  # the registry imports this module

    if image_size < 3:
        raise ValueError(f"resnet8-down3 needs images of at least 3 px, got {image_size}")
    net = build_model(
        "resnet8", in_channels=in_channels, num_classes=num_classes, image_size=image_size // 3
    )
    return Downsampled(net, 3)
