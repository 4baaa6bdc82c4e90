"""Turn an ExperimentConfig into runs, a results store and a report.

One path for every family: the victim gives the thief's oracle and the judge's unmetered one; the
family (``Victim.kind``) gives the surrogate and the judge; the attack's declarations say whether
it gets the pool. The runner never branches on a family or an attack by name.

    results = Experiment(cfg, Path("runs/default")).run()

A grid resumes: runs that already succeeded with the same configuration are skipped and buy
nothing; an interrupted run is recorded as ``interrupted`` with the queries it bought.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import re
import sys
import time
import traceback
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stealkit import __version__
from stealkit.attacks import build_attack
from stealkit.data.pool import QueryPool
from stealkit.defenses import Defense, build_defense, defense_repr
from stealkit.errors import ConfigError, QueryRefused
from stealkit.experiments.checks import load_part, victim_params
from stealkit.experiments.config import ExperimentConfig
from stealkit.experiments.judges import Family, Judge, get_family
from stealkit.experiments.store import (
    ResultStore,
    RunRecord,
    config_hash,
    now,
    shared_hash,
    succeeded,
    whole_hash,
)
from stealkit.experiments.transfer import TransferJudge
from stealkit.oracle import Ledger, Oracle
from stealkit.progress import ledger_tracker, reporting
from stealkit.train.loop import default_device
from stealkit.victims.base import Victim

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunSpec:
    attack: str
    defense: str
    budget: int
    seed: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "attack": self.attack,
            "defense": self.defense,
            "budget": self.budget,
            "seed": self.seed,
        }


def expand_grid(cfg: ExperimentConfig) -> list[RunSpec]:
    """Every (attack, defence, budget, seed) of every grid block, without repeats, in order."""
    seen: dict[RunSpec, None] = {}
    for g in cfg.grid:
        for a, d, b, s in itertools.product(g.attacks, g.defenses, g.budgets, g.seeds):
            seen.setdefault(RunSpec(a, d, b, s), None)
    return list(seen)


def resolve_device(name: str) -> torch.device:
    return default_device() if name == "auto" else torch.device(name)


def experiment_hash(cfg: ExperimentConfig) -> str:
    """What every run of the folder shares (victim, pool, judge, surrogate, price...), but not
    the grid (which may grow and resume), nor the named attacks and defences (new ones may join;
    a changed one is caught by ``changed_definitions``), nor where it runs (device, data_dir,
    executor) nor the folder's name."""
    return shared_hash(cfg.model_dump(mode="json"))


def changed_definitions(cfg: ExperimentConfig, records: list[dict[str, Any]]) -> list[str]:
    """The attack and defence names of ``cfg`` whose definition differs from the one that made
    a finished run stored in ``records``: running them would replace those results."""
    changed: set[str] = set()
    for r in map(RunRecord.from_dict, records):
        if r.status not in ("ok", "blocked") or r.config_hash is None:
            continue
        try:
            a_type, a_params = cfg.attack_spec(r.attack)
            cfg.defense_spec(r.defense)
        except KeyError:
            continue  # a name the config no longer has: its runs are kept and never re-run
        spec = RunSpec(r.attack, r.defense, r.budget, r.seed)
        if config_hash(run_config(cfg, spec)) == r.config_hash:
            continue
        now_attack = {"name": r.attack, "type": a_type, "params": a_params}
        if r.config.get("attack") != now_attack:
            changed.add(f"attack {r.attack!r}")
        else:
            changed.add(f"defence {r.defense!r}")
    return sorted(changed)


def check_definitions(out_dir: Path, cfg: ExperimentConfig, records: list[dict[str, Any]]) -> None:
    """ConfigError when ``cfg`` redefines a name whose finished runs ``out_dir`` holds."""
    changed = changed_definitions(cfg, records)
    if changed:
        raise ConfigError(
            f"{out_dir} holds finished runs of {', '.join(changed)} made with another "
            "definition; running this config would replace them. Nothing was run. Give the "
            "changed one a new name (both are then kept side by side), or add --fresh to start "
            "the folder over (the old results.json is kept beside)"
        )


