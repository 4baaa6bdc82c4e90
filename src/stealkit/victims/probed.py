"""An encoder victim served as the downstream classifier built on it: the encoder, then a linear
head trained here on its frozen embeddings of labelled images.

This is what the owner of a pre-trained encoder deploys for one task, and what a thief who steals
"the classifier" instead of "the encoder" faces (Sha et al., "Can't Steal? Cont-Steal! Contrastive
Stealing Attacks Against Image Encoders", CVPR 2023, https://arxiv.org/abs/2201.07513, compare
the two). The head is exactly the linear probe an encoder judge trains on the same images
(``stealkit.metrics.linear_probe``, seed 0), so the classifier agrees with the judge's victim
probe on every test image:

    victim = load_victim(
        "probed-encoder",
        encoder="ssl",
        encoder_params={"method": "simclr", "dataset": "fashion-mnist", "epochs": 10},
        dataset="fashion-mnist", split="train", limit=5000, epochs=30,
    )
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from stealkit.data import load_dataset, to_spec
from stealkit.data.dataset import ImageDataset
from stealkit.errors import ConfigError
from stealkit.metrics.probe import linear_probe
from stealkit.oracle import OutputKind
from stealkit.train.loop import default_device
from stealkit.victims.base import Victim

if TYPE_CHECKING:
    from stealkit.victims.registry import VictimInfo


def probe_images(
    dataset: str,
    split: str,
    start: int,
    stop: int | None,
    limit: int | None,
    data_dir: str | Path | None,
    seed: int = 0,
) -> ImageDataset:
    """The labelled images of the head: ``split``, then ``[start:stop]``, then a random subset
    of at most ``limit`` drawn with ``seed``: the selection of a config's ``probe:`` section."""
    if start < 0 or (stop is not None and stop <= start) or (limit is not None and limit < 1):
        raise ConfigError(
            f"probe images: need 0 <= start < stop and limit >= 1, got start {start}, "
            f"stop {stop}, limit {limit}"
        )
    ds = load_dataset(dataset, split, data_dir=data_dir)
    if start or stop is not None:
        ds = ds.subset(torch.arange(len(ds))[start:stop])
    ds = ds.limit(limit, seed)
    if ds.y is None or len(ds) == 0:
        raise ConfigError(
            f"the head of a probed encoder is trained on labelled images; {dataset!r} ({split}, "
            f"[{start}:{stop}]) has {'no labels' if ds.y is None else 'no images there'}"
        )
    return ds


def _check(encoder_params: Any, epochs: Any) -> dict[str, Any]:
    if encoder_params is not None and not isinstance(encoder_params, dict):
        raise ConfigError(f"encoder_params must be a mapping, got {encoder_params!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ConfigError(f"epochs must be an int >= 1, got {epochs!r}")
    return dict(encoder_params or {})


def load_probed_encoder(
    *,
    encoder: str,
    encoder_params: dict[str, Any] | None = None,
    dataset: str,
    split: str = "train",
    start: int = 0,
    stop: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    epochs: int = 30,
    data_dir: str | Path | None = None,
    device: str | torch.device | None = None,
) -> Victim:
    """Load encoder victim ``encoder`` and put a linear head on it.

    Args:
        encoder, encoder_params: a registered encoder victim and its parameters (give its own
            ``data_dir`` there).
        dataset, split, start, stop, limit, seed: the head's labelled training images,
            selected as a config's ``probe:`` section selects them.
        epochs: of the head's training (``linear_probe``: standardised features, Adam, seed 0).
        data_dir: where ``dataset`` lives, for data sets that are not bundled.
        device: where the embeddings are computed and the head trained.

    Returns:
        A classifier Victim: ``nn.Sequential(encoder.model, head)`` in the encoder's input spec,
        answering logits over the data set's classes; its meta records the encoder's meta and the
        head's training accuracy.
    """
    from stealkit.victims.registry import load_victim  # the registry imports this module

    params = _check(encoder_params, epochs)
    inner = load_victim(encoder, **params)
    if inner.kind != "encoder":
        raise ConfigError(
            f"encoder {encoder!r} is a {inner.kind}; a probed encoder needs an encoder"
        )
    data = probe_images(dataset, split, start, stop, limit, data_dir, seed)
    assert data.y is not None  # probe_images refuses unlabelled images
    x = to_spec(data.images(), inner.spec)
    dev = torch.device(device) if device is not None else default_device()
    clean = inner.evaluator(output=OutputKind.EMBEDDING, device=dev)
    classes = data.num_classes or int(data.y.max()) + 1
    result = linear_probe(
        lambda b: clean.query(b).values,
        x,
        data.y,
        x,  # the head does not depend on the test set; its accuracy here is the train accuracy
        data.y,
        num_classes=classes,
        epochs=epochs,
        device=dev,
    )
    model = nn.Sequential(inner.model, result.head).eval()
    return Victim(
        name=f"probed:{inner.name}",
        model=model,
        spec=inner.spec,
        kind="classifier",
        classes=data.classes,
        meta={
            "encoder": inner.name,
            "encoder_meta": inner.meta,
            "probe": {"dataset": dataset, "split": split, "start": start, "stop": stop},
            "probe_limit": limit,
            "probe_size": len(data),
            "probe_epochs": epochs,
            "probe_train_accuracy": result.train_accuracy,
            "num_classes": classes,
        },
    )


def describe_probed_encoder(
    *,
    encoder: str,
    encoder_params: dict[str, Any] | None = None,
    dataset: str,
    split: str = "train",
    start: int = 0,
    stop: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    epochs: int = 30,
    data_dir: str | Path | None = None,
    device: str | torch.device | None = None,
) -> VictimInfo:
    """What ``load_probed_encoder`` gives, without loading (or pre-training) the encoder or
    training the head: the encoder's own description, the probe images' classes."""
    from stealkit.victims.registry import VictimInfo, describe_victim

    params = _check(encoder_params, epochs)
    info = describe_victim(encoder, **params)
    if info.kind != "encoder":
        raise ConfigError(
            f"encoder {encoder!r} is a {info.kind}; a probed encoder needs an encoder"
        )
    data = probe_images(dataset, split, start, stop, limit, data_dir, seed)
    assert data.y is not None
    return VictimInfo("classifier", info.spec, data.num_classes or int(data.y.max()) + 1)
