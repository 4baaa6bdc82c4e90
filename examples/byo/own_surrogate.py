"""Your own surrogate architecture: register a builder, then name it in a config.

    python examples/byo/own_surrogate.py [--budget 1000]

A builder takes ``(in_channels, num_classes, image_size)`` and returns an ``nn.Module`` that maps
images of that size to ``num_classes`` logits. Registered names work in ``surrogate: {arch: ...}``
of any config run from Python; `stealkit list models` shows the built-in ones.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from torch import nn

from stealkit.experiments.config import parse_config
from stealkit.experiments.runner import Experiment
from stealkit.models import model_names, register_model


def tiny_mlp(in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    d = in_channels * image_size * image_size
    return nn.Sequential(nn.Flatten(), nn.Linear(d, 256), nn.ReLU(), nn.Linear(256, num_classes))


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--eval-limit", type=int, default=None)
    ap.add_argument("--out", type=Path, default=Path("runs/byo-surrogate"))
    args = ap.parse_args(argv)
    if "tiny-mlp" not in model_names():
        register_model("tiny-mlp", tiny_mlp, description="Flatten, 256 ReLU units, linear head")
    cfg = parse_config(
        {
            "name": "byo-surrogate",
            "victim": {"name": "digit-recognizer", "output": "probabilities"},
            "pool": {"dataset": "fashion-mnist", "split": "train", "limit": 5000},
            "eval": {"dataset": "mnist-5k", "split": "test", "limit": args.eval_limit},
            "surrogate": {"arch": "tiny-mlp"},
            "grid": [{"attacks": ["knockoff-random"], "budgets": [args.budget]}],
        }
    )
    results = Experiment(cfg, args.out, progress=False).run()
    print(f"report: {args.out / 'report.html'}")
    return results


if __name__ == "__main__":
    main()