def run_config(cfg: ExperimentConfig, spec: RunSpec) -> dict[str, Any]:
    """The full configuration of one run, as recorded with it."""
    a_type, a_params = cfg.attack_spec(spec.attack)
    return {
        "victim": cfg.victim.model_dump(mode="json"),
        "pool": cfg.pool.model_dump(mode="json") if cfg.pool is not None else None,
        "eval": cfg.eval.model_dump(mode="json"),
        "probe": cfg.probe.model_dump(mode="json") if cfg.probe is not None else None,
        "surrogate": cfg.surrogate.model_dump(mode="json"),
        "transfer": cfg.transfer.model_dump(mode="json") if cfg.transfer is not None else None,
        "curve_every": cfg.curve_every,
        "attack": {"name": spec.attack, "type": a_type, "params": a_params},
        "defense": {"name": spec.defense, "spec": list(cfg.defense_spec(spec.defense))},
        "budget": spec.budget,
        "seed": spec.seed,
        "price_per_1k": cfg.price_per_1k,
    }


def already_done(cfg: ExperimentConfig, records: list[dict[str, Any]]) -> set[RunSpec]:
    """The runs of ``cfg``'s grid that ``records`` (a results.json's runs) hold as succeeded with
    the same configuration: what a run skips."""
    return {
        s
        for s in expand_grid(cfg)
        if succeeded(
            records, (s.attack, s.defense, s.budget, s.seed), config_hash(run_config(cfg, s))
        )
    }


_NAME = re.compile(r"[A-Za-z_]\w*")


def repr_parts(text: str, key: str = "") -> set[str]:
    """A repr such as ``Name(a=1, b=X(c=2))`` as its leaves, ``{"Name", "a=1", "b:X", "b.c=2"}``:
    what two reprs are compared by, so that a parameter added since reads as one new leaf."""
    head, _, body = text.partition("(")
    if not (body.endswith(")") and _NAME.fullmatch(head)):
        return {f"{key}={text}" if key else text}
    parts, depth, cur = [], 0, ""
    for ch in body[:-1] + ",":
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    out = {f"{key}:{head}" if key else head}
    for i, part in enumerate(p for p in parts if p):
        name, eq, value = part.partition("=")
        if eq and _NAME.fullmatch(name.strip()):
            child = f"{key}.{name.strip()}" if key else name.strip()
            out |= repr_parts(value.strip(), child)
        else:
            out |= repr_parts(part, f"{key}[{i}]" if key else f"[{i}]")
    return out


def stale_warnings(
    cfg: ExperimentConfig, records: list[dict[str, Any]], done: set[RunSpec]
) -> list[str]:
    """For the runs a re-run skips: those whose stored attack or defence is not what today's
    code builds from the same config (a default changed since they ran). Their results are
    kept; each message names the parameters that differ and how to re-run them."""
    stored: dict[tuple[str, str], set[tuple[str, str]]] = defaultdict(set)
    keys = {(s.attack, s.defense, s.budget, s.seed) for s in done}
    for r in map(RunRecord.from_dict, records):
        if r.key in keys and r.status in ("ok", "blocked") and r.attack_repr:
            stored[(r.attack, r.defense)].add((r.attack_repr, r.defense_repr or defense_repr(None)))
    behind: dict[tuple[str, str], list[str]] = defaultdict(list)

    @functools.cache
    def attack_now(name: str) -> str:
        a_type, a_params = cfg.attack_spec(name)
        return repr(build_attack(a_type, **a_params))

    @functools.cache
    def defence_now(name: str) -> str:
        return defense_repr(build_run_defense(cfg, name))

    for attack, defense in sorted({(s.attack, s.defense) for s in done}):
        try:
            now_repr = (attack_now(attack), defence_now(defense))
        except Exception:  # noqa: BLE001 - a config error is reported when the run is attempted
            continue
        for old in sorted(stored.get((attack, defense), set()) - {now_repr}):
            if any(" at 0x" in text for text in (*old, *now_repr)):
                continue  # an object's default repr (its address) tells nothing about defaults
            diff = []
            for kind, o, n in zip(("attack", "defence"), old, now_repr, strict=True):
                today = repr_parts(n)
                shown = {t.partition("=")[0] for t in today}
                # a parameter that only appears today, or that today's repr no longer shows
                # (it does not apply, e.g. a bandit setting of random sampling), is no default
                # that changed
                gone = {g for g in repr_parts(o) - today if g.partition("=")[0] in shown}
                if gone:
                    names = {g.partition("=")[0] for g in gone}
                    new = sorted(t for t in today if t.partition("=")[0] in names)
                    diff.append(f"{kind} {', '.join(sorted(gone))} (today: {', '.join(new)})")
            if diff:
                behind[(attack, "; ".join(diff))].append(defense)
    return [
        f"{attack} (behind {', '.join(defences)}): stored runs were made by older code defaults: "
        f"{diff}. Their results are kept and skipped; to measure today's code re-run them with "
        "--fresh (or a new --out); to reproduce the stored ones, pin the old values in the config "
        "(a new experiment, in its own folder)"
        for (attack, diff), defences in behind.items()
    ]


