"""Every config the project ships parses, and names only registered things."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from stealkit.errors import ConfigError
from stealkit.experiments.config import load_config
from stealkit.experiments.runner import expand_grid

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))


def _digit_recognizer_onnx(tmp_path: Path) -> Path:
    """The real MNIST CNN without its normalisation (the config's spec applies it), as ONNX."""
    import warnings

    import torch

    from stealkit.victims import load_victim

    net = load_victim("digit-recognizer").model[1]
    path = tmp_path / "my_model.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net,
            (torch.rand(2, 1, 28, 28),),
            str(path),
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "n"}},
        )
    return path


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_is_valid(path: Path, tmp_path: Path) -> None:
    overrides = None
    raw = yaml.safe_load(path.read_text())
    if raw["victim"]["name"] == "onnx":  # a template: it names the user's file
        with pytest.raises(ConfigError, match="my_model.onnx does not exist"):
            load_config(path)
        params = {**raw["victim"]["params"], "path": str(_digit_recognizer_onnx(tmp_path))}
        overrides = {"victim": {**raw["victim"], "params": params}}
    cfg = load_config(path, overrides=overrides)
    assert cfg.name == path.stem
    assert expand_grid(cfg)


def test_default_grid_covers_what_the_readme_promises() -> None:
    runs = expand_grid(load_config(None))
    assert {r.attack for r in runs} == {"knockoff-random", "knockoff-adaptive", "copycat"}
    assert {r.budget for r in runs} == {1000, 5000, 20000}
    assert {r.defense for r in runs} == {"none", "top1", "round1", "reverse-sigmoid"}
    assert any(
        r.attack == "knockoff-random" and r.defense == "none" and r.budget == 20000 for r in runs
    )
