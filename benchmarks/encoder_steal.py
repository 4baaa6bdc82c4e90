"""Encoder stealing re-measured: Cont-Steal (Sha et al., CVPR 2023), the SSL-extraction losses
(Dziedzic et al., ICML 2022), StolenEncoder (Liu et al., CCS 2022) and stealing the classifier.

    python -m benchmarks.encoder_steal [--only NAME ...] [--no-run] [--seeds S ...]
                                       [--budgets B ...] [--attacks A ...]
                                       [--out runs/benchmarks] [--docs docs/results]

Runs the configs of benchmarks/encoder_steal/ (each also runnable alone with `stealkit run`)
through stealkit's runner into <out>/<name>/results.json (a cut-off run resumes, buying only what
it had not finished), then writes every run found there as encoder_stealing.md and
encoder_stealing.json in --docs. Several seeds: mean ± sd. The configs, by name:

- encoder-victims-*: SimCLR, MoCo v2, BYOL and SimSiam encoders pre-trained here on Fashion-MNIST
  train (labels unused) and a supervised encoder; pre-training time and probe accuracy from each
  victim's meta, and one MSE run each.
- encoder-losses-in/-out: the SimCLR victim stolen by each loss, pool in distribution
  (Fashion-MNIST train) and out of it (crops of scikit-image's natural photos).
- encoder-classifier-*: the victim encoder + its linear head (``probed-encoder``) served as a
  classifier answering probabilities or labels, stolen with Knockoff (random transfer set).
- encoder-defences: Cont-Steal and MSE against embedding noise, top-k and rounding; utility is
  the victim's downstream accuracy for honest users behind each defence.
- encoder-efficientnet-in/-out: the real EfficientNet-Lite0 (ImageNet, 96 px) as the victim, a
  resnet8 on 3x-downsampled inputs as the surrogate; -out-simclr-views: Cont-Steal with SimCLR
  views there.
- encoder-contsteal-out, -100, -10: Cont-Steal as the dissertation states it (RandAugment views)
  against its variants (same_view, SimCLR views, clean pairs), MSE and the untrained floor, with
  probes of about 500, 100 and 10 labels per class.

Gap closed: an attack's share of the gap between the floor (the same seeded surrogate untrained,
judged by the same probes: a run whose recipe trains no steps) and the victim,
(acc - floor) / (victim - floor) for probe accuracy and (agr - floor) / (1 - floor) for
agreement; each run against the floor of its own seed, from any experiment judged the same way
(victim, probe, eval and surrogate alike; the floor buys nothing, so the pool does not matter).

Judging (never through the thief's ledger): linear heads on frozen features, one protocol for the
victim and every stolen encoder, trained on the config's ``probe:`` images and tested on its
``eval:`` images; ``agreement``: stolen encoder + its head against victim encoder + its head.
"""

from __future__ import annotations

import argparse
import ast
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from benchmarks import common
from stealkit.report import format as fmt
from stealkit.report.read import by_setting, get, metric, missing_runs, num, planned_runs

Results = dict[str, Any]
Runs = Sequence[Mapping[str, Any]]
BENCH = "encoder_steal"
POOLS = {"fashion-mnist": "in", "skimage-crops": "out"}
VICTIMS = ("simclr", "moco", "byol", "simsiam", "supervised")  # the victims table's order
ATTACKS = ("contsteal", "encoder-mse")  # the defence table's columns
KEPT = "attack defense budget seed surrogate metrics attack_seconds wall_seconds threads".split()
KEPT += ["attack_repr", "defense_repr"]  # of each record, in encoder_stealing.json


Floors = dict[str, dict[Any, dict[str, float]]]  # judged-by key -> seed -> metric -> floor


def is_floor(run: Mapping[str, Any]) -> bool:
    """A run whose surrogate never trained (its recipe trains no steps): the floor."""
    return get(run, "info", "steps") == 0


