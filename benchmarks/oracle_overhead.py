"""How much the oracle boundary costs: a bare forward of the real MNIST victim against the same
forward through LocalOracle + Ledger (+ a defence), on batches of 256.

    python -m benchmarks.oracle_overhead [--repeats 300]

Writes docs/results/oracle_overhead.md and .json. Each round calls every path once, in a fresh random order, so that
drift in the machine's speed hits all of them alike; medians are reported.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch

from benchmarks.common import RESULTS, machine, save_json
from stealkit.data import load_dataset, to_spec
from stealkit.defenses import DefendedOracle, ReverseSigmoid, TopK
from stealkit.oracle import Ledger, LocalOracle
from stealkit.victims.registry import load_victim


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--repeats", type=int, default=300)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()

    victim = load_victim("digit-recognizer")
    model = victim.model.eval()
    x = to_spec(load_dataset("fashion-mnist", "test").images(slice(0, args.batch)), victim.spec)

    def bare(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return model(x).softmax(dim=1)

    n = args.repeats * args.batch
    paths: dict[str, Callable[[torch.Tensor], object]] = {
        "bare forward + softmax": bare,
        "oracle (probabilities) + ledger": LocalOracle(
            model, victim.spec, ledger=Ledger(budget=n)
        ).query,
        "oracle + ledger + top-1": DefendedOracle(
            LocalOracle(model, victim.spec, ledger=Ledger(budget=n)), TopK(k=1)
        ).query,
        "oracle + ledger + reverse sigmoid": DefendedOracle(
            LocalOracle(model, victim.spec, ledger=Ledger(budget=n)), ReverseSigmoid()
        ).query,
    }
    times: dict[str, list[float]] = {k: [] for k in paths}
    names = list(paths)
    order = torch.Generator().manual_seed(0)
    for r in range(args.repeats):
        # a fresh random order each round, so no path always runs first or after another
        for i in torch.randperm(len(names), generator=order).tolist():
            k = names[i]
            t = time.perf_counter()
            paths[k](x)
            if r >= 20:  # the first rounds warm up
                times[k].append(time.perf_counter() - t)
    base = statistics.median(times["bare forward + softmax"])
    rows = []
    for k, ts in times.items():
        med = statistics.median(ts)
        rows.append({"path": k, "median_ms": med * 1e3, "overhead_pct": 100 * (med / base - 1)})
    data = {"batch": args.batch, "repeats": args.repeats, "machine": machine(), "rows": rows}
    save_json("oracle_overhead.json", data)
    lines = [
        "# Oracle overhead",
        "",
        f"`python -m benchmarks.oracle_overhead` — real MNIST CNN, batches of {args.batch}, "
        f"{args.repeats} rounds in shuffled order, median times; {data['machine']['cpus']} CPUs, torch {data['machine']['torch']}.",
        "",
        "| path | median ms | overhead vs bare |",
        "|---|---:|---:|",
    ]
    lines += [f"| {r['path']} | {r['median_ms']:.3f} | {r['overhead_pct']:+.1f}% |" for r in rows]
    lines += [
        "",
        "Target (issue 2): the oracle + ledger + defence path adds at most 5% to a bare forward.",
    ]
    (RESULTS / "oracle_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
