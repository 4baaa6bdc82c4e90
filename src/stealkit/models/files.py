"""A model as one file: safetensors weights with the settings that rebuild it, or an ONNX graph.

    save_model(surrogate, "runs/x/surrogate.safetensors", arch="cnn3", in_channels=1,
               num_classes=10, image_size=28)
    model = load_model("runs/x/surrogate.safetensors")          # arch etc. from the header
    model = load_model("weights.safetensors", arch="cnn3", in_channels=1, num_classes=10,
                       image_size=28)                            # a bare state dict
    model = load_model("suspect.onnx")                           # run by onnxruntime

A safetensors file written here holds the state dict and, in its header's string metadata,
``format`` (``stealkit-model/1``), ``arch``, ``in_channels``, ``num_classes`` (the module's output
size: classes, or the embedding size of an encoder), ``image_size``, ``kind`` and ``wrapper``:
``none`` (a registry network), ``features`` (a ``FeatureEncoder``: a network's penultimate
features) or ``surrogate-encoder`` (a ``SurrogateEncoder``: a backbone plus a linear map to a
victim's embedding size), with ``backbone_classes`` (the size of the backbone's own head, which
``build_model`` needs back). Every model takes images in [0, 1] of ``in_channels`` x
``image_size`` x ``image_size`` and returns (N, num_classes).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file
from torch import nn

from stealkit.errors import ConfigError
from stealkit.models.encoder import FeatureEncoder, SurrogateEncoder
from stealkit.models.registry import build_model, model_names

log = logging.getLogger(__name__)

FORMAT = "stealkit-model/1"
_SETTINGS = ("arch", "in_channels", "num_classes", "image_size")


def _probe_dim(module: nn.Module, in_channels: int, image_size: int) -> int:
    was_training = module.training
    module.eval()
    try:
        p = next(module.parameters(), None)
        dev = p.device if p is not None else torch.device("cpu")
        with torch.no_grad():
            out = module(torch.zeros(1, in_channels, image_size, image_size, device=dev))
    finally:
        module.train(was_training)
    return int(out.flatten(1).shape[1])


def save_model(
    module: nn.Module,
    path: str | Path,
    *,
    arch: str,
    in_channels: int,
    num_classes: int,
    image_size: int,
    extra: dict[str, str] | None = None,
) -> Path:
    """Write ``module``'s state dict to a safetensors file whose header says how to rebuild it.

    Args:
        module: a registry network (``build_model(arch, ...)``), or a ``FeatureEncoder`` or
            ``SurrogateEncoder`` around one.
        path: the file to write (parents are created); by convention ``*.safetensors``.
        arch, in_channels, image_size: the registry architecture and the input it was built for.
        num_classes: the module's output size (classes, or an encoder's embedding size); it is
            checked against one forward pass.
        extra: more string metadata to keep (the attack, the victim, ...); it may not override
            the settings above.

    Raises:
        ValueError: an unknown arch, an output size other than ``num_classes``, or ``extra``
            keys that clash with the settings.
    """
    if arch not in model_names():
        raise ValueError(f"unknown arch {arch!r}; registered: {', '.join(model_names())}")
    for name, value in (
        ("in_channels", in_channels),
        ("num_classes", num_classes),
        ("image_size", image_size),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    wrapper, backbone_classes = "none", num_classes
    if isinstance(module, SurrogateEncoder):
        wrapper = "surrogate-encoder"
        backbone_classes = _probe_dim(module.backbone, in_channels, image_size)
    elif isinstance(module, FeatureEncoder):
        wrapper = "features"
        backbone_classes = _probe_dim(module.net, in_channels, image_size)
    out = _probe_dim(module, in_channels, image_size)
    if out != num_classes:
        raise ValueError(
            f"the module answers {out} values per image, not num_classes={num_classes}; pass its "
            "output size (classes, or the embedding size of an encoder)"
        )
    meta = {
        "format": FORMAT,
        "arch": arch,
        "in_channels": str(in_channels),
        "num_classes": str(num_classes),
        "image_size": str(image_size),
        "kind": "classifier" if wrapper == "none" else "encoder",
        "wrapper": wrapper,
        "backbone_classes": str(backbone_classes),
    }
    clash = sorted(set(extra or {}) & set(meta))
    if clash:
        raise ValueError(f"extra metadata may not set {clash}; pass them as arguments instead")
    meta.update({str(k): str(v) for k, v in (extra or {}).items()})
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(state, str(path), metadata=meta)
    log.info("saved %s (%s) to %s", arch, wrapper, path)
    return path


def read_metadata(path: str | Path) -> dict[str, str]:
    """The string metadata in a safetensors file's header (empty for a bare state dict)."""
    try:
        with safe_open(str(path), framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError) as e:
        raise ConfigError(
            f"{path} is not a readable safetensors file ({e}); give a file written by "
            "stealkit.models.files.save_model or safetensors.torch.save_file"
        ) from None


