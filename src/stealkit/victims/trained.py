"""Victims trained here: a registered architecture fitted on a registered data set, cached on disk.

    victim = train_victim(dataset="fashion-mnist", arch="cnn3", epochs=5)
    owner = train_victim(dataset="fashion-mnist", arch="cnn3", train_stop=30000, watermark="adi")
    x, y = victim_trigger_set(owner)      # the owner's secret trigger set, from its meta

A checkpoint is a folder holding ``model.safetensors`` (the state dict) and ``meta.json`` (what
was trained, how, and how well). The folder name ends in a hash of everything that changes the
weights, so a second call with the same settings loads the checkpoint instead of training.

Options: ``train_start``/``train_stop`` train on the slice ``train[start:stop]`` only (the rest
stays private to others, e.g. for dataset inference or an independent model);
``watermark="adi"`` plants an Adi et al. (USENIX Security 2018) backdoor watermark: a trigger
set of ``trigger_size`` abstract images with random labels (``stealkit.metrics.watermark``),
oversampled into the training data so that its copies make ``TRIGGER_SHARE`` of it (at least one
copy), as Adi et al. train the trigger set together with the data (not verified: their exact
mixing ratio). Settings left at their defaults stay out of the cache key, so checkpoints cached
before these options existed keep their folders.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from stealkit import __version__
from stealkit.data import load_dataset
from stealkit.errors import ConfigError
from stealkit.metrics.watermark import trigger_accuracy, trigger_set
from stealkit.models import build_model
from stealkit.oracle.spec import InputSpec
from stealkit.train import fit, predict
from stealkit.victims.base import Victim

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
META = "meta.json"
WATERMARKS = ("adi",)
TRIGGER_SHARE = 0.05  # trigger copies make this share of the training images (at least one copy)


def cache_key(
    *,
    dataset: str,
    arch: str,
    epochs: int,
    seed: int,
    batch_size: int,
    lr: float,
    extra: Mapping[str, Any] | None = None,
) -> str:
    """A short hash of the settings that determine a trained victim's weights.

    ``extra`` holds further settings (only those off their defaults, so that keys of victims
    trained without them never change); empty or None gives the key of the six settings alone.
    """
    settings: dict[str, Any] = {
        "dataset": dataset,
        "arch": arch,
        "epochs": epochs,
        "seed": seed,
        "batch_size": batch_size,
        "lr": lr,
    }
    clash = set(extra or {}) & set(settings)
    if clash:
        raise ValueError(f"extra settings {sorted(clash)} repeat the named ones; drop them")
    settings.update(extra or {})
    blob = json.dumps(settings, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_victim_options(
    *,
    watermark: str | None,
    trigger_size: int,
    trigger_seed: int | None,
    train_start: int,
    train_stop: int | None,
    n_train: int | None = None,
) -> None:
    """Raise ValueError naming the bad option and the fix; ``n_train`` (the train split's size,
    when known) bounds the slice."""
    if watermark is not None and watermark not in WATERMARKS:
        raise ValueError(
            f"watermark must be None or one of {list(WATERMARKS)} (Adi et al.'s trigger set), "
            f"got {watermark!r}"
        )
    if not _is_int(trigger_size) or trigger_size < 1:
        raise ValueError(f"trigger_size must be a positive int, got {trigger_size!r}")
    if trigger_seed is not None and not _is_int(trigger_seed):
        raise ValueError(
            f"trigger_seed must be an int or None (the victim's seed), got {trigger_seed!r}"
        )
    if watermark is None and (trigger_size != 100 or trigger_seed is not None):
        raise ValueError(
            "trigger_size and trigger_seed only apply to a watermarked victim; "
            "set watermark='adi' or drop them"
        )
    if not _is_int(train_start) or train_start < 0:
        raise ValueError(f"train_start must be an int >= 0, got {train_start!r}")
    if train_stop is not None and (not _is_int(train_stop) or train_stop <= train_start):
        raise ValueError(
            f"train_stop must be None (the end) or an int > train_start={train_start}, "
            f"got {train_stop!r}"
        )
    if n_train is not None:
        if train_start >= n_train:
            raise ValueError(
                f"train_start={train_start} is past the train split's {n_train} images; "
                f"pick a start below {n_train}"
            )
        if train_stop is not None and train_stop > n_train:
            raise ValueError(
                f"train_stop={train_stop} is past the train split's {n_train} images; "
                f"pick a stop of at most {n_train} (or None)"
            )


def trigger_copies(n_train: int, trigger_size: int) -> int:
    """How many times the trigger set is repeated in the training data: enough copies for them
    to make ``TRIGGER_SHARE`` of the ``n_train`` clean images, and at least one."""
    return max(1, math.ceil(TRIGGER_SHARE * n_train / trigger_size))


def _extra_key(
    *,
    watermark: str | None,
    trigger_size: int,
    trigger_seed: int,
    train_start: int,
    train_stop: int | None,
) -> dict[str, Any]:
    """The new settings that leave their defaults, for ``cache_key``'s ``extra``."""
    extra: dict[str, Any] = {}
    if train_start != 0:
        extra["train_start"] = train_start
    if train_stop is not None:
        extra["train_stop"] = train_stop
    if watermark is not None:
        extra |= {
            "watermark": watermark,
            "trigger_size": trigger_size,
            "trigger_seed": trigger_seed,
            "trigger_share": TRIGGER_SHARE,
        }
    return extra