def gap_closed(value: float | None, floor: float | None, top: float | None) -> float | None:
    """(value - floor) / (top - floor): the share of the gap between the untrained floor and the
    top (the victim's probe accuracy, or 1 for agreement) that an attack closes; 0 at the floor,
    1 at the top. None when a value is unknown or there is no gap."""
    if value is None or floor is None or top is None or top == floor:
        return None
    return (value - floor) / (top - floor)


def judged_by(res: Results) -> str:
    """What a floor depends on: the victim, the probe and eval sets and the surrogate."""
    cfg = res.get("config") or {}
    return json.dumps(
        {k: cfg.get(k) for k in ("victim", "probe", "eval", "surrogate")}, sort_keys=True
    )


def floors(results: dict[str, Results]) -> Floors:
    """The floor's accuracy and agreement per seed, for each way of judging found."""
    found: Floors = {}
    for res in results.values():
        for run in common.ok_runs(res):
            if is_floor(run):
                metrics = {k: num(get(run, "metrics", k)) for k in ("accuracy", "agreement")}
                known = {k: v for k, v in metrics.items() if v is not None}
                found.setdefault(judged_by(res), {})[run.get("seed")] = known
    return found


def run_gaps(run: Mapping[str, Any], by_seed: Mapping[Any, Mapping[str, float]]) -> dict[str, Any]:
    """A run's gap closed in accuracy and agreement, against the floor of its seed (else the mean
    floor over seeds); None where no floor was measured."""
    floor = by_seed.get(run.get("seed"))
    if floor is None and by_seed:
        floor = {
            k: sum(vals) / len(vals)
            for k in ("accuracy", "agreement")
            if (vals := [f[k] for f in by_seed.values() if k in f])
        }
    floor = floor or {}
    victim = num(get(run, "metrics", "victim_accuracy"))
    return {
        "accuracy": gap_closed(num(get(run, "metrics", "accuracy")), floor.get("accuracy"), victim),
        "agreement": gap_closed(num(get(run, "metrics", "agreement")), floor.get("agreement"), 1.0),
    }


def gap_stats(runs: Runs, by_seed: Mapping[Any, Mapping[str, float]]) -> list[str]:
    """Mean ± sd over ``runs`` of the gap closed in accuracy, then in agreement."""
    gaps = [run_gaps(r, by_seed) for r in runs]
    return [
        fmt.mean_std([v for g in gaps if (v := g[k]) is not None])
        for k in ("accuracy", "agreement")
    ]


def table(head: list[str], rows: list[list[str]], left: int = 1) -> list[str]:
    rule = "|" + "|".join("---" if i < left else "---:" for i in range(len(head))) + "|"
    return ["| " + " | ".join(head) + " |", rule] + ["| " + " | ".join(r) + " |" for r in rows]


def section(results: dict[str, Results], prefix: str) -> dict[str, Results]:
    return {name: res for name, res in results.items() if name.startswith(prefix)}


def groups(res: Results) -> list[tuple[str, str, int, Runs]]:
    """(attack, defence, budget, its finished runs over seeds) of one experiment, sorted, the
    floor first."""
    found = [(a, d, b, g) for (a, d, b), g in by_setting(common.ok_runs(res)).items()]
    return sorted(found, key=lambda t: not all(is_floor(r) for r in t[3]))


def stat(runs: Runs, *keys: str) -> str:
    return fmt.mean_std(metric(runs, *keys))


def mean(runs: Runs, *keys: str) -> float | None:
    values = metric(runs, *keys)
    return sum(values) / len(values) if values else None


def victim_meta(res: Results) -> dict[str, Any]:
    """The victim's meta: recorded as data since the runner keeps it, else read from its repr
    (``Victim.__repr__``) in results made before."""
    meta = get(res, "victim", "meta")
    if isinstance(meta, dict):
        return meta
    text = get(res, "victim", "repr")
    if not isinstance(text, str) or "meta=" not in text:
        return {}
    try:
        meta = ast.literal_eval(text.split("meta=", 1)[1].removesuffix(")"))
    except (ValueError, SyntaxError):
        return {}
    return meta if isinstance(meta, dict) else {}


