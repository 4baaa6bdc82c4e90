"""What `executor: ray` costs per run on a local Ray instance, against the local executor.

    python -m benchmarks.ray_overhead [--runs 8]

One grid of short Knockoff runs (the real MNIST CNN, sklearn digits as pool, 200 queries each,
seeds 0..N-1) through the same runner three times: the local executor; Ray with one run at a
time (``cpus_per_run`` = all CPUs), which measures the overhead; Ray with one CPU per run, which
runs as many at once as there are CPUs. Each run's record is compared with the local one (equal
metrics at the same seed and thread count). Writes docs/results/ray_overhead.md and .json.
"""

from __future__ import annotations

import argparse
import copy
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import RESULTS, machine, save_json
from stealkit.experiments.config import parse_config
from stealkit.experiments.runner import Experiment

RECIPE = {"epochs": 2, "min_steps": 40}


def grid(n: int, executor: Any) -> dict[str, Any]:
    return {
        "name": "ray-overhead",
        "victim": {"name": "digit-recognizer", "output": "probabilities"},
        "pool": {"dataset": "digits", "split": "train"},
        "eval": {"dataset": "mnist-5k", "split": "all", "limit": 1000},
        "surrogate": {"arch": "cnn2-small"},
        "attacks": {
            "kr": {
                "type": "knockoff",
                "params": {"strategy": "random", "online_steps": 0, "recipe": RECIPE},
            }
        },
        "grid": [{"attacks": ["kr"], "budgets": [200], "seeds": list(range(n))}],
        "executor": executor,
    }


def timed(data: dict[str, Any], out: Path) -> tuple[float, dict[str, Any]]:
    t = time.perf_counter()
    results = Experiment(parse_config(copy.deepcopy(data)), out, progress=False).run()
    return time.perf_counter() - t, results


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--runs", type=int, default=8)
    args = ap.parse_args()
    cpus = os.cpu_count() or 1
    threads = torch.get_num_threads()
    n = args.runs
    rows: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = {
            "local": "local",
            f"ray, {threads} CPUs per run (one at a time)": {
                "kind": "ray",
                "cpus_per_run": threads,
            },
            f"ray, 1 CPU per run ({cpus} at a time)": {"kind": "ray", "cpus_per_run": 1},
        }
        local_runs: dict[Any, Any] = {}
        for i, (name, executor) in enumerate(settings.items()):
            wall, res = timed(grid(n, executor), Path(tmp) / str(i))
            runs = {r["seed"]: r for r in res["runs"]}
            if name == "local":
                local_runs = runs
            same = sum(runs[s]["metrics"] == local_runs[s]["metrics"] for s in runs)
            rows[name] = {
                "wall_seconds": wall,
                "runs": len(runs),
                "mean_run_seconds": sum(r["wall_seconds"] for r in runs.values()) / len(runs),
                "equal_to_local": same,
                "threads_per_run": runs[0]["threads"],
            }
            print(f"{name}: {wall:.1f} s for {len(runs)} runs, {same} equal to local", flush=True)
    base = rows["local"]["wall_seconds"]
    for r in rows.values():
        r["overhead_per_run_seconds"] = (r["wall_seconds"] - base) / n
    data = {"machine": machine(), "runs": n, "settings": rows}
    save_json("ray_overhead.json", data)
    lines = [
        "# Ray executor overhead",
        "",
        f"`python -m benchmarks.ray_overhead --runs {n}`: a grid of {n} Knockoff runs (real MNIST "
        "CNN, digits pool, 200 queries, cnn2-small surrogate, 1,000 evaluation digits), run by the "
        f"same runner with each executor; {cpus} CPUs, torch {torch.__version__}. Wall time is the "
        "whole `Experiment.run()`, so Ray's includes starting and stopping a local instance.",
        "",
        "| executor | wall s | runs | mean run s | overhead per run s | torch threads per run | "
        "records equal to local |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        lines.append(
            f"| {name} | {r['wall_seconds']:.1f} | {r['runs']} | {r['mean_run_seconds']:.2f} | "
            f"{r['overhead_per_run_seconds']:+.2f} | {r['threads_per_run']} | "
            f"{r['equal_to_local']} of {r['runs']} |"
        )
    lines += [
        "",
        "Overhead per run = (wall time - the local executor's) / runs. A run's metrics repeat "
        "exactly at the same seed and the same number of torch threads; with fewer threads per "
        "run the floating-point sums differ, so the records equal to local count only runs made "
        "with the local executor's thread count.",
    ]
    (RESULTS / "ray_overhead.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
