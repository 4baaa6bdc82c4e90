"""Typed run records and the results store: merged, atomic, resumable, never overwritten.

``results.json`` in an experiment's folder holds one record per (attack, defence, budget, seed).
The store reads what the folder already holds, refuses a config whose hash differs from the one
the folder was made with (another experiment's results are never overwritten), merges each new
record in place of an older one with the same key, and rewrites the file atomically (a temporary
file, then a rename) after every record, so an interrupted grid keeps everything it finished.
A run whose key and configuration hash already succeeded is skipped: its queries are never
bought twice. One ``stealkit run`` at a time works on a folder (an exclusive lock file).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import fcntl
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from stealkit.errors import ConfigError, StealkitError

RESULTS = "results.json"
LOCK = ".stealkit.lock"
Key = tuple[str, str, int, int]


def config_hash(data: Any) -> str:
    """A short, stable hash of a JSON-able value (keys sorted)."""
    blob = json.dumps(data, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


_NOT_RESULTS = ("name", "grid", "device", "data_dir", "executor", "save_models")
_PER_RUN = ("attacks", "defenses")  # named definitions: each run's own hash covers its pair


def shared_hash(dump: dict[str, Any]) -> str:
    """The folder hash of a config's JSON dump: what all its runs share (see
    ``runner.experiment_hash``)."""
    return config_hash({k: v for k, v in dump.items() if k not in _NOT_RESULTS + _PER_RUN})


def whole_hash(dump: dict[str, Any]) -> str:
    """Everything of a config's dump that determines its runs' results, the named attacks and
    defences included; what an older stealkit used as the folder hash."""
    return config_hash({k: v for k, v in dump.items() if k not in _NOT_RESULTS})


def now() -> str:
    return dt.datetime.now().isoformat(timespec="seconds")


@dataclass
class RunRecord:
    """One run of a grid and everything needed to tell what produced it.

    ``status`` is "ok", "blocked" (a query monitor refused the thief; ``ledger`` holds the
    queries until then), "failed" (``error`` says why) or "interrupted" (stopped by the user; its
    ``ledger`` holds the queries it bought before it stopped).
    """

    attack: str
    defense: str
    budget: int
    seed: int
    status: str = "ok"
    error: str | None = None
    surrogate: str | None = None
    attack_repr: str | None = None
    defense_repr: str | None = None
    metrics: dict[str, float | None] | None = None
    info: dict[str, Any] = field(default_factory=dict)
    curve: list[dict[str, float | None]] | None = None
    transfer: list[dict[str, Any]] | None = None
    ledger: dict[str, Any] = field(default_factory=dict)
    oracle: dict[str, Any] = field(default_factory=dict)  # a remote oracle's own counts
    model_file: str | None = None  # the stolen model, relative to the experiment's folder
    wall_seconds: float = 0.0
    attack_seconds: float | None = None  # the attack alone, without judging
    threads: int | None = None  # torch CPU threads: results repeat exactly at the same count
    started: str | None = None
    invocation: int | None = None
    config_hash: str | None = None
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> Key:
        return (self.attack, self.defense, int(self.budget), int(self.seed))

    @property
    def queries(self) -> int:
        return int(self.ledger.get("spent", 0) or 0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunRecord:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


def _json_default(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return repr(o)


def check_same_experiment(
    out_dir: Path, data: dict[str, Any], experiment_hash: str, *, legacy: str | None = None
) -> None:
    """ConfigError unless the results ``data`` of ``out_dir`` were made by this experiment.

    A folder of an older stealkit (whose hash covered the named attacks and defences too) is
    accepted when the config stored in it shares this one's hash, or when ``legacy``, this
    config's ``whole_hash``, is the hash it holds."""
    old = data.get("config_hash")
    stored = data.get("config")
    older = (legacy is not None and old == legacy) or (
        isinstance(stored, dict)
        and old == whole_hash(stored)
        and shared_hash(stored) == experiment_hash
    )
    if old != experiment_hash and not older:
        what = f"hash {old}" if old else "no config hash (an older stealkit)"
        raise ConfigError(
            f"{out_dir} holds results of another experiment ({what}; this config is "
            f"{experiment_hash}). Nothing was run. To keep both, give this one another "
            "folder (--out, or --name); to replace them, add --fresh (the old results.json "
            "is kept beside as results.<time>.json)"
        )