def load_model(
    path: str | Path,
    *,
    arch: str | None = None,
    in_channels: int | None = None,
    num_classes: int | None = None,
    image_size: int | None = None,
) -> nn.Module:
    """A model in eval mode from a ``.safetensors`` file (rebuilt from the registry) or an
    ``.onnx`` file (run by onnxruntime on the CPU as a module taking float tensors).

    For safetensors, each setting comes from the file's header, else from the argument; an
    argument that disagrees with the header, or a setting that neither gives, is a ConfigError
    naming the fix. Weights that do not fit the architecture are a ConfigError too.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"model file {path} does not exist; give a .safetensors or .onnx file")
    if path.suffix.lower() == ".onnx":
        from stealkit.victims.external import OnnxModel

        return OnnxModel(path).eval()
    if path.suffix.lower() != ".safetensors":
        raise ConfigError(f"{path}: expected a .safetensors or .onnx file, got {path.suffix!r}")
    meta = read_metadata(path)
    given: dict[str, Any] = {
        "arch": arch,
        "in_channels": in_channels,
        "num_classes": num_classes,
        "image_size": image_size,
    }
    settings: dict[str, Any] = {}
    for key in _SETTINGS:
        stored = meta.get(key)
        value = given[key]
        if stored is not None and value is not None and str(value) != stored:
            raise ConfigError(
                f"{path} was saved with {key}={stored}, but {key}={value} was asked for; drop "
                f"the {key} argument (the file's own setting is used) or give the right file"
            )
        settings[key] = stored if stored is not None else value
    missing = [k for k in _SETTINGS if settings[k] is None]
    if missing:
        raise ConfigError(
            f"{path} does not record {', '.join(missing)} (a bare state dict); pass them "
            f"(e.g. --arch for the architecture, one of {', '.join(model_names())})"
        )
    name = str(settings["arch"])
    if name not in model_names():
        raise ConfigError(f"{path}: unknown arch {name!r}; registered: {', '.join(model_names())}")
    c, k, s = (int(settings[key]) for key in _SETTINGS[1:])
    wrapper = meta.get("wrapper", "none")
    backbone_classes = int(meta.get("backbone_classes", k))
    if wrapper not in ("none", "features", "surrogate-encoder"):
        raise ConfigError(f"{path}: unknown wrapper {wrapper!r}; it was written by another version")
    try:
        net = build_model(name, in_channels=c, num_classes=backbone_classes, image_size=s)
        model: nn.Module = net
        if wrapper == "features":
            model = FeatureEncoder(net)
        elif wrapper == "surrogate-encoder":
            model = SurrogateEncoder(net, (c, s, s), k)
    except (RuntimeError, ValueError) as e:  # e.g. a kernel larger than the image
        raise ConfigError(
            f"arch {name!r} cannot be built for {c} x {s} x {s} images ({e}); give the arch "
            "the file was trained with"
        ) from None
    try:
        model.load_state_dict(load_file(str(path)))
    except (RuntimeError, SafetensorError) as e:
        first = str(e).strip().splitlines()
        raise ConfigError(
            f"the weights in {path} do not fit arch {name!r} with {c} channel(s), {k} outputs and "
            f"{s}x{s} images ({first[-1].strip() if first else type(e).__name__}); give the arch "
            "and settings the file was trained with"
        ) from None
    return model.eval()
