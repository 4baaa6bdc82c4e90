"""Data-free stealing (MEGA, DaST, DFME) and transfer attacks from the stolen models: the docs.

    python -m benchmarks.data_free [--only CONFIG ...] [--no-run] [--seeds ...] [--budgets ...]
                                   [--out DIR] [--docs DIR]

The measurements are the configs in benchmarks/data_free/, one per victim and answer kind
(``<victim>-<output>.yaml``; each header says what it measures and how to run it alone). This
script runs them through stealkit's runner into ``--out`` (unless --no-run; finished runs are
skipped and buy nothing), then turns every results.json there into ``--docs``/data_free.md
(accuracy / agreement read from each run's convergence curve at 50k, 100k, 200k and 400k queries
and at any --budgets, the best point, mean ± sd over seeds, transfer success at each eps against
the baseline), data_free.json (compact records) and data_free.png (the curves). Where an attack
and seed ran at several budgets, the largest is shown.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks.common import (
    RESULTS,
    add_run_arguments,
    configs,
    machine,
    ok_runs,
    read_results,
    run_configs,
)
from stealkit.experiments.config import load_config

BENCH = "data_free"
READ_AT = (50_000, 100_000, 200_000, 400_000)
VICTIM_ORDER = ("mnist", "fashion")  # the docs' order; other victims follow
Row = dict[str, Any]


def collect(results: dict[str, dict[str, Any]], victims: dict[str, str]) -> dict[str, Any]:
    """Compact records of every ok run (per attack and seed, the largest budget), by victim.

    ``victims`` maps each experiment name to its victim (the config's stem up to its first dash).
    """
    out: dict[str, Any] = {"machine": machine(), "victims": {}, "runs": []}
    best_of: dict[tuple[str, str, int], Row] = {}
    rank: dict[tuple[str, str, int], tuple[str, int]] = {}  # config, then its planned order
    for name, res in results.items():
        v, cfg = victims[name], res["config"]
        if v not in out["victims"] and res.get("victim"):
            fact = res["victim"]
            base = res.get("transfer_baseline")
            if base is not None:
                base = base | {"data": _part(cfg["transfer"]["baseline"])}
            out["victims"][v] = {
                "repr": fact["repr"],
                "accuracy": fact["test_accuracy"],
                "eval": _part(cfg["eval"]),
                "eval_size": fact["eval_size"],
                "transfer": {k: cfg["transfer"][k] for k in ("eps", "steps", "step_size")},
                "baseline": base,
            }
        order = {(p["attack"], p["seed"]): i for i, p in enumerate(res.get("planned", []))}
        for r in ok_runs(res):
            curve = r["curve"] or []
            best = max(curve, key=lambda p: p["accuracy"] or 0.0) if curve else None
            row = {
                "victim": v,
                "experiment": name,
                "attack": r["attack"],
                "seed": r["seed"],
                "budget": r["budget"],
                "output": cfg["victim"]["output"],
                "attack_repr": r["attack_repr"],
                "threads": r["threads"],
                "wall_seconds": r["wall_seconds"],
                "metrics": r["metrics"],
                "curve_every": cfg["curve_every"],
                "curve": curve,
                "best": best,
                "label_histogram": r["info"].get("label_histogram"),
                "transfer": r["transfer"] or [],
            }
            key = (v, r["attack"], r["seed"])
            if key not in best_of or row["budget"] > best_of[key]["budget"]:
                best_of[key] = row
                rank[key] = (name, order.get((r["attack"], r["seed"]), len(order)))
    out["runs"] = [best_of[k] for k in sorted(best_of, key=rank.__getitem__)]
    out["wall_seconds"] = sum(res.get("wall_seconds", 0.0) for res in results.values())
    return out


def _part(d: dict[str, Any]) -> str:
    """A config data section as text: ``fashion-mnist test[5000:]``."""
    cut = f"[{d['start']}:{d['stop'] or ''}]" if d["start"] or d["stop"] is not None else ""
    return f"{d['dataset']} {d['split']}{cut}"


def _label(r: Row) -> str:
    return r["attack"] + (f"/seed{r['seed']}" if r["seed"] else "")


def at(r: Row, q: int) -> dict[str, Any] | None:
    """The curve point of checkpoint ``q`` (the first round at or past it), if the run had one:
    checkpoints are every ``curve_every`` queries and the budget."""
    every = r["curve_every"] or r["budget"]
    if q > r["budget"] or (q % every and q != r["budget"]):
        return None
    return next((p for p in r["curve"] if p["queries"] >= q), None)


def _cell(p: dict[str, Any] | None) -> str:
    return "—" if p is None else f"{p['accuracy']:.3f} / {p['agreement']:.3f}"


def _spread(vals: list[float]) -> str:
    if not vals:
        return "—"
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    each = ", ".join(f"{v:.3f}" for v in vals)
    return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f} ({each})"


def _k(q: float) -> str:
    return f"{q / 1000:g}k" if q >= 1000 else f"{q:.0f}"


def curve_table(rows: list[Row], read_at: list[int]) -> list[str]:
    lines = [
        "Cells are **accuracy / agreement** of the stolen model after that many queries.",
        "",
        "| attack | API answers | "
        + " | ".join(_k(q) for q in read_at)
        + " | best accuracy (at queries) | wall time |",
        "|---|---|" + "---:|" * (len(read_at) + 2),
    ]
    for r in rows:
        b = r["best"]
        best = "—" if b is None else f"{b['accuracy']:.3f} ({b['queries'] / 1000:.0f}k)"
        lines.append(
            f"| {_label(r)} | {r['output']} | "
            + " | ".join(_cell(at(r, q)) for q in read_at)
            + f" | {best} | {r['wall_seconds'] / 60:.1f} min |"
        )
    return lines


def seed_summary(rows: list[Row], read_at: list[int]) -> list[str]:
    """Mean and spread over seeds, for each attack run with more than one seed."""
    by_attack: dict[str, list[Row]] = {}
    for r in rows:
        by_attack.setdefault(r["attack"], []).append(r)
    lines: list[str] = []
    for name, rs in by_attack.items():
        if len(rs) < 2:
            continue
        if not lines:
            lines += [
                "",
                "Over seeds (accuracy: mean ± standard deviation, then the seeds' values in seed "
                "order; a budget counts only seeds that reached it):",
                "",
                "| attack | seeds | " + " | ".join(_k(q) for q in read_at) + " | best |",
                "|---|---|" + "---|" * (len(read_at) + 1),
            ]
        rs = sorted(rs, key=lambda r: r["seed"])
        cells = [_spread([p["accuracy"] for r in rs if (p := at(r, q))]) for q in read_at]
        best = _spread([r["best"]["accuracy"] for r in rs if r["best"]])
        seeds = ", ".join(str(r["seed"]) for r in rs)
        lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + f" | {best} |")
    return lines


def transfer_table(rows: list[Row], v: dict[str, Any]) -> list[str]:
    sources = [(_label(r), r["transfer"]) for r in rows if r["transfer"]]
    b = v["baseline"]
    if b:
        m = b.get("metrics") or {}
        judged = (
            f"acc {m['accuracy']:.3f}, agreement {m['agreement']:.3f} on the evaluation set"
            if m.get("accuracy") is not None
            else f"acc {b['accuracy_on_transfer_set']:.3f} on the transfer images"
        )
        name = f"baseline ({b['arch']}, {b['epochs']} epochs on {b['data']}, {judged})"
        sources.append((name, b["transfer"]))
    if not sources:
        return []
    t = v["transfer"]
    step = f"{t['step_size']}" if t["step_size"] is not None else f"2.5 eps / {t['steps']}"
    n = sources[0][1][0]["n"]
    lines = [
        "",
        f"Transfer attacks (L-inf; BIM/PGD {t['steps']} steps of {step}): success on the victim "
        f"over {n} test images it classifies correctly; in brackets, white-box success on the "
        "source model.",
        "",
        "| source model | eps | FGSM | BIM | PGD | FGSM targeted | BIM targeted | PGD targeted |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, found in sources:
        for eps in t["eps"]:
            cells = {(c["method"], c["targeted"]): c for c in found if c["eps"] == eps}
            text = [
                f"{c['success']:.3f} ({c['white_box_success']:.2f})"
                if (c := cells.get((m, tg)))
                else "—"
                for tg in (False, True)
                for m in ("fgsm", "bim", "pgd")
            ]
            lines.append(f"| {name} | {eps} | " + " | ".join(text) + " |")
    return lines


def markdown(data: dict[str, Any], read_at: list[int]) -> str:
    threads = sorted({r["threads"] for r in data["runs"]}, key=str)
    lines = [
        "# Data-free stealing and transfer attacks",
        "",
        "`python -m benchmarks.data_free` runs the configs of `benchmarks/data_free/` (their "
        "headers give the protocol). Surrogate: lenet5; seed 0 unless a row names another; "
        f"torch threads per run: {', '.join(map(str, threads)) or '—'}; written on: "
        f"{data['machine']}.",
        "",
    ]
    for vname, v in data["victims"].items():
        rows = [r for r in data["runs"] if r["victim"] == vname]
        lines += [
            f"## Victim: {vname}",
            "",
            f"`{v['repr']}`: accuracy {v['accuracy']:.4f} on its judge set, {v['eval']} "
            f"({v['eval_size']} images, never queried).",
            "",
        ]
        lines += curve_table(rows, read_at)
        lines += seed_summary(rows, read_at)
        lines += transfer_table(rows, v)
        lines.append("")
    lines.append(
        f"Wall time counts the attack, its curve and its transfer attacks. Runner time over all "
        f"invocations: {data['wall_seconds'] / 60:.1f} min."
    )
    return "\n".join(lines) + "\n"


def plot(data: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    victims = list(data["victims"])
    if not victims:
        return
    fig, axes = plt.subplots(1, len(victims), figsize=(6 * len(victims), 4.2), squeeze=False)
    for ax, vname in zip(axes[0], victims, strict=True):
        for r in data["runs"]:
            if r["victim"] == vname and r["curve"]:
                pts = r["curve"]
                ax.plot([p["queries"] for p in pts], [p["accuracy"] for p in pts], label=_label(r))
        ax.set_title(f"victim: {vname}")
        ax.set_xlabel("queries")
        ax.set_ylabel("accuracy of the stolen model")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_run_arguments(ap, BENCH)
    ap.add_argument("--docs", type=Path, default=RESULTS, help=f"docs folder (default {RESULTS})")
    args = ap.parse_args()
    paths = configs(BENCH)
    if not args.no_run:
        chosen = [p for p in paths if not args.only or p.stem in args.only]
        run_configs(chosen, args.out, seeds=args.seeds, budgets=args.budgets, attacks=args.attacks)
    victims = {load_config(p, check=False).name: p.stem.split("-", 1)[0] for p in paths}
    rank = {v: i for i, v in enumerate(VICTIM_ORDER)}
    names = sorted(victims, key=lambda n: (rank.get(victims[n], len(rank)), n))
    data = collect(read_results(args.out, names), victims)
    read_at = sorted(set(READ_AT) | set(args.budgets or []))
    args.docs.mkdir(parents=True, exist_ok=True)
    (args.docs / "data_free.md").write_text(markdown(data, read_at))
    (args.docs / "data_free.json").write_text(json.dumps(data, indent=1))
    plot(data, args.docs / "data_free.png")
    print(f"wrote {args.docs}/data_free.md, .json and .png from {len(data['runs'])} runs")


if __name__ == "__main__":
    main()
