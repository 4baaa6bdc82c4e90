"""The stealkit command line: run experiments, train victims, list what is registered."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from stealkit.errors import StealkitError

log = logging.getLogger("stealkit")


def _cmd_run(args: argparse.Namespace) -> int:
    from stealkit.experiments.config import load_config
    from stealkit.experiments.runner import Experiment, expand_grid

    overrides = {
        k: v
        for k, v in (("name", args.name), ("data_dir", args.data_dir), ("device", args.device))
        if v
    }
    cfg = load_config(args.config, overrides=overrides)
    out = Path(args.out) / cfg.name
    runs = expand_grid(cfg)
    if args.dry_run:
        done = _done_runs(cfg, out) if not args.fresh else set()
        print(
            f"stealkit run '{cfg.name}': {len(runs)} runs -> {out}/ (valid; {len(done)} already "
            "done there, which a run skips)",
            file=sys.stderr,
        )
        for r in runs:
            mark = "   (done)" if (r.attack, r.defense, r.budget, r.seed) in done else ""
            print(f"  {r.attack} | {r.defense} | {r.budget} queries | seed {r.seed}{mark}")
        return 0
    try:
        results = Experiment(cfg, out, progress=not args.no_progress, fresh=args.fresh).run()
    except KeyboardInterrupt:
        print(
            f"stealkit: interrupted; every finished run is kept in {out / 'results.json'} "
            "(the run in flight is recorded as interrupted, with the queries it bought). Run the "
            "same command again to resume: finished runs are skipped and buy nothing.",
            file=sys.stderr,
        )
        return 130
    failed = [r for r in results["runs"] if r["status"] != "ok"]
    print(f"results: {out / 'results.json'}\nreport:  {out / 'report.html'}", file=sys.stderr)
    if failed:
        print(
            f"{len(failed)} of {len(results['runs'])} runs failed; see the report", file=sys.stderr
        )
        return 1
    return 0


def _done_runs(cfg: Any, out: Path) -> set[tuple[str, str, int, int]]:
    """The runs of ``cfg`` that ``out`` already holds as succeeded (what a run would skip)."""
    from stealkit.experiments.runner import already_done, experiment_hash
    from stealkit.experiments.store import check_same_experiment
    from stealkit.report import load_results

    if not (out / "results.json").is_file():
        return set()
    data = load_results(out / "results.json")
    check_same_experiment(out, data, experiment_hash(cfg))
    return {(s.attack, s.defense, s.budget, s.seed) for s in already_done(cfg, data["runs"])}


def _cmd_train_victim(args: argparse.Namespace) -> int:
    from stealkit.victims.trained import train_victim

    v = train_victim(
        dataset=args.dataset,
        arch=args.arch,
        epochs=args.epochs,
        seed=args.seed,
        cache_dir=Path(args.cache_dir),
        data_dir=args.data_dir,
        device=args.device,
    )
    print(
        json.dumps(
            {k: v.meta.get(k) for k in ("dataset", "arch", "test_accuracy", "checkpoint")}, indent=2
        )
    )
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    from stealkit.attacks import PRESETS as AP
    from stealkit.attacks import attack_names, build_attack
    from stealkit.data import dataset_info, dataset_names
    from stealkit.defenses import PRESETS as DP
    from stealkit.defenses import defense_names
    from stealkit.models import model_description, model_names
    from stealkit.victims.registry import victim_names

    print("victims:  " + ", ".join(victim_names()))
    print(
        "attacks (what each steals, whether it needs the thief's own images, what it learns from):"
    )
    for name in attack_names():
        a = build_attack(name)
        accepts = ", ".join(sorted(k.value for k in a.accepts))
        pool = "pool" if a.needs_pool else "data-free"
        presets = ", ".join(p for p, (t, _) in AP.items() if t == name)
        print(
            f"  {name:14s} {a.steals:10s} {pool:9s} {accepts}"
            + (f"   presets: {presets}" if presets else "")
        )
    print("defences: " + ", ".join(defense_names()) + "   presets: " + ", ".join(DP))
    print("models:")
    for m in model_names():
        print(f"  {m:12s} {model_description(m)}")
    print("data sets:")
    for d in dataset_names():
        splits, _ = dataset_info(d)
        print(f"  {d:22s} splits: {', '.join(splits)}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from stealkit.report import load_results, write_report

    path = Path(args.results)
    if path.is_dir() and (path / "results.json").is_file():
        path = path / "results.json"
    results = load_results(path)
    out_path = Path(args.out) if args.out else path.with_name("report.html")
    try:
        out = write_report(results, out_path)
    except OSError as e:
        raise StealkitError(
            f"cannot write the report to {out_path} ({e.strerror or e}); give a writable --out"
        ) from None
    print(out)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stealkit",
        description="Model-stealing attacks and defences, measured on equal terms.",
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-v",
        "--verbose",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log stealkit's debug messages",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="log stealkit's debug messages")
    sub = p.add_subparsers(dest="command", required=True)

    r = sub.add_parser(
        "run",
        parents=[common],
        help="run an experiment grid from a YAML config (or the built-in default)",
        description="Run every (attack, defence, budget, seed) of a config's grid against its victim; "
        "write runs/<name>/results.json and a self-contained runs/<name>/report.html. Without CONFIG, "
        "run the built-in default: steal the real MNIST CNN (digit-recognizer-py) with Fashion-MNIST "
        "queries, evaluated on the MNIST 5k digits.",
    )
    r.add_argument(
        "config", nargs="?", help="YAML config (see configs/); default: the built-in one"
    )
    r.add_argument("--out", default="runs", help="parent folder of the results (default: runs)")
    r.add_argument("--name", help="override the config's name (the output sub-folder)")
    r.add_argument(
        "--data-dir", help="folder holding on-disk data sets (mnist/, cifar-10-batches-py/, ...)"
    )
    r.add_argument("--device", help="'cpu', 'cuda' or 'auto' (default: the config's, usually auto)")
    r.add_argument(
        "--dry-run",
        action="store_true",
        help="check the config (every check a run makes before buying) and list its runs",
    )
    r.add_argument(
        "--fresh",
        action="store_true",
        help="redo every run, even those the output folder already holds (its old "
        "results.json is kept beside as results.<time>.json); by default a run resumes",
    )
    r.add_argument(
        "--no-progress",
        action="store_true",
        help="no progress inside runs (default: bars on a terminal, a line about every 10%% "
        "of a run's queries and training steps elsewhere); a line per finished run remains",
    )
    r.set_defaults(func=_cmd_run)

    t = sub.add_parser(
        "train-victim",
        parents=[common],
        help="train (or reuse from the cache) a victim on a registered data set",
        description="Train a registered architecture on a registered data set and cache it as "
        "safetensors + metadata; a second call with the same settings reuses the cache.",
    )
    t.add_argument("--dataset", required=True, help="registered data set, e.g. fashion-mnist")
    t.add_argument("--arch", default="cnn3", help="registered architecture (default cnn3)")
    t.add_argument("--epochs", type=int, default=5)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--cache-dir", default=str(Path("~/.cache/stealkit/victims").expanduser()))
    t.add_argument("--data-dir", help="folder holding on-disk data sets")
    t.add_argument("--device", help="'cpu' or 'cuda' (default: cuda when present)")
    t.set_defaults(func=_cmd_train_victim)

    ls = sub.add_parser(
        "list",
        parents=[common],
        help="list registered victims, attacks, defences, models, data sets",
        description="List everything the config can name.",
    )
    ls.set_defaults(func=_cmd_list)

    rep = sub.add_parser(
        "report",
        parents=[common],
        help="rebuild report.html from a results.json",
        description="Rebuild the HTML report of a finished (or interrupted) run.",
    )
    rep.add_argument("results", help="path to results.json")
    rep.add_argument("--out", help="HTML file to write (default: beside results.json)")
    rep.set_defaults(func=_cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    # -v shows stealkit's own debug lines, not those of matplotlib, PIL or Ray
    logging.getLogger("stealkit").setLevel(logging.DEBUG if args.verbose else logging.WARNING)
    previous = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _interrupt)  # a killed run is recorded as interrupted
    try:
        return int(args.func(args))
    except StealkitError as e:
        print(f"stealkit: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("stealkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `stealkit list | head`: the reader left; nothing is wrong
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lets the interpreter exit quietly
        return 0
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
