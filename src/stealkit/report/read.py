"""Reading a results.json: loading it with clear errors, and reading its values tolerantly.

    results = load_results(Path("runs/default/results.json"))
    ok = [r for r in records(results, "runs") if is_ok(r)]
    agreement = num(get(ok[0], "metrics", "agreement"))   # a float, or None

Results written by older stealkit versions may lack keys, and the runner rewrites the file after
every run, so a grid that was interrupted leaves a valid but partial file. Every accessor here
answers None (or an empty list) for what is missing instead of raising; nothing is guessed.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from stealkit.errors import StealkitError

Setting = tuple[Any, Any, Any]  # (attack, defence, budget)
RunKey = tuple[tuple[int, float, str], ...]

_REBUILD = "re-run `stealkit run` with the same config to rebuild it"


def load_results(path: Path) -> dict[str, Any]:
    """Read the ``results.json`` that ``stealkit run`` writes.

    Args:
        path: the results file.

    Returns:
        The results as a dict; at least its ``"runs"`` value is a list.

    Raises:
        StealkitError: the file is missing, is a directory, is not valid JSON, or does not hold a
            mapping with a ``"runs"`` list. The message names the problem and the fix.
    """
    path = Path(path)
    if path.is_dir():
        hint = path / "results.json"
        where = f"give {hint}" if hint.is_file() else "give the results.json of a run inside it"
        raise StealkitError(f"{path} is a directory, not a results file; {where}")
    if not path.exists():
        raise StealkitError(
            f"{path} does not exist; give the results.json that `stealkit run` wrote "
            "(runs/<name>/results.json), or run the experiment first"
        )
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise StealkitError(f"cannot read {path}: {e.strerror or e}; check its permissions") from e
    try:
        results = json.loads(raw)
    except ValueError as e:  # json.JSONDecodeError, or UnicodeDecodeError for non-text bytes
        raise StealkitError(
            f"{path} is not valid JSON (truncated? it is rewritten atomically after every run, "
            f"so a truncated file was cut by something else): {e}; {_REBUILD}"
        ) from e
    if not isinstance(results, dict):
        raise StealkitError(
            f"{path} holds a JSON {_json_type(results)} at the top level, not an object with "
            f'"runs"; it is not a stealkit results.json: give the one `stealkit run` wrote, or '
            f"{_REBUILD}"
        )
    if not isinstance(results.get("runs"), list):
        found = (
            f'its "runs" is a JSON {_json_type(results["runs"])}'
            if "runs" in results
            else f"its keys are {', '.join(map(repr, list(results)[:8])) or 'none'}"
        )
        raise StealkitError(
            f'{path} has no "runs" list ({found}), so it is not a stealkit results.json: give '
            f"the one `stealkit run` wrote, or {_REBUILD}"
        )
    return results


def _json_type(value: Any) -> str:
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")


def get(obj: Any, *keys: str) -> Any:
    """``obj[k1][k2]...``, or None where any level is missing or not a mapping."""
    for key in keys:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def num(value: Any) -> float | None:
    """A finite number as float; None for anything else (missing, bool, NaN, text)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def records(results: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    """The mappings in the list ``results[key]``; anything else in it, or no list, is skipped."""
    items = results.get(key)
    return [item for item in items if isinstance(item, Mapping)] if isinstance(items, list) else []


def is_ok(run: Mapping[str, Any]) -> bool:
    """Whether a run finished; runs of old results without a status did."""
    return run.get("status", "ok") == "ok"


def is_interrupted(run: Mapping[str, Any]) -> bool:
    """Whether a run was stopped part-way (its ledger holds what it bought until then)."""
    return run.get("status") == "interrupted"


def is_done(run: Mapping[str, Any]) -> bool:
    """Whether a run needs no re-run: it finished, or failed on its own (not interrupted)."""
    return is_ok(run) or run.get("status") in ("failed", "blocked")


def sort_key(value: Any) -> tuple[int, float, str]:
    """Numbers first, in numeric order, then everything else by its text."""
    number = num(value)
    return (0, number, "") if number is not None else (1, 0.0, str(value))


def run_key(run: Mapping[str, Any]) -> RunKey:
    """A run's (attack, defence, budget, seed) as a sort key; ``1000`` and ``1000.0`` are equal."""
    return tuple(sort_key(run.get(k)) for k in ("attack", "defense", "budget", "seed"))


def by_setting(runs: Sequence[Mapping[str, Any]]) -> dict[Setting, list[Mapping[str, Any]]]:
    """Runs grouped by (attack, defence, budget), in sorted order, seeds within each group."""
    groups: dict[Setting, list[Mapping[str, Any]]] = defaultdict(list)
    for run in sorted(runs, key=run_key):
        groups[(run.get("attack"), run.get("defense"), run.get("budget"))].append(run)
    return dict(groups)


def metric(runs: Iterable[Mapping[str, Any]], *keys: str) -> list[float]:
    """The known values of ``run[k1][k2]...`` over ``runs``; missing ones are left out."""
    return [v for v in (num(get(r, *keys)) for r in runs) if v is not None]


def is_encoder(results: Mapping[str, Any]) -> bool:
    """Whether the runs judged encoders by linear probes (their config names a probe set)."""
    return any(get(r, "config", "probe") is not None for r in records(results, "runs"))


def planned_runs(results: Mapping[str, Any]) -> list[Mapping[str, Any]] | None:
    """Every run of the config's grid, each once; None for results that do not record a plan."""
    if not isinstance(results.get("planned"), list):
        return None
    unique: dict[RunKey, Mapping[str, Any]] = {}
    for run in records(results, "planned"):
        unique.setdefault(run_key(run), run)
    return list(unique.values())


def missing_runs(
    planned: Sequence[Mapping[str, Any]], runs: Sequence[Mapping[str, Any]]
) -> list[Mapping[str, Any]]:
    """The planned runs without a record that finished or failed (interrupted ones are missing)."""
    done = {run_key(r) for r in runs if is_done(r)}
    return sorted((p for p in planned if run_key(p) not in done), key=run_key)
