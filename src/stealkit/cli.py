"""The stealkit command line: run experiments, train victims, list what is registered."""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stealkit.errors import StealkitError

if TYPE_CHECKING:
    from stealkit.oracle.response import OutputKind

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
        done, stale = _done_runs(cfg, out) if not args.fresh else (set(), [])
        print(
            f"stealkit run '{cfg.name}': {len(runs)} runs -> {out}/ (valid; {len(done)} already "
            "done there, which a run skips)",
            file=sys.stderr,
        )
        for r in runs:
            mark = "   (done)" if (r.attack, r.defense, r.budget, r.seed) in done else ""
            print(f"  {r.attack} | {r.defense} | {r.budget} queries | seed {r.seed}{mark}")
        from stealkit.experiments.checks import evaluation_warnings

        for w in stale + evaluation_warnings(cfg):
            print(f"stealkit: warning: {w}", file=sys.stderr)
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
    failed = [r for r in results["runs"] if r["status"] not in ("ok", "blocked")]
    print(f"results: {out / 'results.json'}\nreport:  {out / 'report.html'}", file=sys.stderr)
    if failed:
        print(
            f"{len(failed)} of {len(results['runs'])} runs failed; see the report", file=sys.stderr
        )
        return 1
    return 0


def _done_runs(cfg: Any, out: Path) -> tuple[set[tuple[str, str, int, int]], list[str]]:
    """The runs of ``cfg`` that ``out`` already holds as succeeded (what a run would skip), and
    the warnings for those of them made by older code defaults."""
    from stealkit.experiments.runner import (
        already_done,
        check_definitions,
        experiment_hash,
        stale_warnings,
    )
    from stealkit.experiments.store import check_same_experiment, whole_hash
    from stealkit.report import load_results

    if not (out / "results.json").is_file():
        return set(), []
    data = load_results(out / "results.json")
    legacy = whole_hash(cfg.model_dump(mode="json"))
    check_same_experiment(out, data, experiment_hash(cfg), legacy=legacy)
    check_definitions(out, cfg, data["runs"])
    done = already_done(cfg, data["runs"])
    keys = {(s.attack, s.defense, s.budget, s.seed) for s in done}
    return keys, stale_warnings(cfg, data["runs"], done)


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


LIST_KINDS = ("victims", "attacks", "defenses", "models", "datasets")


def _cmd_list(args: argparse.Namespace) -> int:
    kinds = [args.what] if args.what else list(LIST_KINDS)
    if args.json:
        print(json.dumps({k: _list_records(k, args.data_dir) for k in kinds}, indent=2))
        return 0
    for k in kinds:
        records = _list_records(k, args.data_dir) if args.details else None
        for line in _list_lines(k, records):
            print(line)
    return 0


def _list_records(kind: str, data_dir: str | None) -> list[dict[str, Any]]:
    """What ``list KIND --details`` (and ``--json``) tells of every registered name of a kind."""
    if kind == "datasets":
        from stealkit.data import dataset_names
        from stealkit.data.registry import describe_dataset

        return [describe_dataset(d, data_dir=data_dir).to_dict() for d in dataset_names()]
    if kind == "attacks":
        return [_attack_record(a) for a in _names("attacks")]
    if kind == "victims":
        return [_victim_record(v) for v in _names("victims")]
    if kind == "defenses":
        return [_defense_record(d) for d in _names("defenses")]
    return [_model_record(m) for m in _names("models")]


def _names(kind: str) -> list[str]:
    from stealkit.attacks import attack_names
    from stealkit.defenses import defense_names
    from stealkit.models import model_names
    from stealkit.victims.registry import victim_names

    return {
        "attacks": attack_names,
        "defenses": defense_names,
        "models": model_names,
        "victims": victim_names,
    }[kind]()


def _kinds(kinds: Iterable[OutputKind]) -> list[str]:
    return sorted(k.value for k in kinds)