def build_run_defense(cfg: ExperimentConfig, name: str) -> Defense | None:
    t, p = cfg.defense_spec(name)
    return None if t == "none" else build_defense(t, **p)


class RunContext:
    """What every run of one experiment shares, prepared once per process: the victim, its
    family and judge, the thief's pool, the transfer judge."""

    def __init__(self, cfg: ExperimentConfig, device: torch.device) -> None:
        from stealkit.victims.registry import load_victim

        self.cfg, self.device = cfg, device
        self.victim: Victim = load_victim(
            cfg.victim.name, **victim_params(cfg.victim, cfg.data_dir)
        )
        self.family: Family = get_family(self.victim.kind)
        ev = load_part(cfg.eval, cfg.data_dir)
        probe = load_part(cfg.probe, cfg.data_dir) if cfg.probe is not None else None
        self.eval_set = ev
        self.judge: Judge = self.family.judge(
            self.victim,
            eval_set=ev,
            probe_set=probe,
            probe_epochs=cfg.probe.epochs if cfg.probe is not None else 30,
            device=device,
        )
        self.pool: QueryPool | None = None
        if cfg.pool is not None:
            self.pool = QueryPool(load_part(cfg.pool, cfg.data_dir), self.victim.spec)
        self.transfer: TransferJudge | None = None
        if cfg.transfer is not None and self.family.transfer:
            self.transfer = TransferJudge(
                self.victim,
                ev if cfg.transfer.data is None else load_part(cfg.transfer.data, cfg.data_dir),
                cfg.transfer,
                device=device,
            )

    def facts(self) -> dict[str, Any]:
        """The victim's facts for the results' header."""
        cfg, v = self.cfg, self.victim
        return {
            "name": v.name,
            "repr": repr(v),
            "kind": v.kind,
            "meta": v.meta,
            "test_accuracy": self.judge.victim_accuracy,
            "eval_set": self.eval_set.name,
            "eval_size": len(self.eval_set),
            "pool": self.pool.name if self.pool is not None else None,
            "pool_size": len(self.pool) if self.pool is not None else 0,
            "oracle": repr(v.oracle(output=cfg.victim.output, k=cfg.victim.k, ledger=Ledger())),
            "output": cfg.victim.output,
        }


def model_file_name(spec: RunSpec) -> str:
    """The file a run's stolen model is saved to, inside the experiment's ``models/``."""
    safe = [re.sub(r"[^A-Za-z0-9_.-]", "_", str(v)) for v in spec.as_dict().values()]
    return "__".join(safe) + ".safetensors"


def save_stolen(
    ctx: RunContext, spec: RunSpec, surrogate: nn.Module, output_dim: int, models_dir: Path
) -> str:
    """Save a run's stolen model where ``stealkit verify`` can read it; its path as recorded."""
    from stealkit.models.files import save_model

    spec_in = ctx.victim.spec
    path = models_dir / model_file_name(spec)
    save_model(
        surrogate,
        path,
        arch=ctx.cfg.surrogate.arch,
        in_channels=spec_in.channels,
        num_classes=output_dim,
        image_size=spec_in.height,
        extra={"victim": ctx.victim.name, **{k: str(v) for k, v in spec.as_dict().items()}},
    )
    return f"{models_dir.name}/{path.name}"


