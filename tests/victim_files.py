"""Victim files the tests make from the real MNIST CNN (as a user would bring them)."""

from __future__ import annotations

from pathlib import Path


def digit_recognizer_onnx(tmp_path: Path) -> Path:
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