def pool(res: Results) -> str:
    dataset = get(res, "config", "pool", "dataset")
    return POOLS.get(dataset, fmt.text(dataset))


def seconds(runs: Runs) -> str:
    """The attack's own time (buying and training, not judging); wall time for older records."""
    times = [r.get("attack_seconds", r.get("wall_seconds")) for r in runs]
    known = [t for t in map(num, times) if t is not None]
    return fmt.seconds(sum(known) / len(known) if known else None)


def label(attack: str, runs: Runs = ()) -> str:
    name = attack.removeprefix("encoder-")
    return f"{name} (floor)" if runs and all(is_floor(r) for r in runs) else name


def victims(results: dict[str, Results]) -> list[str]:
    found = section(results, "encoder-victims-")
    order = [f"encoder-victims-{m}" for m in VICTIMS]
    names = [n for n in order if n in found] + sorted(set(found) - set(order))
    if not names:
        return []
    rows: list[list[str]] = []
    ssl: dict[str, Any] = {}
    for name in names:
        res, meta = found[name], victim_meta(found[name])
        accuracy = meta.get("probe_accuracy")
        if meta.get("method") == "supervised":  # no probe in its meta: the benchmark's
            accuracy = get(res, "victim", "test_accuracy")
        else:
            params = get(res, "config", "victim", "params") or {}
            ssl = {k: v for k, v in params.items() if k not in ("method", "cache_dir")}
        stolen = "; ".join(
            f"{stat(g, 'metrics', 'agreement')} ({b:,} q)" for *_, b, g in groups(res)
        )
        rows.append(
            [
                name.removeprefix("encoder-victims-"),
                fmt.seconds(meta.get("train_seconds")),
                fmt.fraction(accuracy),
                fmt.count(meta.get("feature_dim")),
                stolen or fmt.MISSING,
            ]
        )
    cfg = found[names[-1]].get("config", {})
    head = ["encoder", "pre-training (s)", "linear-probe accuracy", "embedding size"]
    return [
        "## Victims (Fashion-MNIST, cnn3 backbone)",
        "",
        f"Self-supervised pre-training: `{ssl}`. Linear probe of the self-supervised ones: their "
        "checkpoint's (10k train images, full test split); of the supervised one: the "
        f"benchmark's ({fmt.count(get(cfg, 'probe', 'limit'))} train / "
        f"{fmt.count(get(cfg, 'eval', 'limit'))} test). "
        "Last column: agreement of an MSE copy bought from Fashion-MNIST train.",
        "",
        *table([*head, "MSE agreement"], rows),
        "",
    ]


def stealing(results: dict[str, Results]) -> list[str]:
    rows = []
    parts = {**section(results, "encoder-losses-"), **section(results, "encoder-classifier-")}
    found = floors(results)
    for res in parts.values():
        output = get(res, "config", "victim", "output")
        by_seed = found.get(judged_by(res), {})
        for attack, *_, g in groups(res):
            what = label(attack, g) if output == "embedding" else f"classifier from {output}"
            rows.append(
                [
                    what,
                    pool(res),
                    fmt.count(mean(g, "ledger", "spent")),
                    *(stat(g, "metrics", k) for k in ("accuracy", "agreement")),
                    *gap_stats(g, by_seed),
                    *(stat(g, "metrics", k) for k in ("relative_accuracy", "embedding_cosine")),
                    seconds(g),
                ]
            )
    if not rows:
        return []
    head = ["run", "pool", "queries", "accuracy", "agreement", "gap closed (accuracy)"]
    head += ["gap closed (agreement)", "accuracy / victim's", "cosine", "seconds"]
    return [
        "## Steal the encoder or the classifier (SimCLR victim)",
        "",
        "Downstream task: Fashion-MNIST (linear probe). `classifier from ...`: the victim encoder "
        "+ its linear head served as a classifier and stolen with Knockoff (random). Gap closed: "
        "the share of the gap between the untrained floor and the victim (accuracy) or perfect "
        "agreement; — where no floor was measured with the same probes. Seconds: the attack's "
        "own time (buying and training; judging not included).",
        "",
        *table(head, rows, 2),
        "",
    ]


