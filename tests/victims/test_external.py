"""Bring-your-own victims: ONNX files run by onnxruntime, and Python ``module:function`` targets."""

from __future__ import annotations

import sys
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from stealkit.errors import ConfigError
from stealkit.oracle import InputSpec, LocalOracle
from stealkit.victims import load_onnx, load_python, load_victim

SPEC = {"channels": 1, "height": 8, "width": 8}


def tiny_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 5)
    ).eval()


def export(
    model: nn.Module, path: Path, example: torch.Tensor, *, dynamic_batch: bool = True
) -> Path:
    """Export with the TorchScript-based exporter, which needs no onnxscript."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            dynamo=False,
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "n"}, "y": {0: "n"}} if dynamic_batch else None,
        )
    return path


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    net = tiny_net()
    return net, export(net, tmp_path_factory.mktemp("onnx") / "tiny.onnx", torch.rand(2, 1, 8, 8))


def test_onnx_victim_matches_torch(onnx_file: tuple[nn.Module, Path]) -> None:
    net, path = onnx_file
    v = load_victim("onnx", path=str(path), spec=SPEC)
    assert v.kind == "classifier" and v.spec == InputSpec(1, 8, 8) and v.meta["output_dim"] == 5
    x = torch.rand(7, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(v.model(x), net(x), rtol=0, atol=1e-5)
        # and as a black box behind an oracle
        probs = LocalOracle(v.model, v.spec, output="probabilities").query(x).values
        torch.testing.assert_close(probs, net(x).softmax(1), rtol=0, atol=1e-5)


def test_onnx_victim_applies_the_spec_normalisation(onnx_file: tuple[nn.Module, Path]) -> None:
    net, path = onnx_file
    v = load_onnx(path, {**SPEC, "mean": [0.5], "std": [0.25]}, kind="encoder")
    x = torch.rand(3, 1, 8, 8)
    assert v.kind == "encoder"
    with torch.no_grad():
        torch.testing.assert_close(v.model(x), net((x - 0.5) / 0.25), rtol=0, atol=1e-5)


def test_onnx_with_a_static_batch_runs_in_padded_chunks(tmp_path: Path) -> None:
    net = tiny_net()
    path = export(net, tmp_path / "static.onnx", torch.rand(2, 1, 8, 8), dynamic_batch=False)
    v = load_onnx(path, InputSpec(1, 8, 8))
    x = torch.rand(5, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(v.model(x), net(x), rtol=0, atol=1e-5)


def test_onnx_errors_name_the_problem(onnx_file: tuple[nn.Module, Path], tmp_path: Path) -> None:
    _, path = onnx_file
    with pytest.raises(ConfigError, match="does not exist"):
        load_onnx(tmp_path / "missing.onnx", SPEC)
    with pytest.raises(ConfigError, match=r"dim 1 is 1, spec says 3"):
        load_onnx(path, {**SPEC, "channels": 3})
    with pytest.raises(ConfigError, match=r"dim 2 is 8, spec says 28.*dim 3 is 8, spec says 28"):
        load_onnx(path, {**SPEC, "height": 28, "width": 28})
    flat = export(nn.Linear(64, 3).eval(), tmp_path / "flat.onnx", torch.rand(2, 64))
    with pytest.raises(ConfigError, match="rank-2 input"):
        load_onnx(flat, SPEC)
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not an onnx model")
    with pytest.raises(ConfigError, match="onnxruntime cannot load"):
        load_onnx(junk, SPEC)
    with pytest.raises(ConfigError, match="kind must be one of"):
        load_onnx(path, SPEC, kind="regressor")
    with pytest.raises(ConfigError, match=r"missing \['height', 'width'\], unknown \['heigth'\]"):
        load_onnx(path, {"channels": 1, "heigth": 8})
    with pytest.raises(ConfigError, match="channels must be 1 or 3"):
        load_onnx(path, {**SPEC, "channels": 2})


HELPER = """
import torch

def make_net(width=4):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, width))

def not_a_module():
    return "a string"

NOT_CALLABLE = 3
"""


@pytest.fixture
def helper_module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """A throwaway importable module holding builder functions; returns its name."""
    name = f"victim_helper_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(HELPER)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_python_target_builds_the_victim(helper_module: str) -> None:
    v = load_victim(
        "python", target=f"{helper_module}:make_net", spec=SPEC, kind="encoder", width=6
    )
    assert v.kind == "encoder" and v.name == f"python:{helper_module}:make_net"
    assert v.meta["kwargs"] == {"width": 6}
    x = torch.rand(2, 1, 8, 8)
    expected = sys.modules[helper_module].make_net(6)(x)
    torch.testing.assert_close(v.model(x), expected)
    assert not v.model.training


def test_python_target_errors_name_the_problem(helper_module: str) -> None:
    with pytest.raises(ConfigError, match="must look like 'package.module:function'"):
        load_python(helper_module, SPEC)
    with pytest.raises(ConfigError, match="must look like"):
        load_python(f"{helper_module}:", SPEC)
    with pytest.raises(ConfigError, match="cannot import module 'no_such_module_xyz'.*PYTHONPATH"):
        load_python("no_such_module_xyz:f", SPEC)
    with pytest.raises(ConfigError, match=f"module '{helper_module}' has no function 'missing'"):
        load_python(f"{helper_module}:missing", SPEC)
    with pytest.raises(ConfigError, match="has no function 'NOT_CALLABLE'"):
        load_python(f"{helper_module}:NOT_CALLABLE", SPEC)
    with pytest.raises(ConfigError, match="returned a str, not a torch.nn.Module"):
        load_python(f"{helper_module}:not_a_module", SPEC)
    with pytest.raises(ConfigError, match=r"cannot be called with \['depth'\]"):
        load_python(f"{helper_module}:make_net", SPEC, depth=3)
    with pytest.raises(ConfigError, match="missing a required argument: 'spec'"):
        load_victim("python", target=f"{helper_module}:make_net")