def _attack_record(name: str) -> dict[str, Any]:
    from stealkit.attacks import PRESETS, build_attack

    try:
        a = build_attack(name)
    except Exception as e:  # a plugin's attack that needs parameters: say so, carry on
        return {"name": name, "problem": f"{type(e).__name__}: {e}"}
    presets = {}
    for preset, (type_, params) in PRESETS.items():
        if type_ == name:  # a preset may accept other answers (MEGA's and DaST's variants)
            presets[preset] = {
                "params": params,
                "accepts": _kinds(build_attack(type_, **params).accepts),
            }
    return {
        "name": name,
        "steals": a.steals,
        "needs_pool": a.needs_pool,
        "accepts": _kinds(a.accepts),
        "defaults": repr(a),
        "presets": presets,
    }


def _victim_record(name: str) -> dict[str, Any]:
    from stealkit.victims import registry

    takes, required = registry.victim_params(name)
    rec: dict[str, Any] = {
        "name": name,
        "description": registry.victim_description(name),
        "params": takes,
    }
    if required:  # describing it needs them (a victim trained here would be trained)
        return rec | {"needs_params": required}
    try:
        info = registry.describe_victim(name)
    except Exception as e:  # not available here (a missing package or file): say why
        return rec | {"problem": f"{type(e).__name__}: {e}"}
    return rec | {
        "kind": info.kind,
        "spec": None if info.spec is None else info.spec.to_dict(),
        "output_dim": info.output_dim,
        "outputs": None if info.outputs is None else _kinds(info.outputs),
    }


def _defense_record(name: str) -> dict[str, Any]:
    from stealkit.defenses import PRESETS, build_defense
    from stealkit.oracle.response import OutputKind

    try:
        d = build_defense(name)
    except Exception as e:  # a plugin's defence that needs parameters: say so, carry on
        return {"name": name, "problem": f"{type(e).__name__}: {e}"}
    return {
        "name": name,
        "wraps": _kinds(k for k in OutputKind if d.accepts(k)),
        "answers": None if d.gives is None else d.gives.value,  # None: what it receives
        "defaults": repr(d),
        "presets": {p: params for p, (t, params) in PRESETS.items() if t == name},
    }


def _model_record(name: str) -> dict[str, Any]:
    from stealkit.models import build_model, model_description

    rec: dict[str, Any] = {"name": name, "description": model_description(name)}
    try:  # its size on a common input: how heavy a surrogate it makes
        net = build_model(name, in_channels=1, num_classes=10, image_size=28)
    except Exception as e:  # a listing reports each failure, never stops at one
        return rec | {"problem": f"{type(e).__name__}: {e}"}
    return rec | {"parameters_1x28x28_10_classes": sum(p.numel() for p in net.parameters())}


def _list_lines(kind: str, records: list[dict[str, Any]] | None) -> list[str]:
    """The overview of one kind (``records`` None) or its details."""
    if kind == "datasets":
        return _dataset_lines(records)
    if kind == "attacks":
        return _attack_lines(records)
    if kind == "victims":
        return _victim_lines(records)
    if kind == "defenses":
        return _defense_lines(records)
    return _model_lines(records)


def _model_lines(records: list[dict[str, Any]] | None) -> list[str]:
    from stealkit.models import model_description

    if records is None:
        return ["models:"] + [f"  {m:12s} {model_description(m)}" for m in _names("models")]
    lines = ["models (parameters at 1x28x28 inputs and 10 classes; description):"]
    for r in records:
        size = r.get("parameters_1x28x28_10_classes")
        shown = f"{size:,}" if size is not None else r["problem"]
        lines.append(f"  {r['name']:14s} {shown:>9s}  {r['description']}")
    return lines


def _dataset_lines(records: list[dict[str, Any]] | None) -> list[str]:
    from stealkit.data import dataset_info, dataset_names

    if records is None:
        lines = ["data sets:"]
        for d in dataset_names():
            splits, _ = dataset_info(d)
            lines.append(f"  {d:22s} splits: {', '.join(splits)}")
        return lines
    lines = [
        "data sets (channels x height x width; labels; images per split; here or how to get it):"
    ]
    pad = " " * 25
    for r in records:
        dims = (r["channels"], r["height"], r["width"])
        shape = "x".join("?" if v is None else str(v) for v in dims)
        if r["labelled"] is None:
            labels = "labels ?"
        elif r["labelled"]:
            labels = f"{r['classes']} classes" if r["classes"] else "labelled"
        else:
            labels = "unlabelled"
        counts = ", ".join(f"{s} {n:,}" for s, n in r["images"].items()) or "counts from the files"
        lines.append(f"  {r['name']:22s} {shape:10s} {labels:12s} {counts}")
        if r["available"]:
            lines.append(f"{pad}available here")
        else:
            lines.append(f"{pad}NOT available here ({r['problem']}); get it: {r['how_to_get']}")
        if r["params"]:
            lines.append(f"{pad}params: {r['params']}")
    return lines


