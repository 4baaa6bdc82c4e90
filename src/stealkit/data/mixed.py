"""A mixed open-world query pool: images of several sources, labelled ``source:class``.

Knockoff Nets (Orekondy, Schiele and Fritz, CVPR 2019, https://arxiv.org/abs/1812.02766, Sec.
5.2) query pools that are not the victim's data: ILSVRC and OpenImages (open world) and D^2, a
"dataset of datasets" whose hierarchy adds "as parents the dataset the images belong to". This
pool is a small offline D^2 for grey 28x28 victims, built from what loads without a network:

    fashion  Fashion-MNIST training images (Debian's dataset-fashion-mnist), leaves = its 10 classes
    photo    random crops of scikit-image's bundled photographs, grey, resized to ``size``;
             leaves = the photograph each crop was cut from
    foolbox  foolbox's 100 sample images (20 each of MNIST, Fashion-MNIST, CIFAR-10, CIFAR-100,
             ImageNet), grey and resized to ``size``; leaves = the data set they come from
    digits   a small share of scikit-learn's 8x8 digits, upscaled to ``size``; leaves = the digit

A label's name is ``source:class`` (``fashion:sandal``, ``photo:coffee``, ``foolbox:cifar10``,
``digits:7``), so Knockoff's adaptive policy (``attacks.knockoff.build_hierarchy``) puts the source
above the class. Sources that are not installed raise DataNotFound, each naming how to get it.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from stealkit.data.dataset import ImageDataset, to_spec
from stealkit.data.photos import load_photos, random_square_crops
from stealkit.oracle.spec import InputSpec

log = logging.getLogger(__name__)

SOURCES = ("fashion", "photo", "foolbox", "digits")
FOOLBOX_KINDS = {
    "mnist": "foolbox-mnist",
    "fashion-mnist": "foolbox-fashion-mnist",
    "cifar10": "foolbox-cifar10",
    "cifar100": "foolbox-cifar100",
    "imagenet": "foolbox-imagenet",
}


def grey_uint8(x: Tensor, size: int) -> Tensor:
    """Float images (N, C, H, W) in [0, 1] as grey uint8 (N, 1, size, size) (luma, antialiased)."""
    y = to_spec(x, InputSpec(channels=1, height=size, width=size))
    return y.mul(255.0).round().clamp(0, 255).to(torch.uint8)


def grey_photos() -> dict[str, Tensor]:
    """scikit-image's bundled photographs that load here, as grey float (H, W) in [0, 1]."""
    out = {}
    for name, img in load_photos().items():
        t = torch.from_numpy(img.astype(np.float32))
        t = (t - t.min()) / max(float(t.max() - t.min()), 1e-9)
        if t.dim() == 3:  # RGB(A): luma of the colour channels
            t = (t[..., :3] * torch.tensor([0.299, 0.587, 0.114])).sum(-1)
        out[name] = t
    return out


def source_counts(ds: ImageDataset) -> dict[str, int]:
    """Images per source of a data set whose class names read ``source:class``."""
    if ds.y is None or ds.classes is None:
        raise ValueError(f"{ds.name} has no labels or class names to read sources from")
    per_class = torch.bincount(ds.y, minlength=len(ds.classes)).tolist()
    out: dict[str, int] = {}
    for name, count in zip(ds.classes, per_class, strict=True):
        src = name.split(":", 1)[0]
        out[src] = out.get(src, 0) + count
    return out


def mixed_open_world(
    split: str,
    root: Path | None,
    *,
    fashion: int = 10000,
    photos: int = 10000,
    foolbox: bool = True,
    digits: int = 300,
    size: int = 28,
    seed: int = 0,
) -> ImageDataset:
    """The mixed pool (one split, "all"): ``fashion`` Fashion-MNIST training images, ``photos``
    photo crops, foolbox's 100 samples (``foolbox``) and ``digits`` sklearn digits, seeded."""
    from stealkit.data.registry import load_dataset  # the registry imports this module

    if min(fashion, photos, digits) < 0 or size < 8:
        raise ValueError(
            f"fashion, photos and digits must be >= 0 and size >= 8, got fashion={fashion}, "
            f"photos={photos}, digits={digits}, size={size}"
        )
    if not (fashion or photos or digits or foolbox):
        raise ValueError("the mixed pool needs at least one source: set fashion, photos or digits")
    xs: list[Tensor] = []
    names: list[list[str]] = []
    ys: list[Tensor] = []

    def add(source: str, x: Tensor, y: Tensor, classes: list[str]) -> None:
        xs.append(x)
        ys.append(y + sum(len(c) for c in names))
        names.append([f"{source}:{c}" for c in classes])

    if fashion:
        ds = load_dataset("fashion-mnist", "train", data_dir=root).limit(fashion, seed)
        assert ds.y is not None and ds.classes is not None
        add("fashion", grey_uint8(ds.images(), size), ds.y, ds.classes)
    if photos:
        bank = grey_photos()
        x, which = random_square_crops(
            [p[None] for p in bank.values()],
            photos,
            size,
            torch.Generator().manual_seed(seed),
            scale=255.0,
        )
        add("photo", x, which, list(bank))
    if foolbox:
        parts = [load_dataset(name, "all") for name in FOOLBOX_KINDS.values()]
        x = torch.cat([grey_uint8(p.images(), size) for p in parts])
        y = torch.cat([torch.full((len(p),), i) for i, p in enumerate(parts)])
        add("foolbox", x, y, list(FOOLBOX_KINDS))
    if digits:
        ds = load_dataset("digits", "all").limit(digits, seed)
        assert ds.y is not None and ds.classes is not None
        add("digits", grey_uint8(ds.images(), size), ds.y, ds.classes)
    out = ImageDataset(
        f"mixed-open-world:{split}", torch.cat(xs), torch.cat(ys), [c for cs in names for c in cs]
    )
    counts = source_counts(out)
    out.meta["sources"] = ", ".join(f"{k}={v}" for k, v in counts.items())
    log.info("mixed open-world pool: %d images (%s)", len(out), out.meta["sources"])
    return out