def contsteal_forms(results: dict[str, Results]) -> list[str]:
    found = section(results, "encoder-contsteal-")
    if not found:
        return []
    rows = []
    all_floors = floors(results)
    order = sorted(found.values(), key=lambda r: -(num(get(r, "config", "probe", "limit")) or 0))
    for res in order:
        by_seed = all_floors.get(judged_by(res), {})
        for attack, *_, g in groups(res):
            rows.append(
                [
                    label(attack, g),
                    fmt.count(get(res, "config", "probe", "limit")),
                    fmt.fraction(get(res, "victim", "test_accuracy")),
                    fmt.count(mean(g, "ledger", "spent")),
                    stat(g, "metrics", "accuracy"),
                    *gap_stats(g, by_seed)[:1],
                    stat(g, "metrics", "agreement"),
                    *gap_stats(g, by_seed)[1:],
                    stat(g, "metrics", "embedding_cosine"),
                    seconds(g),
                ]
            )
    head = ["attack", "probe labels", "victim accuracy", "queries", "accuracy"]
    head += ["gap closed (accuracy)", "agreement", "gap closed (agreement)", "cosine", "seconds"]
    return [
        "## Cont-Steal as the dissertation states it (SimCLR victim, natural-photo crops)",
        "",
        "Cont-Steal: RandAugment (n=2, m=14) views, one bought view per image, the surrogate's "
        "view redrawn every batch; `same-view`: the surrogate trains on the very pixels the "
        "victim was sent; `simclr`: SimCLR views; `clean`: a quarter of the queries spent on "
        "clean images, trained clean. Probe labels: labelled Fashion-MNIST train images for the "
        "linear heads (a seeded random subset; 10 classes). Gap closed: "
        "(acc - floor) / (victim - floor) and (agr - floor) / (1 - floor), each run against the "
        "floor of its seed.",
        "",
        *table(head, rows, 1),
        "",
    ]


def defences(results: dict[str, Results]) -> list[str]:
    res = results.get("encoder-defences")
    if res is None:
        return []
    runs = {(a, d, b): g for a, d, b, g in groups(res)}
    budgets = sorted({b for _, _, b in runs})
    rows = [
        [
            d["name"],
            fmt.fraction(d.get("victim_accuracy")),
            fmt.fraction(d.get("mean_relative_l2_change")),
            f"{b:,}",
            *(stat(runs.get((a, d["name"], b), []), "metrics", "agreement") for a in ATTACKS),
        ]
        for d in res.get("defenses", [])
        for b in budgets
    ]
    head = ["defence", "victim accuracy", "relative L2 change", "queries"]
    return [
        "## Embedding defences (in-distribution pool)",
        "",
        "Utility: the victim's own downstream accuracy when honest users train and test their "
        "linear head on defended embeddings (undefended: "
        f"{fmt.fraction(get(res, 'victim', 'test_accuracy'))}). Protection: the stolen encoder's "
        "agreement (lower protects more).",
        "",
        *table([*head, "Cont-Steal agreement", "MSE agreement"], rows),
        "",
    ]


def efficientnet(results: dict[str, Results]) -> list[str]:
    found = section(results, "encoder-efficientnet-")
    if not found:
        return []
    all_floors = floors(results)
    rows = [
        [
            label(attack, g),
            pool(res),
            fmt.count(mean(g, "ledger", "spent")),
            *(stat(g, "metrics", k) for k in ("accuracy", "relative_accuracy", "agreement")),
            *gap_stats(g, all_floors.get(judged_by(res), {})),
            seconds(g),
        ]
        for res in found.values()
        for attack, _, _, g in groups(res)
    ]
    res = next(iter(found.values()))
    cfg = res.get("config", {})
    head = ["attack", "pool", "queries", "accuracy", "accuracy / victim's", "agreement"]
    head += ["gap closed (accuracy)", "gap closed (agreement)", "seconds"]
    return [
        "## EfficientNet-Lite0 (real, ImageNet) as the victim",
        "",
        f"Input {get(cfg, 'victim', 'params', 'image_size')} px; downstream Fashion-MNIST "
        f"({fmt.count(get(cfg, 'probe', 'limit'))} probe-train, "
        f"{fmt.count(get(cfg, 'eval', 'limit'))} test images); "
        f"victim linear-probe accuracy {fmt.fraction(get(res, 'victim', 'test_accuracy'))}. "
        f"Surrogate: {get(cfg, 'surrogate', 'arch')} (resnet8 on 3x-downsampled inputs).",
        "",
        *table(head, rows, 2),
        "",
    ]