def train_victim(
    *,
    dataset: str,
    arch: str,
    epochs: int = 5,
    seed: int = 0,
    batch_size: int = 128,
    lr: float = 1e-3,
    cache_dir: str | Path = Path("~/.cache/stealkit/victims"),
    data_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    watermark: str | None = None,
    trigger_size: int = 100,
    trigger_seed: int | None = None,
    train_start: int = 0,
    train_stop: int | None = None,
) -> Victim:
    """Train ``arch`` on ``dataset``'s train split with cross-entropy, or reuse a cached checkpoint.

    Args:
        dataset: a registered, labelled data set with "train" and "test" splits.
        arch: a registered architecture (``stealkit.models.model_names()``); images must be square.
        epochs, seed, batch_size, lr: passed to ``stealkit.train.fit`` (Adam, cosine schedule);
            ``seed`` also fixes the initial weights.
        cache_dir: checkpoints live in ``cache_dir/<dataset>-<arch>-<hash>/``.
        data_dir: where on-disk data sets live (see ``stealkit.data.load_dataset``).
        device: where to train; the returned model is on the CPU.
        watermark: None, or "adi" to plant Adi et al.'s trigger-set watermark.
        trigger_size: images in the trigger set (Adi et al. use 100).
        trigger_seed: seed of the trigger set (the owner's secret); None uses ``seed``.
        train_start, train_stop: train on ``train[train_start:train_stop]`` only (None: to
            the end).

    Returns:
        A classifier Victim taking images in [0, 1] of the data set's shape (no normalisation);
        ``meta`` records the settings, test accuracy and the checkpoint folder, and the slice,
        the watermark's settings and the victim's own trigger accuracy (None unwatermarked).
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    options: dict[str, Any] = dict(
        watermark=watermark,
        trigger_size=trigger_size,
        trigger_seed=trigger_seed,
        train_start=train_start,
        train_stop=train_stop,
    )
    check_victim_options(**options)
    t_seed = seed if trigger_seed is None else trigger_seed
    key = cache_key(
        dataset=dataset,
        arch=arch,
        epochs=epochs,
        seed=seed,
        batch_size=batch_size,
        lr=lr,
        extra=_extra_key(**options | {"trigger_seed": t_seed}),
    )
    directory = Path(cache_dir).expanduser() / f"{dataset}-{arch}-{key}"
    if (directory / META).exists():
        log.info("reusing the cached victim in %s (delete it to retrain)", directory)
        return load_checkpoint(directory)

    train = load_dataset(dataset, "train", data_dir=data_dir)
    test = load_dataset(dataset, "test", data_dir=data_dir)
    if train.y is None or test.y is None:
        raise ConfigError(
            f"data set {dataset!r} has no labels; train a victim on a labelled data set"
        )
    _, c, h, w = train.x.shape
    if h != w:
        raise ConfigError(
            f"data set {dataset!r} has {h}x{w} images; architectures need square images"
        )
    num_classes = len(train.classes) if train.classes else int(max(train.y.max(), test.y.max())) + 1
    check_victim_options(**options, n_train=len(train))
    stop = len(train) if train_stop is None else train_stop
    x, y = train.images(slice(train_start, stop)), train.y[train_start:stop]
    spec = InputSpec(channels=c, height=h, width=w)
    copies = 0
    if watermark is not None:
        tx, ty = trigger_set(trigger_size, spec, num_classes, t_seed)
        copies = trigger_copies(len(y), trigger_size)
        x = torch.cat([x, tx.repeat(copies, 1, 1, 1)])
        y = torch.cat([y, ty.repeat(copies)])
    with torch.random.fork_rng(devices=[]):  # seeded initial weights, global RNG left untouched
        torch.manual_seed(seed)
        model = build_model(arch, in_channels=c, num_classes=num_classes, image_size=h)

    log.info("training victim %s on %s (%d images, %d epochs)", arch, dataset, len(y), epochs)
    t0 = time.perf_counter()
    fit(
        model,
        x,
        y,
        loss_fn=F.cross_entropy,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=device,
        progress=f"victim training ({arch} on {dataset})",
    )
    seconds = time.perf_counter() - t0
    pred = predict(model, test.images(), device=device).argmax(1)
    trigger_acc = None
    if watermark is not None:
        trigger_acc = trigger_accuracy(lambda q: predict(model, q, device=device), tx, ty)
    meta: dict[str, Any] = {
        "dataset": dataset,
        "arch": arch,
        "epochs": epochs,
        "seed": seed,
        "batch_size": batch_size,
        "lr": lr,
        "key": key,
        "num_classes": num_classes,
        "test_accuracy": float((pred == test.y).float().mean()),
        "test_size": len(test),
        "train_start": train_start,
        "train_stop": stop,
        "watermark": watermark,
        "trigger_size": trigger_size if watermark is not None else None,
        "trigger_seed": t_seed if watermark is not None else None,
        "trigger_copies": copies,
        "trigger_accuracy": trigger_acc,
        "input_spec": spec.to_dict(),
        "classes": train.classes or [str(i) for i in range(num_classes)],
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(seconds, 3),
        "stealkit_version": __version__,
    }
    save_checkpoint(model.cpu().state_dict(), meta, directory)
    log.info("victim %s: test accuracy %.4f, saved to %s", arch, meta["test_accuracy"], directory)
    return load_checkpoint(directory)


def victim_trigger_set(victim: Victim) -> tuple[Tensor, Tensor]:
    """The owner's trigger set of a victim trained with ``watermark="adi"``, regenerated from
    its meta (size, seed, classes) and input spec: ``(x, y)`` as ``trigger_set`` gives them."""
    meta = victim.meta
    if meta.get("watermark") not in WATERMARKS:
        raise ConfigError(
            f"victim {victim.name!r} carries no watermark (meta watermark="
            f"{meta.get('watermark')!r}); train it with watermark='adi'"
        )
    return trigger_set(
        int(meta["trigger_size"]), victim.spec, int(meta["num_classes"]), int(meta["trigger_seed"])
    )


def save_checkpoint(state: dict[str, torch.Tensor], meta: dict[str, Any], directory: Path) -> None:
    """Write the pair into a temporary folder, then move it into place, so that an interrupted
    run never leaves a half-written checkpoint behind."""
    directory.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    try:
        save_file({k: v.detach().contiguous() for k, v in state.items()}, str(tmp / WEIGHTS))
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n")
        tmp.rename(directory)
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
        if not (directory / META).exists():  # not a concurrent writer that got there first
            raise


def read_checkpoint(
    directory: str | Path, *, what: str, wrap: Callable[[nn.Module], nn.Module] = lambda m: m
) -> tuple[dict[str, Any], InputSpec, nn.Module]:
    """Read ``meta.json`` and ``model.safetensors`` from ``directory``: the metadata, the input spec
    and the model (built from the registry, passed through ``wrap``, then loaded). Any missing
    file or mismatch becomes a ConfigError that says to delete the folder and train again."""
    directory = Path(directory).expanduser()
    for f in (META, WEIGHTS):
        if not (directory / f).is_file():
            raise ConfigError(
                f"{directory} is not a stealkit {what} checkpoint: {f} is missing; "
                "point at a folder written by stealkit, or delete it and train again"
            )
    try:
        meta = json.loads((directory / META).read_text())
        spec = InputSpec.from_dict(meta["input_spec"])
        net = build_model(
            meta["arch"],
            in_channels=spec.channels,
            num_classes=meta["num_classes"],
            image_size=spec.height,
        )
        model = wrap(net)
        model.load_state_dict(load_file(str(directory / WEIGHTS)))
    except (ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as e:
        raise ConfigError(
            f"the {what} checkpoint in {directory} is corrupt or from another version "
            f"({type(e).__name__}: {e}); delete the folder and train again"
        ) from e
    return meta, spec, model.eval()


def load_checkpoint(directory: str | Path) -> Victim:
    """Read back a victim saved by ``train_victim`` (``model.safetensors`` + ``meta.json``)."""
    meta, spec, model = read_checkpoint(directory, what="victim")
    info = {k: v for k, v in meta.items() if k not in ("input_spec", "classes")}
    return Victim(
        name=f"trained:{meta['dataset']}-{meta['arch']}",
        model=model,
        spec=spec,
        classes=meta.get("classes"),
        meta={**info, "checkpoint": str(Path(directory).expanduser())},
    )
