"""Victims trained here: a registered architecture fitted on a registered data set, cached on disk.

    victim = train_victim(dataset="fashion-mnist", arch="cnn3", epochs=5)

A checkpoint is a folder holding ``model.safetensors`` (the state dict) and ``meta.json`` (what
was trained, how, and how well). The folder name ends in a hash of everything that changes the
weights, so a second call with the same settings loads the checkpoint instead of training.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from stealkit import __version__
from stealkit.data import load_dataset
from stealkit.errors import ConfigError
from stealkit.models import build_model
from stealkit.oracle.spec import InputSpec
from stealkit.train import fit, predict
from stealkit.victims.base import Victim

log = logging.getLogger(__name__)

WEIGHTS = "model.safetensors"
META = "meta.json"


def cache_key(
    *, dataset: str, arch: str, epochs: int, seed: int, batch_size: int, lr: float
) -> str:
    """A short hash of the settings that determine a trained victim's weights."""
    blob = json.dumps(
        {
            "dataset": dataset,
            "arch": arch,
            "epochs": epochs,
            "seed": seed,
            "batch_size": batch_size,
            "lr": lr,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


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

    Returns:
        A classifier Victim taking images in [0, 1] of the data set's shape (no normalisation);
        ``meta`` records the settings, test accuracy and the checkpoint folder.
    """
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"epochs must be a positive int, got {epochs!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    key = cache_key(
        dataset=dataset, arch=arch, epochs=epochs, seed=seed, batch_size=batch_size, lr=lr
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
    with torch.random.fork_rng(devices=[]):  # seeded initial weights, global RNG left untouched
        torch.manual_seed(seed)
        model = build_model(arch, in_channels=c, num_classes=num_classes, image_size=h)

    log.info("training victim %s on %s (%d images, %d epochs)", arch, dataset, len(train), epochs)
    t0 = time.perf_counter()
    fit(
        model,
        train.images(),
        train.y,
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
        "input_spec": InputSpec(channels=c, height=h, width=w).to_dict(),
        "classes": train.classes or [str(i) for i in range(num_classes)],
        "parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(seconds, 3),
        "stealkit_version": __version__,
    }
    save_checkpoint(model.cpu().state_dict(), meta, directory)
    log.info("victim %s: test accuracy %.4f, saved to %s", arch, meta["test_accuracy"], directory)
    return load_checkpoint(directory)


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