def _attack_lines(records: list[dict[str, Any]] | None) -> list[str]:
    from stealkit.attacks import PRESETS

    if records is None:
        from stealkit.attacks import build_attack

        lines = [
            "attacks (what each steals, whether it needs the thief's own images, what it learns "
            "from):"
        ]
        for name in _names("attacks"):
            a = build_attack(name)
            accepts = ", ".join(_kinds(a.accepts))
            pool = "pool" if a.needs_pool else "data-free"
            presets = ", ".join(p for p, (t, _) in PRESETS.items() if t == name)
            lines.append(
                f"  {name:14s} {a.steals:10s} {pool:9s} {accepts}"
                + (f"   presets: {presets}" if presets else "")
            )
        return lines
    lines = ["attacks (family: what it steals; its data; the answers it learns from; presets):"]
    for r in records:
        if "problem" in r:
            lines.append(f"  {r['name']:14s} {r['problem']}")
            continue
        data = "needs a pool (the thief's own images)" if r["needs_pool"] else "data-free (no pool)"
        lines.append(
            f"  {r['name']:14s} steals: {r['steals']}; {data}; learns from {', '.join(r['accepts'])}"
        )
        lines.append(f"      defaults: {r['defaults']}")
        for p, pr in r["presets"].items():
            params = ", ".join(f"{k}={v!r}" for k, v in pr["params"].items()) or "defaults"
            other = (
                f" (learns from {', '.join(pr['accepts'])})"
                if pr["accepts"] != r["accepts"]
                else ""
            )
            lines.append(f"      preset {p}: {params}{other}")
    return lines


def _victim_lines(records: list[dict[str, Any]] | None) -> list[str]:
    if records is None:
        return ["victims:  " + ", ".join(_names("victims"))]
    lines = ["victims (kind; input channels x height x width in its value range; output size):"]
    for r in records:
        lines.append(f"  {r['name']:20s} {_victim_head(r)}")
        lines.append(f"      {r['description']}")
    return lines


def _victim_head(r: dict[str, Any]) -> str:
    if "needs_params" in r:
        return f"needs params: {', '.join(r['needs_params'])} (takes {r['params']})"
    if "problem" in r:
        return f"NOT available here: {r['problem']}"
    shape, size = "?", r["output_dim"]
    if r["spec"]:
        (lo, hi), sp = r["spec"]["value_range"], r["spec"]
        shape = f"{sp['channels']}x{sp['height']}x{sp['width']} in [{lo:g}, {hi:g}]"
    out = f"{size} classes" if r["kind"] == "classifier" else f"{size}-d embedding"
    params = f" (params: {r['params']})" if r["params"] != "none" else ""
    return f"{r['kind']}, input {shape}, {out if size is not None else 'output size ?'}{params}"


def _defense_lines(records: list[dict[str, Any]] | None) -> list[str]:
    from stealkit.defenses import PRESETS

    if records is None:
        return ["defences: " + ", ".join(_names("defenses")) + "   presets: " + ", ".join(PRESETS)]
    lines = ["defences (the answers it wraps -> what it answers; defaults; presets):"]
    for r in records:
        if "problem" in r:
            lines.append(f"  {r['name']:20s} {r['problem']}")
            continue
        presets = "; ".join(
            p + (" (" + ", ".join(f"{k}={v!r}" for k, v in params.items()) + ")" if params else "")
            for p, params in r["presets"].items()
        )
        lines.append(
            f"  {r['name']:20s} {', '.join(r['wraps'])} -> {r['answers'] or 'the same'}; "
            f"{r['defaults']}" + (f"; presets: {presets}" if presets else "")
        )
    return lines


