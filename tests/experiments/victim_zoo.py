"""Small victims for the experiment tests, reached as ``victim: {name: python, params: {target:
"victim_zoo:..."}}`` (pytest puts this folder on ``sys.path``)."""

from __future__ import annotations

from torch import Tensor, nn


class _NaNs(nn.Module):
    """A grey 28x28 classifier whose every logit is NaN: a broken checkpoint."""

    def forward(self, x: Tensor) -> Tensor:
        return x.reshape(len(x), -1)[:, :10] * float("nan")


def nan_net() -> nn.Module:
    return _NaNs()


def grey_net() -> nn.Module:
    """A classifier of grey 8x8 images (one input channel)."""
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(256, 10))


class _NaNOnBright(nn.Module):
    """Finite logits, except NaN for images brighter than 0.45 on average (no MNIST digit is;
    about one Fashion-MNIST image in eight is): a victim that breaks mid-run."""

    def forward(self, x: Tensor) -> Tensor:
        flat = x.reshape(len(x), -1)
        logits = flat[:, :10] + flat.mean(1, keepdim=True)
        bright = flat.mean(1) > 0.45
        return logits.masked_fill(bright.unsqueeze(1), float("nan"))


def nan_on_bright() -> nn.Module:
    return _NaNOnBright()
