"""Surrogate and victim architectures, built by name.

build_model("cnn3", in_channels=1, num_classes=10, image_size=28)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from stealkit.models.downsampled import resnet8_down3

Builder = Callable[[int, int, int], nn.Module]
_MODELS: dict[str, tuple[Builder, str]] = {}


def register_model(name: str, builder: Builder, *, description: str) -> None:
    """Register ``builder(in_channels, num_classes, image_size) -> nn.Module``; no duplicates."""
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered")
    _MODELS[name] = (builder, description)


def model_names() -> list[str]:
    return sorted(_MODELS)


def model_description(name: str) -> str:
    return _MODELS[name][1]


def build_model(arch: str, *, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    if arch not in _MODELS:
        raise ValueError(f"unknown architecture {arch!r}; registered: {', '.join(model_names())}")
    return _MODELS[arch][0](in_channels, num_classes, image_size)


def _flat_dim(features: nn.Module, in_channels: int, image_size: int) -> int:
    with torch.no_grad():
        return int(features(torch.zeros(1, in_channels, image_size, image_size)).numel())


class ConvNet(nn.Module):
    """conv(3x3)-[BN]-ReLU-maxpool blocks, then a hidden fully connected layer.

    With widths (32, 64, 128), hidden 256 and no BN this is the layout of the real MNIST victim.
    ``features`` returns the penultimate representation, so the net doubles as an encoder.
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        image_size: int,
        *,
        widths: tuple[int, ...] = (32, 64, 128),
        hidden: int = 256,
        batchnorm: bool = True,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for w in widths:
            layers += [nn.Conv2d(c, w, 3, padding=1)]
            if batchnorm:
                layers += [nn.BatchNorm2d(w)]
            layers += [nn.ReLU(inplace=True), nn.MaxPool2d(2)]
            c = w
        self.conv_layers = nn.Sequential(*layers)
        flat = _flat_dim(self.conv_layers, in_channels, image_size)
        fc: list[nn.Module] = [nn.Linear(flat, hidden), nn.ReLU(inplace=True)]
        if dropout > 0:
            fc.append(nn.Dropout(dropout))
        self.fc_layers = nn.Sequential(*fc, nn.Linear(hidden, num_classes))
        self.feature_dim = hidden

    def features(self, x: Tensor) -> Tensor:
        return self.fc_layers[:-1](self.conv_layers(x).flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_layers(self.conv_layers(x).flatten(1))


class LeNet5(nn.Module):
    """LeCun et al. 1998, with ReLU and max-pooling."""

    def __init__(self, in_channels: int, num_classes: int, image_size: int) -> None:
        super().__init__()
        self.conv_layers = nn.Sequential(
            nn.Conv2d(in_channels, 6, 5, padding=2),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        flat = _flat_dim(self.conv_layers, in_channels, image_size)
        self.fc_layers = nn.Sequential(
            nn.Linear(flat, 120),
            nn.ReLU(inplace=True),
            nn.Linear(120, 84),
            nn.ReLU(inplace=True),
            nn.Linear(84, num_classes),
        )
        self.feature_dim = 84

    def features(self, x: Tensor) -> Tensor:
        return self.fc_layers[:-1](self.conv_layers(x).flatten(1))

    def forward(self, x: Tensor) -> Tensor:
        return self.fc_layers(self.conv_layers(x).flatten(1))


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, stride, 1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
            nn.Conv2d(cout, cout, 3, 1, 1, bias=False),
            nn.BatchNorm2d(cout),
        )
        self.skip: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.skip = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: Tensor) -> Tensor:
        return torch.relu(self.body(x) + self.skip(x))


class ResNet8(nn.Module):
    """A three-stage residual network (one block per stage) for small images."""

    def __init__(
        self, in_channels: int, num_classes: int, image_size: int, width: int = 32
    ) -> None:
        super().__init__()
        w = width
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, w, 3, 1, 1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)
        )
        self.stages = nn.Sequential(_Block(w, w, 1), _Block(w, 2 * w, 2), _Block(2 * w, 4 * w, 2))
        self.head = nn.Linear(4 * w, num_classes)
        self.feature_dim = 4 * w

    def features(self, x: Tensor) -> Tensor:
        return self.stages(self.stem(x)).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


class MLP(nn.Module):
    def __init__(
        self, in_channels: int, num_classes: int, image_size: int, hidden: int = 256
    ) -> None:
        super().__init__()
        d = in_channels * image_size * image_size
        self.body = nn.Sequential(
            nn.Flatten(),
            nn.Linear(d, hidden),
            nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden),
            nn.ReLU(inplace=True),
        )
        self.head = nn.Linear(hidden, num_classes)
        self.feature_dim = hidden

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


register_model(
    "cnn3",
    lambda c, k, s: ConvNet(c, k, s),
    description="3 conv blocks (32-64-128) with BN, fc 256",
)
register_model(
    "cnn3-plain",
    lambda c, k, s: ConvNet(c, k, s, batchnorm=False),
    description="the real MNIST victim's layout: 3 conv blocks (32-64-128), no BN, fc 256",
)
register_model(
    "cnn2-small",
    lambda c, k, s: ConvNet(c, k, s, widths=(16, 32), hidden=128),
    description="2 conv blocks (16-32) with BN, fc 128; for tests",
)
register_model("lenet5", LeNet5, description="LeNet-5 with ReLU and max-pooling")
register_model(
    "resnet8", ResNet8, description="3-stage ResNet, one basic block per stage, width 32"
)
register_model("mlp", MLP, description="2 hidden layers of 256")
register_model(
    "resnet8-down3",
    resnet8_down3,
    description="resnet8 on inputs average-pooled 3x (a small surrogate for large victims)",
)