def succeeded(runs: list[dict[str, Any]], key: Key, run_hash: str) -> bool:
    """Whether ``runs`` (results.json records) hold a finished run of ``key`` with ``run_hash``:
    ok, or blocked by a query monitor (a repeat would be blocked at the same query again)."""
    return any(
        r.key == key and r.status in ("ok", "blocked") and r.config_hash == run_hash
        for r in map(RunRecord.from_dict, runs)
    )


class ResultStore:
    """The results of one experiment folder.

    Args:
        out_dir: the folder (``runs/<name>``); created if missing.
        experiment_hash: the hash of what every run shares (not the grid, which may grow and
            resume, nor the named attacks and defences, which each run's own hash covers); a
            folder made with another hash is refused.
        fresh: start over; the folder's old results are kept beside as ``results.<time>.json``.
        legacy: the config's hash as an older stealkit computed it (``whole_hash``): a folder
            holding it is the same experiment, and is rewritten with today's hash.
    """

    def __init__(
        self,
        out_dir: Path,
        experiment_hash: str,
        *,
        fresh: bool = False,
        legacy: str | None = None,
    ) -> None:
        self.out_dir = out_dir
        self.path = out_dir / RESULTS
        self.experiment_hash = experiment_hash
        self._lock: IO[str] | None = None
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            probe = out_dir / ".write-test"
            probe.write_text("")
            probe.unlink()
        except OSError as e:
            raise StealkitError(
                f"cannot write results to {out_dir} ({e.strerror or e}); pick a writable "
                "folder with --out"
            ) from None
        self.data: dict[str, Any] = self._read() if self.path.exists() else {}
        if self.data and fresh:
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            self.path.replace(out_dir / f"results.{stamp}.json")
            self.data = {}
        if self.data:
            check_same_experiment(out_dir, self.data, experiment_hash, legacy=legacy)
        self.data["config_hash"] = experiment_hash
        self.data.setdefault("runs", [])
        self.data.setdefault("invocations", [])

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as e:
            raise StealkitError(
                f"{self.path} cannot be read ({e}); move it away or add --fresh to start over"
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("runs"), list):
            raise StealkitError(
                f"{self.path} is not a stealkit results file; move it away or add --fresh"
            )
        return data

    # --- locking: one stealkit run per folder ----------------------------------------------------
    def acquire(self) -> None:
        """Take the folder's exclusive lock, or explain who holds it."""
        f = open(self.out_dir / LOCK, "a+")  # noqa: SIM115 - held until release()
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            who = f.read().strip() or "another process"
            f.close()
            raise StealkitError(
                f"{self.out_dir} is in use by another stealkit run ({who}); wait for it to end "
                "or give this run another folder (--out or --name)"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} since {now()}\n")
        f.flush()
        self._lock = f

    def release(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    # --- records ---------------------------------------------------------------------------------
    def records(self) -> list[RunRecord]:
        return [RunRecord.from_dict(r) for r in self.data["runs"]]

    def add(self, record: RunRecord) -> None:
        """Merge ``record`` (replacing an older record of the same key) and save."""
        runs = [r for r in self.data["runs"] if RunRecord.from_dict(r).key != record.key]
        runs.append(record.to_dict())
        self.data["runs"] = runs
        self.save()

    def update(self, **facts: Any) -> None:
        """Set top-level facts (victim, defences, planned runs...) and save."""
        self.data.update(facts)
        self.save()

    def save(self) -> None:
        tmp = self.path.with_name(f".{RESULTS}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.data, indent=2, default=_json_default))
        tmp.replace(self.path)
