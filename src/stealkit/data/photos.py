"""scikit-image's bundled photographs and random square crops of them.

The natural-photo pool (``skimage-crops``) and the photo source of the mixed open-world pool
(``mixed-open-world``) both cut their images here. Photographs that need a download are skipped.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from stealkit.errors import DataNotFound

PHOTOS = (
    "astronaut",
    "brick",
    "camera",
    "cat",
    "chelsea",
    "clock",
    "coffee",
    "coins",
    "colorwheel",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "logo",
    "moon",
    "page",
    "retina",
    "rocket",
    "text",
    "horse",
    "microaneurysms",
    "cell",
    "checkerboard",
    "human_mitosis",
    "motorcycle_left",
    "motorcycle_right",
)


def load_photos() -> dict[str, np.ndarray]:
    """The photographs of :data:`PHOTOS` that load here, by name, as scikit-image returns them."""
    try:
        import skimage.data as skd
    except ImportError:
        raise DataNotFound("scikit-image is not installed (pip install scikit-image)") from None
    out = {}
    for name in PHOTOS:
        try:
            out[name] = np.asarray(getattr(skd, name)())
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException:  # noqa: BLE001 - some need a download (under pytest, skimage
            continue  # even raises pytest's Skipped, a BaseException): skip those photos
    if not out:
        raise DataNotFound("scikit-image ships no loadable photos here")
    return out


def random_square_crops(
    photos: list[Tensor], n: int, size: int, gen: torch.Generator, *, scale: float = 1.0
) -> tuple[Tensor, Tensor]:
    """``n`` square crops of photos (C, H, W) drawn uniformly, each side uniform in
    [max(8, min side / 8), min side] at a uniform position, resized to ``size`` (bilinear,
    antialiased) and stored as uint8 after multiplying by ``scale``: (n, C, size, size), and
    the photo index of each crop."""
    which = torch.randint(len(photos), (n,), generator=gen)
    out = torch.empty((n, photos[0].shape[0], size, size), dtype=torch.uint8)
    for i in range(n):
        p = photos[int(which[i])]
        h, w = p.shape[1:]
        s = int(torch.randint(max(8, min(h, w) // 8), min(h, w) + 1, (1,), generator=gen))
        top = int(torch.randint(0, h - s + 1, (1,), generator=gen))
        left = int(torch.randint(0, w - s + 1, (1,), generator=gen))
        crop = p[:, top : top + s, left : left + s][None].float()
        small = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True)[0]
        out[i] = small.mul(scale).round().clamp(0, 255).to(torch.uint8)
    return out, which
