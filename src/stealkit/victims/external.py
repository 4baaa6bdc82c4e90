"""Bring-your-own victims: an ONNX file, or a Python function that returns a torch module.

    load_onnx("model.onnx", {"channels": 3, "height": 32, "width": 32})
    load_python("my_models.zoo:resnet", spec, kind="encoder", depth=18)

The spec says what images the victim takes; a ``mean``/``std`` in it is applied in front of the
model, so queries stay in the spec's value range like every other victim's.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
import inspect
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from stealkit.errors import ConfigError
from stealkit.oracle.spec import InputSpec, with_preprocessing
from stealkit.victims.base import KINDS, Victim, probe_output_dim

_SPEC_KEYS = {f.name for f in dataclasses.fields(InputSpec)}


def as_spec(spec: InputSpec | Mapping[str, Any]) -> InputSpec:
    """An InputSpec, or a dict like ``{"channels": 1, "height": 28, "width": 28}`` made into one."""
    if isinstance(spec, InputSpec):
        return spec
    if not isinstance(spec, Mapping):
        raise ConfigError(
            f"the input spec must be a dict or an InputSpec, got {type(spec).__name__}"
        )
    unknown = set(spec) - _SPEC_KEYS
    missing = {"channels", "height", "width"} - set(spec)
    if unknown or missing:
        raise ConfigError(
            f"bad input spec {dict(spec)}: missing {sorted(missing)}, unknown {sorted(unknown)}; "
            "give channels, height, width and optionally value_range, mean, std"
        )
    try:
        return InputSpec.from_dict(dict(spec))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"bad input spec {dict(spec)}: {e}") from e


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ConfigError(f"kind must be one of {KINDS}, got {kind!r} (check its spelling)")


class OnnxModel(nn.Module):
    """Runs an ONNX graph with onnxruntime on the CPU, as a torch module (no gradients).

    A graph with a static batch size ``b`` is run on chunks of ``b`` inputs, the last one padded.
    """

    def __init__(self, path: Path) -> None:
        super().__init__()
        import onnxruntime as ort

        self.path = path
        try:
            self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own untyped errors for bad files
            raise ConfigError(f"onnxruntime cannot load {path}: {e}") from e
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ConfigError(
                f"{path} has {len(inputs)} inputs; an ONNX victim must take one image batch"
            )
        self.input_name: str = inputs[0].name
        self.input_shape: list[int | str | None] = list(inputs[0].shape)
        self.input_type: str = inputs[0].type
        b = self.input_shape[0] if self.input_shape else None
        self.static_batch: int | None = b if isinstance(b, int) and b > 0 else None

    def _run(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.session.run(None, {self.input_name: x})[0])

    def forward(self, x: Tensor) -> Tensor:
        arr = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        b = self.static_batch
        if b is None or len(arr) == b:
            out = self._run(arr)
        else:
            chunks = []
            for i in range(0, len(arr), b):
                part = arr[i : i + b]
                pad = np.zeros((b - len(part), *arr.shape[1:]), dtype=np.float32)
                chunks.append(self._run(np.concatenate([part, pad]))[: len(part)])
            out = np.concatenate(chunks)
        return torch.from_numpy(out).to(x.device)

    def extra_repr(self) -> str:
        return f"path={str(self.path)!r}, input={self.input_name}{self.input_shape}"


def load_onnx(
    path: str | Path, spec: InputSpec | Mapping[str, Any], kind: str = "classifier"
) -> Victim:
    """A victim served from an ONNX file through onnxruntime's CPU provider.

    Args:
        path: the ``.onnx`` file; its graph takes one float (N, C, H, W) batch and returns
            (N, classes) logits or (N, D) embeddings as its first output.
        spec: the input the graph expects (an InputSpec or its dict); static dims must agree.
        kind: "classifier" or "encoder".
    """
    _check_kind(kind)
    spec = as_spec(spec)
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"ONNX file {path} does not exist; give the path of an exported .onnx model"
        )
    net = OnnxModel(path)
    shape = net.input_shape
    if len(shape) != 4:
        raise ConfigError(
            f"{path} takes a rank-{len(shape)} input {shape}; a victim takes (N, C, H, W) images"
        )
    static = [
        (i, d, s)
        for i, (d, s) in enumerate(zip(shape[1:], spec.shape, strict=True), 1)
        if isinstance(d, int)
    ]
    bad = [f"dim {i} is {d}, spec says {s}" for i, d, s in static if d != s]
    if bad:
        want = ", ".join(map(str, spec.shape))
        raise ConfigError(
            f"{path} input {shape} does not match the spec (N, {want}): {'; '.join(bad)}"
        )
    if net.input_type != "tensor(float)":
        raise ConfigError(
            f"{path} takes {net.input_type}; stealkit feeds float32 images (tensor(float))"
        )
    try:
        out = net(torch.zeros(net.static_batch or 1, *spec.shape))
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own untyped errors
        raise ConfigError(
            f"{path} fails on an input of the spec's shape (N, {', '.join(map(str, spec.shape))}):"
            f" {type(e).__name__}: {str(e).strip()[:400]}; its dynamic dimensions must take the "
            "spec's channels, height and width: fix the spec"
        ) from None
    if out.dim() != 2:
        raise ConfigError(
            f"{path} returns shape {tuple(out.shape)}; a victim must return (N, classes) or (N, D)"
        )
    return Victim(
        name=f"onnx:{path.stem}",
        model=with_preprocessing(net, spec).eval(),
        spec=spec,
        kind=kind,
        meta={"source": str(path), "format": "onnx", "output_dim": int(out.shape[1])},
    )


def load_python(
    target: str,
    spec: InputSpec | Mapping[str, Any],
    kind: str = "classifier",
    returns: str = "logits",
    **kwargs: Any,
) -> Victim:
    """A victim built by your own code: ``function(**kwargs)`` returns an ``nn.Module`` taking
    (N, C, H, W) images of ``spec`` in its value range (the spec's mean/std applied first).

    Args:
        target: where the builder lives: ``"package.module:function"`` (importable: installed,
            or its folder on PYTHONPATH) or ``"path/to/file.py:function"`` (a file, relative to
            the current folder).
        spec: the input the module expects (an InputSpec or its dict).
        kind: "classifier" or "encoder".
        returns: what a classifier's module gives: "logits" (the default; the oracle applies
            softmax itself) or "probabilities" (a module ending in softmax; stealkit takes their
            log, so answers are not softmaxed twice).
        **kwargs: passed to the function.
    """
    _check_kind(kind)
    spec = as_spec(spec)
    if returns not in ("logits", "probabilities"):
        raise ConfigError(f"returns must be 'logits' or 'probabilities', got {returns!r}")
    if not isinstance(target, str) or target.count(":") != 1 or not all(target.split(":")):
        raise ConfigError(
            f"python target {target!r} must look like 'package.module:function' or "
            "'path/to/file.py:function'"
        )
    module_name, func_name = target.split(":")
    module = _import(module_name, target)
    func = getattr(module, func_name, None)
    if func is None or not callable(func):
        raise ConfigError(
            f"module {module_name!r} has no function {func_name!r} (target {target!r})"
        )
    try:
        inspect.signature(func).bind(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{target} cannot be called with {sorted(kwargs)}: {e}") from e
    except ValueError:  # no signature to check (some builtins); let the call decide
        pass
    model = func(**kwargs)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{target} returned a {type(model).__name__}, not a torch.nn.Module")
    probe_output_dim(model, spec, target)
    if kind == "classifier":
        if returns == "probabilities":
            model = nn.Sequential(model, _LogOf())
        elif _gives_distributions(model, spec):
            raise ConfigError(
                f"{target} answers rows that are already probabilities (non-negative, summing to "
                "1): the oracle would apply softmax to them a second time. Return logits (drop "
                "the final softmax), or set victim.params.returns: probabilities"
            )
    return Victim(
        name=f"python:{target}",
        model=with_preprocessing(model, spec).eval(),
        spec=spec,
        kind=kind,
        meta={"source": target, "format": "python", **({"kwargs": kwargs} if kwargs else {})},
    )


def _import(module_name: str, target: str) -> Any:
    """The module of a python target: a file path ending in .py, or an importable name."""
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"python target {target!r}: no file {path} (relative to {Path.cwd()}); give the "
                "path of the .py file that defines the function"
            )
        spec = importlib.util.spec_from_file_location(f"stealkit_user_{path.stem}", path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"python target {target!r}: {path} cannot be imported")
        module = importlib.util.module_from_spec(spec)
        try:
            spec.loader.exec_module(module)
        except Exception as e:  # noqa: BLE001 - the user's file failed: say where
            raise ConfigError(f"python target {target!r}: {path} failed to import: {e!r}") from e
        return module
    try:
        return importlib.import_module(module_name)
    except ImportError as e:
        raise ConfigError(
            f"cannot import module {module_name!r} for target {target!r} ({e}); install it, put "
            "its folder on PYTHONPATH, or give a file: 'path/to/file.py:function'"
        ) from e


class _LogOf(nn.Module):
    """log(p): logits whose softmax is the module's own probabilities."""

    def forward(self, p: Tensor) -> Tensor:
        return p.clamp_min(1e-12).log()


def _gives_distributions(model: nn.Module, spec: InputSpec) -> bool:
    """Whether a classifier answers probability rows (after a softmax) rather than logits."""
    g = torch.Generator().manual_seed(0)
    lo, hi = spec.value_range
    x = lo + (hi - lo) * torch.rand((4, *spec.shape), generator=g)
    with torch.inference_mode():
        out = with_preprocessing(model, spec).eval()(x)
    return bool(
        (out >= 0).all() and torch.allclose(out.sum(1), torch.ones(len(out)), atol=1e-4)
    )