def _cmd_config_schema(args: argparse.Namespace) -> int:
    if args.serve:
        from stealkit.serve.config import ServeConfig

        schema = ServeConfig.model_json_schema()
    else:
        from stealkit.experiments.config import ExperimentConfig

        schema = ExperimentConfig.model_json_schema()
    print(json.dumps(schema, indent=2))
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


def _cmd_verify(args: argparse.Namespace) -> int:
    import yaml

    from stealkit.experiments.verify import parse_part, verify_files

    params: Any = {}
    if args.victim_params:
        try:
            params = yaml.safe_load(args.victim_params) or {}
        except yaml.YAMLError as e:
            raise StealkitError(f"--victim-params is not YAML/JSON: {e}") from None
        if not isinstance(params, dict):
            raise StealkitError(f"--victim-params must be a mapping, got {args.victim_params!r}")
    report = verify_files(
        victim_name=args.victim,
        victim_params=params,
        suspect=args.suspect,
        arch=args.arch,
        private=parse_part(args.private, flag="--private") if args.private else None,
        public=parse_part(args.public, flag="--public") if args.public else None,
        samples=args.samples,
        alpha=args.alpha,
        seed=args.seed,
        data_dir=args.data_dir,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print("\n".join(report.lines()))
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    import yaml

    from stealkit.serve.config import ServeConfig, build, load_serve_config, parse_serve_config

    cfg = load_serve_config(args.config) if args.config else ServeConfig()
    data = cfg.model_dump(mode="json")
    victim = data["victim"]
    if args.victim:
        victim = {"name": args.victim, "params": {}, "output": victim["output"], "k": victim["k"]}
    if args.victim_params:
        try:
            victim["params"] = yaml.safe_load(args.victim_params) or {}
        except yaml.YAMLError as e:
            raise StealkitError(f"--victim-params is not YAML/JSON: {e}") from None
    for key in ("output", "k"):
        if getattr(args, key) is not None:
            victim[key] = getattr(args, key)
    data["victim"] = victim
    if args.defense is not None:
        data["defenses"] = [d for d in args.defense if d != "none"]
    for key in ("db", "host", "port", "workers", "max_batch", "device", "data_dir"):
        if getattr(args, key) is not None:
            data[key] = getattr(args, key)
    cfg = parse_serve_config(data, args.config or "<flags>")
    service, ledger = build(cfg)  # every problem shows here, before a port is opened
    where = f"http://{cfg.host}:{cfg.port}"
    print(
        f"stealkit serve: {service.victim.name} answering {service.output.value}"
        f"{' behind ' + ', '.join(map(repr, service.defenses)) if service.defenses else ''}\n"
        f"  on {where} (docs: {where}/docs), {cfg.workers} process(es)\n"
        f"  ledger: {cfg.db} ({len(ledger.keys())} keys; `stealkit keys create` adds one)",
        file=sys.stderr,
    )
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        log.warning(
            "serving on %s: reachable beyond this machine; use TLS in front of it", cfg.host
        )
    import uvicorn

    if cfg.workers == 1:
        from stealkit.serve.app import asgi

        uvicorn.run(asgi(service, ledger), host=cfg.host, port=cfg.port, log_level="warning")
        return 0
    ledger.close()
    os.environ["STEALKIT_SERVE_CONFIG"] = cfg.model_dump_json()
    uvicorn.run(
        "stealkit.serve.app:app_from_env",
        factory=True,
        host=cfg.host,
        port=cfg.port,
        workers=cfg.workers,
        log_level="warning",
    )
    return 0


def _cmd_keys(args: argparse.Namespace) -> int:
    from stealkit.serve.config import default_db
    from stealkit.serve.ledger import SqlLedger

    ledger = SqlLedger(args.db or default_db())
    if args.keys_command == "create":
        token, row = ledger.create_key(
            name=args.name,
            budget=args.budget,
            price_per_1k=args.price_per_1k,
            rate=args.rate,
            burst=args.burst,
            trusted=args.trusted,
        )
        print(token)
        print(
            f"key {row.id} ({row.name or 'no name'}): budget {row.budget if row.budget is not None else 'unlimited'} "
            f"inputs, {row.price_per_1k:g} per 1,000, rate {f'{row.rate:g}/s' if row.rate else 'unlimited'}"
            f"{', trusted (no defences)' if row.trusted else ''}. The key is shown once; only its "
            "hash is stored.",
            file=sys.stderr,
        )
        return 0
    if args.keys_command == "list":
        rows = ledger.keys()
        print(f"{'id':8s}  {'name':16s}  {'answered':>10s}  {'budget':>10s}  {'money':>10s}  state")
        for r in rows:
            state = "revoked" if r.revoked_at else ("trusted" if r.trusted else "active")
            budget = "-" if r.budget is None else str(r.budget)
            print(
                f"{r.id:8s}  {r.name[:16]:16s}  {r.spent:>10d}  {budget:>10s}  {r.money:>10.4f}  {state}"
            )
        return 0
    if args.keys_command == "usage":
        print(json.dumps(ledger.get(args.key_id).usage(), indent=2))
        return 0
    row = ledger.revoke(args.key_id)
    print(f"key {row.id} revoked; requests with it now get 403", file=sys.stderr)
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
        epilog="Config keys: `stealkit config-schema` prints every key of a config, with its type "
        "and default, as JSON schema (a victim's own settings, such as spec, go under "
        "victim.params); configs/ holds commented examples (configs/byo-onnx.yaml brings your own "
        "model); README.md walks through them ('A short tour', 'Bring your own victim'). "
        "`stealkit list --details` names what a config can use: victims, attacks, defences, "
        "models, data sets.",
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
        description="List everything the config can name. With --details: each data set's "
        "channels, size, images per split, labels and whether it loads here (or how to get it); "
        "each attack's family, the answers it learns from, whether it needs a pool, its presets; "
        "each victim's kind, input spec and classes (or the params it needs); each defence's "
        "input and output. --details loads every data set once (a few seconds).",
    )
    ls.add_argument("what", nargs="?", choices=LIST_KINDS, help="one kind only (default: all)")
    ls.add_argument("--details", action="store_true", help="one entry per name, in full")
    ls.add_argument("--json", action="store_true", help="the --details entries as JSON")
    ls.add_argument(
        "--data-dir", help="folder holding on-disk data sets, to check them (mnist/, cifar-10-...)"
    )
    ls.set_defaults(func=_cmd_list)

    cs = sub.add_parser(
        "config-schema",
        parents=[common],
        help="print the JSON schema of a `stealkit run` config (every key, typed)",
        description="Print the JSON schema of the experiment config that `stealkit run` reads: "
        "every key, its type, default and place (a victim's spec, for one, goes under "
        "victim.params). configs/ holds examples.",
    )
    cs.add_argument(
        "--serve", action="store_true", help="the schema of a `stealkit serve` config instead"
    )
    cs.set_defaults(func=_cmd_config_schema)

    rep = sub.add_parser(
        "report",
        parents=[common],
        help="rebuild report.html from a results.json",
        description="Rebuild the HTML report of a finished (or interrupted) run.",
    )
    rep.add_argument("results", help="path to results.json")
    rep.add_argument("--out", help="HTML file to write (default: beside results.json)")
    rep.set_defaults(func=_cmd_report)

    sv = sub.add_parser(
        "serve",
        parents=[common],
        help="serve a victim as a metered HTTP API (keys, quotas, rate limits, a SQL ledger)",
        description="Serve any registered victim behind any defences over HTTP (FastAPI on "
        "uvicorn): POST /v1/query, GET /v1/info, GET /v1/usage, GET /healthz; the OpenAPI "
        "documentation is at /docs. Every input is charged per key in a SQL ledger (SQLite by "
        "default, PostgreSQL by URL) that several processes can share. Flags override CONFIG.",
    )
    sv.add_argument(
        "config", nargs="?", help="YAML serve config (see configs/serve/mnist-reverse-sigmoid.yaml)"
    )
    sv.add_argument("--victim", help="registered victim name (default digit-recognizer)")
    sv.add_argument(
        "--victim-params", help="the victim's params as YAML/JSON, e.g. '{dataset: cifar10}'"
    )
    sv.add_argument("--output", choices=["label", "topk", "probabilities", "logits", "embedding"])
    sv.add_argument("--k", type=int, help="classes revealed for --output topk")
    sv.add_argument(
        "--defense",
        action="append",
        help="a defence preset, in order (repeat for a stack); e.g. --defense reverse-sigmoid",
    )
    sv.add_argument(
        "--db", help="ledger URL (default $STEALKIT_DB or sqlite:///stealkit-ledger.sqlite)"
    )
    sv.add_argument("--host", help="address to listen on (default 127.0.0.1, this machine only)")
    sv.add_argument("--port", type=int, help="port (default 8000)")
    sv.add_argument("--workers", type=int, help="server processes sharing the ledger (default 1)")
    sv.add_argument("--max-batch", type=int, help="most inputs per request (default 256)")
    sv.add_argument("--device", help="where the victim runs (default cpu)")
    sv.add_argument("--data-dir", help="folder holding on-disk data sets (victims trained here)")
    sv.set_defaults(func=_cmd_serve)

    vf = sub.add_parser(
        "verify",
        parents=[common],
        help="test whether a suspect model file is a copy of a victim (dataset inference)",
        description="Dataset inference (Maini et al., ICLR 2021; Dziedzic et al., NeurIPS 2022 for "
        "encoders): the owner shows the suspect m of the victim's private training images and m "
        "public ones; a suspect that treats the private ones as the victim does (farther from its "
        "decision boundary, or denser representations) is a copy. Prints the verdict, its "
        "p-value, m, and the queries used on the suspect and on the victim.",
    )
    vf.add_argument("--victim", required=True, help="registered victim name (the owner's model)")
    vf.add_argument("--victim-params", help="the victim's params as YAML/JSON")
    vf.add_argument(
        "--suspect", required=True, help="the suspect model: a .safetensors or .onnx file"
    )
    vf.add_argument(
        "--arch", help="the suspect's architecture, for a .safetensors file that does not record it"
    )
    vf.add_argument(
        "--private",
        help="the victim's training images, DATASET:SPLIT[:START:STOP] (default: as the victim's "
        "meta records them)",
    )
    vf.add_argument(
        "--public", help="unseen images, DATASET:SPLIT[:START:STOP] (default: the test split)"
    )
    vf.add_argument("--samples", type=int, help="m: images of each set shown to the suspect")
    vf.add_argument("--alpha", type=float, default=0.01, help="significance level (default 0.01)")
    vf.add_argument("--seed", type=int, default=0, help="draws the images and walk directions")
    vf.add_argument("--data-dir", help="folder holding on-disk data sets")
    vf.add_argument("--json", action="store_true", help="the report as JSON")
    vf.set_defaults(func=_cmd_verify)

    ks = sub.add_parser(
        "keys",
        parents=[common],
        help="create, list, inspect and revoke API keys of a served victim",
        description="Manage the keys of `stealkit serve`'s ledger. A key is printed once, at "
        "creation; the ledger stores only a salted hash of it.",
    )
    ks.add_argument(
        "--db", help="ledger URL (default $STEALKIT_DB or sqlite:///stealkit-ledger.sqlite)"
    )
    kss = ks.add_subparsers(dest="keys_command", required=True)
    kc = kss.add_parser("create", help="make a key and print it (once)")
    kc.add_argument("--name", default="", help="who the key is for")
    kc.add_argument("--budget", type=int, help="most inputs it may buy (default: no quota)")
    kc.add_argument("--price-per-1k", type=float, default=0.0, help="price of 1,000 inputs")
    kc.add_argument("--rate", type=float, help="inputs per second (default: no rate limit)")
    kc.add_argument("--burst", type=float, help="inputs a burst may hold (default: one second's)")
    kc.add_argument(
        "--trusted",
        action="store_true",
        help="the owner's evaluation key: clean answers, past the defences (for judges)",
    )
    kss.add_parser("list", help="every key with its counts")
    ku = kss.add_parser("usage", help="one key's usage as JSON")
    ku.add_argument("key_id", help="the key's id (the 8 hex digits after sk_)")
    kr = kss.add_parser("revoke", help="revoke a key: its requests get 403 from now on")
    kr.add_argument("key_id")
    ks.set_defaults(func=_cmd_keys)
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