def execute_run(
    ctx: RunContext,
    spec: RunSpec,
    *,
    invocation: int | None = None,
    progress: bool = False,
    listener: Callable[[Ledger], None] | None = None,
    models_dir: Path | None = None,
) -> RunRecord:
    """One run: the thief's oracle on a fresh ledger, the attack, the judge. Never raises for a
    failed run (the record says why); an interrupted run is returned with status
    ``interrupted`` and the queries it bought. With ``models_dir`` the stolen model is saved
    there (``RunRecord.model_file``)."""
    cfg = ctx.cfg
    a_type, a_params = cfg.attack_spec(spec.attack)
    rec = RunRecord(
        spec.attack,
        spec.defense,
        spec.budget,
        spec.seed,
        surrogate=cfg.surrogate.arch,
        started=now(),
        invocation=invocation,
        config=run_config(cfg, spec),
    )
    rec.config_hash = config_hash(rec.config)
    bar, on_bar = ledger_tracker(f"{spec.attack} queries", spec.budget if progress else 0)

    def on_charge(ledger: Ledger) -> None:
        on_bar(ledger)
        if listener is not None:
            listener(ledger)

    ledger = Ledger(budget=spec.budget, price_per_1k=cfg.price_per_1k, on_charge=on_charge)
    t = time.time()
    oracle: Oracle | None = None
    try:
        defense = build_run_defense(cfg, spec.defense)
        attack = build_attack(a_type, **a_params)
        rec.attack_repr = repr(attack)
        rec.defense_repr = defense_repr(defense)
        oracle = ctx.victim.oracle(
            output=cfg.victim.output,
            k=cfg.victim.k,
            defense=defense,
            ledger=ledger,
            device=ctx.device,
        )
        attack.check_oracle(oracle)  # before anything is bought
        with torch.random.fork_rng(devices=[]):  # seeded initial weights, global RNG untouched
            torch.manual_seed(spec.seed)
            surrogate = ctx.family.surrogate(cfg.surrogate.arch, ctx.victim.spec, oracle.output_dim)
        curve = None
        if cfg.curve_every is not None:
            at = list(range(cfg.curve_every, spec.budget, cfg.curve_every)) + [spec.budget]
            curve = ctx.judge.curve(at)
        t_attack = time.time()
        result = attack.run(
            oracle,
            pool=ctx.pool if attack.needs_pool else None,
            surrogate=surrogate,
            budget=spec.budget,
            seed=spec.seed,
            device=ctx.device,
            monitor=curve,
        )
        rec.attack_seconds = time.time() - t_attack
        rec.curve = curve.points if curve is not None else None
        rec.metrics = ctx.judge.evaluate(result.surrogate)
        if defense is not None:  # a watermark that came through the answers, say
            rec.metrics.update(
                defense.ownership(_labels_of(result.surrogate, ctx.device), oracle.client)
            )
        rec.info = result.info
        if models_dir is not None:
            try:
                rec.model_file = save_stolen(
                    ctx, spec, result.surrogate, oracle.output_dim, models_dir
                )
            except (OSError, ValueError) as e:  # the results stand; only the file is missing
                log.warning("run %s: could not save the stolen model: %s", spec, e)
        if ctx.transfer is not None:
            rec.transfer = ctx.transfer.table(result.surrogate)
    except KeyboardInterrupt:
        rec.status, rec.error = "interrupted", "interrupted by the user (SIGINT) during the run"
    except QueryRefused as e:  # a query monitor caught the thief: an outcome, not a failure
        rec.status, rec.error = (
            "blocked",
            f"blocked by the defence after {ledger.spent} queries: {e}",
        )
    except Exception as e:  # noqa: BLE001 - one failed run must not lose the others
        log.error("run %s failed:\n%s", spec, traceback.format_exc())
        rec.status, rec.error = "failed", f"{type(e).__name__}: {e}"
    finally:
        bar.close()
    rec.ledger = ledger.state_dict()
    rec.oracle = oracle.stats() if oracle is not None else {}
    rec.wall_seconds = time.time() - t
    rec.threads = torch.get_num_threads()
    return rec


def _labels_of(
    model: torch.nn.Module, device: torch.device
) -> Callable[[torch.Tensor], torch.Tensor]:
    from stealkit.train.loop import predict

    return lambda x: predict(model, x, device=device).argmax(1)


def machine() -> dict[str, Any]:
    """Where the results were made (a run's own thread count is in its record)."""
    import os
    import platform

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpus": os.cpu_count(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "processor": platform.processor() or platform.machine(),
    }


def summary(rec: RunRecord) -> str:
    m = rec.metrics or {}
    shown = [  # a metric that does not exist (no labels: no accuracy) is left out, not 'nan'
        f"{k} {v:.4f}"
        for k in ("agreement", "accuracy")
        if isinstance(v := m.get(k), int | float) and math.isfinite(v)
    ]
    what = (
        ", ".join(shown) or "no metrics"
        if rec.status == "ok"
        else f"{rec.status.upper()}: {rec.error}"
    )
    bought = f"{rec.queries} q bought"
    if "bought" in rec.oracle:  # a served victim: what the server charged, the rest from the cache
        bought = (
            f"{rec.queries} q: {rec.oracle['bought']} bought from the server, "
            f"{rec.oracle.get('cache_hits', 0)} from the answer cache"
        )
    return (
        f"{rec.attack} | {rec.defense} | {rec.budget} q | seed {rec.seed}: {what} "
        f"({bought}, {rec.wall_seconds:.0f} s)"
    )


