"""Where a grid's runs execute: one after another here (``local``), or as Ray tasks (``ray``).

Both stream each finished run into the same results store, so resume, the report and the
never-pay-twice rule work the same way. Ray is an optional extra (``pip install 'ray>=2.9'``,
installed by ``scripts/setup.sh``); without an ``address`` a local Ray instance is started.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import torch

from stealkit.errors import StealkitError
from stealkit.experiments.config import ExperimentConfig, RayExecutorConfig, parse_config
from stealkit.experiments.runner import RunContext, RunSpec, execute_run, summary
from stealkit.experiments.store import ResultStore, RunRecord, now

if TYPE_CHECKING:
    from stealkit.experiments.runner import Experiment

log = logging.getLogger(__name__)


class Executor(Protocol):
    def run(
        self,
        exp: Experiment,
        store: ResultStore,
        todo: list[RunSpec],
        invocation: int,
        tally: dict[str, Any],
    ) -> None: ...


def _record(store: ResultStore, rec: RunRecord, tally: dict[str, Any], i: int, n: int) -> None:
    tally["ran"] += 1  # the invocation's tally lives in store.data: one save writes both
    tally["queries_bought"] += rec.queries
    store.add(rec)
    print(f"[{i}/{n}] {summary(rec)}", file=sys.stderr, flush=True)


class LocalExecutor:
    """The runs in this process, in grid order."""

    def run(
        self,
        exp: Experiment,
        store: ResultStore,
        todo: list[RunSpec],
        invocation: int,
        tally: dict[str, Any],
    ) -> None:
        ctx = RunContext(exp.cfg, exp.device)
        exp.header(store, ctx)
        for i, spec in enumerate(todo, 1):
            rec = execute_run(
                ctx, spec, invocation=invocation, progress=exp.progress, models_dir=exp.models_dir
            )
            _record(store, rec, tally, i, len(todo))
            if rec.status == "interrupted":
                raise KeyboardInterrupt


# --- Ray -----------------------------------------------------------------------------------------
_CONTEXTS: dict[str, RunContext] = {}  # per Ray worker process: prepared once per experiment


def ray_task(
    cfg_data: dict[str, Any],
    spec: dict[str, Any],
    invocation: int,
    device: str,
    threads: int,
    counter: Any,
    models_dir: str | None = None,
) -> dict[str, Any]:
    """One run on a Ray worker; reports its queries bought to ``counter`` as it goes."""
    from stealkit.experiments.store import whole_hash

    torch.set_num_threads(max(1, threads))
    cfg = parse_config(cfg_data, "<ray task>", check=False)
    # the whole config (named attacks and defences too: the context builds them), not only
    # what the folder's runs share
    key = whole_hash(cfg.model_dump(mode="json")) + device
    if key not in _CONTEXTS:
        _CONTEXTS.clear()
        _CONTEXTS[key] = RunContext(cfg, torch.device(device))
    run = RunSpec(**spec)
    name = f"{run.attack}|{run.defense}|{run.budget}|{run.seed}"

    def report(ledger: Any) -> None:
        counter.report.remote(name, ledger.spent)

    return execute_run(
        _CONTEXTS[key],
        run,
        invocation=invocation,
        listener=report,
        models_dir=Path(models_dir) if models_dir is not None else None,
    ).to_dict()


class _Counter:
    """A Ray actor: the queries each run in flight has bought so far."""

    def __init__(self) -> None:
        self.spent: dict[str, int] = {}

    def report(self, name: str, spent: int) -> None:
        self.spent[name] = spent

    def get(self) -> dict[str, int]:
        return dict(self.spent)


class RayExecutor:
    """Each run as a Ray task with ``cpus_per_run`` CPUs and ``gpus_per_run`` GPUs."""

    def __init__(self, *, address: str | None, cpus_per_run: float, gpus_per_run: float) -> None:
        self.address, self.cpus, self.gpus = address, cpus_per_run, gpus_per_run

    def run(
        self,
        exp: Experiment,
        store: ResultStore,
        todo: list[RunSpec],
        invocation: int,
        tally: dict[str, Any],
    ) -> None:
        try:
            import ray
        except ImportError:
            raise StealkitError(
                "executor: ray needs the Ray package; run `bash scripts/setup.sh` (or pip "
                "install 'ray>=2.9'), or use executor: local"
            ) from None
        ctx = RunContext(exp.cfg, exp.device)  # the victim is trained and cached here, once
        exp.header(store, ctx)
        started = not ray.is_initialized()
        if started:
            ray.init(
                address=self.address,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.ERROR,
                ignore_reinit_error=True,
            )
        try:
            models = str(exp.models_dir) if exp.models_dir is not None else None
            self._run(ray, exp.cfg, store, todo, invocation, tally, str(exp.device), models)
        finally:
            if started:
                ray.shutdown()

    def _run(
        self,
        ray: Any,
        cfg: ExperimentConfig,
        store: ResultStore,
        todo: list[RunSpec],
        invocation: int,
        tally: dict[str, Any],
        device: str,
        models_dir: str | None,
    ) -> None:
        counter = ray.remote(num_cpus=0)(_Counter).remote()
        task = ray.remote(num_cpus=self.cpus, num_gpus=self.gpus, max_retries=0)(ray_task)
        data = cfg.model_dump(mode="json")
        threads = max(1, int(self.cpus))
        pending = {
            task.remote(data, s.as_dict(), invocation, device, threads, counter, models_dir): s
            for s in todo
        }
        done_n = 0
        try:
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                spec = pending.pop(ref)
                try:
                    rec = RunRecord.from_dict(ray.get(ref))
                except Exception as e:  # noqa: BLE001 - a lost worker fails its run, not the grid
                    rec = RunRecord(
                        spec.attack,
                        spec.defense,
                        spec.budget,
                        spec.seed,
                        status="failed",
                        error=f"the Ray task failed: {type(e).__name__}: {e}",
                        started=now(),
                        invocation=invocation,
                    )
                done_n += 1
                _record(store, rec, tally, done_n, len(todo))
        except KeyboardInterrupt:
            spent = ray.get(counter.get.remote(), timeout=10)
            for ref in pending:
                ray.cancel(ref, force=True)
            for spec in pending.values():
                name = f"{spec.attack}|{spec.defense}|{spec.budget}|{spec.seed}"
                if name in spent:  # it had started buying: record what it bought
                    rec = RunRecord(
                        spec.attack,
                        spec.defense,
                        spec.budget,
                        spec.seed,
                        status="interrupted",
                        error="interrupted by the user on a Ray worker",
                        ledger={"budget": spec.budget, "spent": spent[name]},
                        invocation=invocation,
                        started=now(),
                    )
                    done_n += 1
                    _record(store, rec, tally, done_n, len(todo))
            raise


def executor_for(cfg: ExperimentConfig) -> Executor:
    e = cfg.executor
    if isinstance(e, RayExecutorConfig):
        return RayExecutor(
            address=e.address, cpus_per_run=e.cpus_per_run, gpus_per_run=e.gpus_per_run
        )
    return LocalExecutor()
