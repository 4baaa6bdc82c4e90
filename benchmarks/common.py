"""What the benchmarks share: their configs run through stealkit's own runner, where results go,
and machine facts to record with them.

A benchmark is a folder of configs (``benchmarks/<name>/*.yaml``, each runnable by itself with
``stealkit run``) plus a short script that runs them with ``run_configs`` and turns their
``results.json`` into the Markdown, JSON and plots under ``docs/results/``. Runs resume: a
cut-off benchmark re-run buys only the runs it had not finished.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from stealkit.experiments.config import load_config
from stealkit.experiments.runner import Experiment

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"
RUNS = ROOT / "runs" / "benchmarks"


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "processor": platform.processor() or platform.machine(),
    }


def save_json(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(data, indent=2))
    return path


def configs(bench: str) -> list[Path]:
    """The configs of benchmark ``bench`` (``benchmarks/<bench>/*.yaml``), in name order."""
    return sorted((ROOT / "benchmarks" / bench).glob("*.yaml"))


def add_run_arguments(ap: argparse.ArgumentParser, bench: str) -> None:
    names = [p.stem for p in configs(bench)]
    ap.add_argument(
        "--only", nargs="*", choices=names, help=f"run only these configs (of {', '.join(names)})"
    )
    ap.add_argument("--no-run", action="store_true", help="only rebuild the docs from the runs")
    ap.add_argument("--out", type=Path, default=RUNS, help=f"runs folder (default {RUNS})")
    ap.add_argument("--seeds", nargs="*", type=int, help="override every grid block's seeds")
    ap.add_argument("--budgets", nargs="*", type=int, help="override every grid block's budgets")
    ap.add_argument("--attacks", nargs="*", help="run only these attacks of the grids")


def run_configs(
    paths: Iterable[Path],
    out: Path,
    *,
    seeds: list[int] | None = None,
    budgets: list[int] | None = None,
    attacks: list[str] | None = None,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Run each config through the runner into ``out/<config name>/``; its results by name.

    ``seeds``/``budgets`` replace those of every grid block (a quick look, or more seeds) and
    ``attacks`` keeps only those attacks; the runs land in the same folder and resume like any
    other (the grid is not part of an experiment's hash).
    """
    done: dict[str, dict[str, Any]] = {}
    for path in paths:
        raw = load_config(path, check=False).model_dump(mode="json")
        grid = []
        for g in raw["grid"]:
            keep = [a for a in g["attacks"] if attacks is None or a in attacks]
            if keep:
                grid.append({**g, "attacks": keep})
                if seeds:
                    grid[-1]["seeds"] = seeds
                if budgets:
                    grid[-1]["budgets"] = budgets
        if not grid:
            continue
        cfg = load_config(path, overrides={"grid": grid})
        done[cfg.name] = Experiment(cfg, out / cfg.name, progress=progress).run()
    return done


def read_results(out: Path, names: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The results.json of each named experiment under ``out`` that exists."""
    found = {}
    for name in names:
        path = out / name / "results.json"
        if path.is_file():
            found[name] = json.loads(path.read_text())
    return found


def ok_runs(results: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in results.get("runs", []) if r.get("status") == "ok"]