class Experiment:
    """Runs a config's grid into ``out_dir``, resuming what the folder already holds.

    Args:
        cfg: the validated config.
        out_dir: the experiment's folder (``runs/<name>``).
        progress: show progress inside each run: bars when stderr is a terminal, else a line
            about every 10% of the queries and training steps.
        fresh: redo every run (the folder's old results are kept beside, renamed).
    """

    def __init__(
        self,
        cfg: ExperimentConfig,
        out_dir: Path,
        *,
        progress: bool = True,
        fresh: bool = False,
    ) -> None:
        self.cfg, self.out_dir, self.fresh = cfg, out_dir, fresh
        self.progress = progress
        self.device = resolve_device(cfg.device)

    @property
    def models_dir(self) -> Path | None:
        """Where the stolen models go (``<out>/models``), or None when the config says not to."""
        return self.out_dir.resolve() / "models" if self.cfg.save_models else None

    def run(self) -> dict[str, Any]:
        cfg = self.cfg
        store = ResultStore(
            self.out_dir,
            experiment_hash(cfg),
            fresh=self.fresh,
            legacy=whole_hash(cfg.model_dump(mode="json")),
        )
        check_definitions(self.out_dir, cfg, store.data["runs"])
        store.acquire()
        try:
            with reporting(enabled=self.progress):
                return self._run(store)
        finally:
            store.release()

    def _run(self, store: ResultStore) -> dict[str, Any]:
        from stealkit.experiments.executors import executor_for

        cfg = self.cfg
        t0 = time.time()
        runs = expand_grid(cfg)
        inv: dict[str, Any] = {
            "started": now(),
            "finished": None,
            "status": "running",
            "ran": 0,
            "skipped": 0,
            "queries_bought": 0,
            "stealkit_version": __version__,
        }
        invocations = store.data["invocations"] + [inv]
        number = len(invocations)
        done = already_done(cfg, store.data["runs"])
        todo = [spec for spec in runs if spec not in done]
        inv["skipped"] = len(done)
        stale = stale_warnings(cfg, store.data["runs"], done)
        store.update(
            name=cfg.name,
            created=store.data.get("created", now()),
            stealkit_version=__version__,
            device=str(self.device),
            config=cfg.model_dump(mode="json"),
            machine=machine(),
            planned=[s.as_dict() for s in runs],
            complete=False,
            invocations=invocations,
        )
        print(
            f"stealkit run '{cfg.name}': {len(runs)} runs planned, {inv['skipped']} already done "
            f"(skipped, nothing bought), {len(todo)} to run",
            file=sys.stderr,
        )
        warnings = list(stale)
        if todo:
            from stealkit.experiments.checks import evaluation_warnings

            warnings += evaluation_warnings(cfg)
        for w in warnings:
            print(f"stealkit: warning: {w}", file=sys.stderr)
        if todo or stale:
            store.update(warnings=warnings)
        status = "complete"
        try:
            if todo:
                executor_for(cfg).run(self, store, todo, number, inv)
        except KeyboardInterrupt:
            status = "interrupted"
            raise
        except BaseException:
            status = "failed"
            raise
        finally:
            inv["status"], inv["finished"] = status, now()
            ok = {r.key for r in store.records() if r.status in ("ok", "failed", "blocked")}
            complete = status == "complete" and all(
                (s.attack, s.defense, s.budget, s.seed) in ok for s in runs
            )
            store.update(
                invocations=invocations,
                complete=complete,
                wall_seconds=store.data.get("wall_seconds", 0.0) + (time.time() - t0),
            )
            self._report(store)
        return store.data

    def header(self, store: ResultStore, ctx: RunContext) -> None:
        """The victim's facts and what each defence of the grid costs honest users."""
        names = list(dict.fromkeys(s.defense for s in expand_grid(self.cfg)))
        known = {d["name"]: d for d in store.data.get("defenses", [])}
        for name in names:
            if name not in known:
                known[name] = ctx.judge.defense_utility(name, build_run_defense(self.cfg, name))
        facts: dict[str, Any] = {"victim": ctx.facts(), "defenses": list(known.values())}
        if ctx.transfer is not None and "transfer_baseline" not in store.data:
            base = ctx.transfer.baseline(self.cfg.data_dir, ctx.judge.evaluate)
            if base is not None:
                facts["transfer_baseline"] = base
        store.update(**facts)
        log.info(
            "victim %s: accuracy %s on %s",
            ctx.victim.name,
            ctx.judge.victim_accuracy,
            ctx.eval_set.name,
        )

    def _report(self, store: ResultStore) -> None:
        from stealkit.report import write_report

        if store.data.get("victim") is None:
            return
        try:
            write_report(store.data, self.out_dir / "report.html")
        except Exception:  # noqa: BLE001 - the results are saved; the report can be rebuilt
            log.exception("could not write the report; rebuild it with `stealkit report`")