def unfinished(results: dict[str, Results]) -> list[str]:
    lines = []
    for name, res in results.items():
        missing = missing_runs(planned_runs(res) or [], res.get("runs", []))
        if missing:
            lines.append(f"- {name}: {len(missing)} planned runs not finished")
    return ["## Not finished", "", *lines, ""] if lines else []


def markdown(results: dict[str, Results]) -> str:
    runs = [r for res in results.values() for r in common.ok_runs(res)]
    seeds = sorted({r["seed"] for r in runs})
    found = [res["machine"] for res in results.values() if res.get("machine")]
    machines = list({json.dumps(m, sort_keys=True): m for m in found}.values()) or [
        common.machine()
    ]
    lines = [
        "# Encoder stealing",
        "",
        "Written by `python -m benchmarks.encoder_steal` (configs: `benchmarks/encoder_steal/`); "
        f"compact numbers in `encoder_stealing.json`. Seeds: {', '.join(map(str, seeds))}"
        + (" (cells: mean ± sd over seeds)" if len(seeds) > 1 else "")
        + f". Threads per run: {sorted({r.get('threads') for r in runs}, key=str)}. "
        f"Machine: {json.dumps(machines[0] if len(machines) == 1 else machines)}.",
        "",
    ]
    for part in (victims, stealing, contsteal_forms, defences, efficientnet, unfinished):
        lines += part(results)
    return "\n".join(lines)


def write_docs(results: dict[str, Results], docs: Path) -> None:
    if not any(common.ok_runs(res) for res in results.values()):
        raise SystemExit("no finished encoder-stealing runs to write up; run the benchmark first")
    docs.mkdir(parents=True, exist_ok=True)
    text = markdown(results)
    (docs / "encoder_stealing.md").write_text(text)
    (docs / "encoder_stealing.json").write_text(json.dumps(summary(results), indent=1))
    print(text)


def summary(results: dict[str, Results]) -> dict[str, Any]:
    """encoder_stealing.json: per experiment the victim, defences, the floor per seed, and the
    kept fields of each finished run with its queries spent and gap closed."""
    found = floors(results)
    data = {
        name: {
            "victim": res.get("victim"),
            "defenses": res.get("defenses", []),
            "complete": res.get("complete"),
            "machine": res.get("machine"),
            "floor": {str(s): f for s, f in found.get(judged_by(res), {}).items()} or None,
            "runs": [
                {
                    **{k: r.get(k) for k in KEPT},
                    "spent": get(r, "ledger", "spent"),
                    "gap_closed": run_gaps(r, found.get(judged_by(res), {})),
                }
                for r in common.ok_runs(res)
            ],
        }
        for name, res in results.items()
    }
    return {"machine": common.machine(), "experiments": data}


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    common.add_run_arguments(ap, BENCH)
    ap.add_argument("--docs", type=Path, default=common.RESULTS, help="default: docs/results")
    args = ap.parse_args()
    paths = common.configs(BENCH)
    if not args.no_run:
        chosen = [p for p in paths if not args.only or p.stem in args.only]
        common.run_configs(
            chosen, args.out, seeds=args.seeds, budgets=args.budgets, attacks=args.attacks
        )
    write_docs(common.read_results(args.out, [p.stem for p in paths]), args.docs)


if __name__ == "__main__":
    main()
