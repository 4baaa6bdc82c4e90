"""The report's content as data, shared by the HTML page and the Markdown: facts and tables.

    facts = header_facts(results)                  # [("Experiment", "default"), ...]
    table = runs_table([r for r in records(results, "runs") if is_ok(r)])
    table.headers, table.rows                      # text cells, already formatted

Every cell is plain text (not yet escaped); the renderers escape it for their format.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stealkit.report import format as fmt
from stealkit.report.read import (
    by_setting,
    get,
    is_interrupted,
    is_ok,
    metric,
    missing_runs,
    num,
    planned_runs,
    records,
    run_key,
)


@dataclass
class Table:
    """A table of text cells; ``numeric`` columns are right-aligned, ``code`` ones shown as code."""

    headers: list[str]
    rows: list[list[str]]
    numeric: set[int] = field(default_factory=set)
    code: set[int] = field(default_factory=set)


ENCODER_NOTE = (
    "Encoder victim (the API answers embeddings): accuracy is the downstream linear-probe "
    "accuracy of each stolen encoder (a linear head trained on its frozen features), agreement "
    "how often stolen encoder + its head and victim encoder + its head predict the same class; "
    "defences' victim accuracy is the victim's own probe accuracy on defended embeddings."
)

_KEY_HEADERS = ["attack", "defence", "budget", "seed"]


def _key_cells(run: Mapping[str, Any]) -> list[str]:
    return [
        fmt.text(run.get("attack")),
        fmt.text(run.get("defense")),
        fmt.count(run.get("budget")),
        fmt.text(run.get("seed")),
    ]


def header_facts(results: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The facts at the top of the report: (label, value)."""
    runs = records(results, "runs")
    victim = get(results, "victim")
    ok = sum(is_ok(r) for r in runs)
    interrupted = sum(is_interrupted(r) for r in runs)
    test_accuracy = num(get(victim, "test_accuracy"))
    victim_text = fmt.text(get(victim, "name"))
    if test_accuracy is not None:
        victim_text += f" (test accuracy {test_accuracy:.3f})"
    run_time = fmt.total((num(r.get("wall_seconds")) for r in runs), fmt.duration)
    wall = num(results.get("wall_seconds"))  # the whole experiment, set-up included
    counts = f"{ok} ok, {len(runs) - ok - interrupted} failed"
    if interrupted:
        counts += f", {interrupted} interrupted"
    facts = [
        ("Experiment", fmt.text(results.get("name"))),
        ("Created", fmt.date(results.get("created"))),
        ("stealkit", fmt.text(results.get("stealkit_version"))),
        ("Victim", victim_text),
        ("Evaluation set", fmt.sized(get(victim, "eval_set"), get(victim, "eval_size"))),
        ("Query pool", fmt.sized(get(victim, "pool"), get(victim, "pool_size"))),
        ("Runs", f"{len(runs)} ({counts})"),
    ]
    grid = grid_status(results)
    if grid is not None:
        facts.append(("Grid", grid))
    return facts + [
        ("Queries bought", fmt.total((num(get(r, "ledger", "spent")) for r in runs), fmt.count)),
        ("Money spent", fmt.total((num(get(r, "ledger", "cost")) for r in runs), fmt.money)),
        ("Wall time", run_time if wall is None else f"{fmt.duration(wall)} (runs: {run_time})"),
    ]


def _resume_hint(results: Mapping[str, Any]) -> str:
    """Why runs are missing, from the last invocation's status, and what to do."""
    invocations = records(results, "invocations")
    last = invocations[-1].get("status") if invocations else None
    if last == "running":
        return (
            "a stealkit run is still working on it, or was killed; re-run the same command "
            "to resume once none is running"
        )
    if last == "failed":
        return "the last stealkit run failed; fix its error and re-run the same command to resume"
    return "the grid was interrupted; re-run the same command to resume"


def grid_status(results: Mapping[str, Any]) -> str | None:
    """How much of the planned grid is done; None for results that record neither plan nor
    completeness (older versions)."""
    planned = planned_runs(results)
    incomplete = results.get("complete") is False
    if planned is None:
        return f"incomplete ({_resume_hint(results)})" if incomplete else None
    missing = missing_runs(planned, records(results, "runs"))
    if missing:
        return f"{len(missing)} of {len(planned)} planned runs missing ({_resume_hint(results)})"
    if incomplete:
        return (
            f"all {len(planned)} planned runs done, but the grid is not marked complete; "
            "re-run the same command to finish it"
        )
    return f"all {len(planned)} planned runs done"


def grid_warning(results: Mapping[str, Any]) -> str | None:
    """The warning to show near the top when planned runs are missing; None when nothing is."""
    planned = planned_runs(results)
    missing = missing_runs(planned, records(results, "runs")) if planned is not None else []
    if not missing and results.get("complete") is not False:
        return None
    status = grid_status(results) or ""
    return (
        f"Incomplete results: {status[0].upper()}{status[1:]}. Everything below shows only the "
        "runs recorded so far."
    )


def evaluation_warnings(results: Mapping[str, Any]) -> list[str]:
    """What the runner found weak in the evaluation (too few images, images the thief also
    queried), to show near the top of the report."""
    found = results.get("warnings")
    return [f"Weak evaluation: {w}." for w in found] if isinstance(found, list) else []


def runs_table(runs: Sequence[Mapping[str, Any]]) -> Table:
    """One row per run, sorted by attack, defence, budget and seed."""
    rows = [
        _key_cells(r)
        + [
            fmt.fraction(get(r, "metrics", "agreement")),
            fmt.fraction(get(r, "metrics", "accuracy")),
            fmt.fraction(get(r, "metrics", "relative_accuracy")),
            fmt.count(get(r, "ledger", "spent")),
            fmt.money(get(r, "ledger", "cost")),
            fmt.seconds(r.get("wall_seconds")),
        ]
        for r in sorted(runs, key=run_key)
    ]
    headers = _KEY_HEADERS + [
        "agreement",
        "accuracy",
        "relative accuracy",
        "queries spent",
        "cost",
        "wall s",
    ]
    return Table(headers, rows, numeric={2, 3, 4, 5, 6, 7, 8, 9})


def seeds_table(runs: Sequence[Mapping[str, Any]]) -> Table | None:
    """Mean ± std (sample std) over seeds per (attack, defence, budget); None if no repeats."""
    groups = by_setting(runs)
    if all(len(group) < 2 for group in groups.values()):
        return None
    rows = [
        [
            fmt.text(attack),
            fmt.text(defense),
            fmt.count(budget),
            str(len(group)),
            fmt.mean_std(metric(group, "metrics", "agreement")),
            fmt.mean_std(metric(group, "metrics", "accuracy")),
            fmt.mean_std(metric(group, "metrics", "relative_accuracy")),
        ]
        for (attack, defense, budget), group in groups.items()
    ]
    headers = ["attack", "defence", "budget", "seeds", "agreement", "accuracy", "relative accuracy"]
    return Table(headers, rows, numeric={2, 3, 4, 5, 6})


def defenses_table(defenses: Sequence[Mapping[str, Any]], clean: Any) -> Table:
    """Each defence's cost to honest users. ``clean``, the undefended victim's accuracy on the
    same evaluation set, gives the utility drop of results that did not record it."""

    def drop(d: Mapping[str, Any]) -> Any:
        accuracy, base = num(d.get("victim_accuracy")), num(clean)
        if d.get("utility_drop") is None and accuracy is not None and base is not None:
            return base - accuracy
        return d.get("utility_drop")

    # Classifier defences change probability vectors (mean L1); embedding defences change
    # embeddings (mean |defended - clean| / |clean|).
    embeddings = any(d.get("mean_relative_l2_change") is not None for d in defenses)
    change_key, change = (
        ("mean_relative_l2_change", "relative L2 change")
        if embeddings
        else ("mean_l1_change", "mean L1 change")
    )
    rows = [
        [
            fmt.text(d.get("name")),
            fmt.text(d.get("repr")),
            fmt.fraction(d.get("victim_accuracy")),
            fmt.fraction(drop(d)),
            fmt.fraction(d.get("top1_kept")),
            fmt.fraction(d.get(change_key)),
        ]
        for d in defenses
    ]
    headers = ["defence", "repr", "victim accuracy", "utility drop", "top-1 kept", change]
    return Table(headers, rows, numeric={2, 3, 4, 5}, code={1})


def failed_table(runs: Sequence[Mapping[str, Any]]) -> Table:
    """The runs that did not finish (failed or interrupted), with their error and what they
    bought before they stopped."""
    rows = [
        _key_cells(r)
        + [
            fmt.text(r.get("status")),
            fmt.text(r.get("error")),
            fmt.count(get(r, "ledger", "spent")),
            fmt.seconds(r.get("wall_seconds")),
        ]
        for r in sorted(runs, key=run_key)
    ]
    headers = _KEY_HEADERS + ["status", "error", "queries spent", "wall s"]
    return Table(headers, rows, numeric={2, 3, 6, 7}, code={5})


def failed_title(runs: Sequence[Mapping[str, Any]]) -> str:
    """The failed-runs section's title: it names interrupted runs when there are some."""
    blocked = any(r.get("status") == "blocked" for r in runs)
    kinds = (["Blocked"] if blocked else []) + ["failed"] + (
        ["interrupted"] if any(map(is_interrupted, runs)) else []
    )
    if len(kinds) == 1:
        return "Failed runs"
    return (", ".join(kinds[:-1]) + " and " + kinds[-1] + " runs").capitalize()


def missing_table(results: Mapping[str, Any]) -> Table | None:
    """The planned runs not done yet, each with its last record's status; None if none."""
    planned = planned_runs(results)
    runs = records(results, "runs")
    missing = missing_runs(planned, runs) if planned is not None else []
    if not missing:
        return None
    last = {run_key(r): fmt.text(r.get("status")) for r in runs}
    rows = [_key_cells(p) + [last.get(run_key(p), "not started")] for p in missing]
    return Table(_KEY_HEADERS + ["last status"], rows, numeric={2, 3})


def provenance(results: Mapping[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    """Each distinct repr, with the names it was used under: (section, [(repr, used as)])."""
    runs = records(results, "runs")
    sections = []
    for title, repr_key, name_key in (
        ("Attacks", "attack_repr", "attack"),
        ("Defences", "defense_repr", "defense"),
        ("Surrogates", "surrogate", "attack"),
    ):
        used: dict[str, dict[str, None]] = defaultdict(dict)
        for run in runs:
            if run.get(repr_key) is not None:
                used[str(run[repr_key])][fmt.text(run.get(name_key))] = None
        sections.append((title, [(r, ", ".join(names)) for r, names in sorted(used.items())]))
    victim_repr = get(results, "victim", "repr")
    if victim_repr is not None:
        victim = [(str(victim_repr), fmt.text(get(results, "victim", "name")))]
        sections.insert(0, ("Victim", victim))
    return [(title, items) for title, items in sections if items]


def invocations_note(results: Mapping[str, Any]) -> str | None:
    """How many times ``stealkit run`` worked on the results' folder, and the config's hash."""
    invocations = records(results, "invocations")
    config_hash = results.get("config_hash")
    parts = []
    if invocations:
        times = "once" if len(invocations) == 1 else f"{len(invocations)} times"
        parts.append(f"stealkit run worked on this folder {times}.")
    if config_hash is not None:
        parts.append(f"Config hash: {fmt.text(config_hash)}.")
    return " ".join(parts) or None


def invocations_table(results: Mapping[str, Any]) -> Table | None:
    """One row per ``stealkit run`` on the results' folder, oldest first; None if unrecorded."""
    invocations = records(results, "invocations")
    if not invocations:
        return None
    rows = [
        [
            str(i),
            fmt.date(inv.get("started")),
            fmt.date(inv.get("finished")),
            fmt.text(inv.get("status")),
            fmt.count(inv.get("ran")),
            fmt.count(inv.get("skipped")),
            fmt.count(inv.get("queries_bought")),
        ]
        for i, inv in enumerate(invocations, 1)
    ]
    headers = ["#", "started", "finished", "status", "runs done", "skipped", "queries bought"]
    return Table(headers, rows, numeric={0, 4, 5, 6})


_TRANSFER_COLUMNS = [(m, t) for t in (False, True) for m in ("fgsm", "bim", "pgd")]


def transfer_table(
    runs: Sequence[Mapping[str, Any]], baseline: Mapping[str, Any] | None
) -> Table | None:
    """Success on the victim of each transfer attack, per stolen model and for the baseline."""
    sources: list[tuple[list[str], Any]] = [
        (_key_cells(r), r.get("transfer")) for r in sorted(runs, key=run_key) if r.get("transfer")
    ]
    if baseline and baseline.get("transfer"):
        name = f"baseline ({fmt.text(baseline.get('arch'))} on {fmt.text(baseline.get('dataset'))})"
        sources.append(([name, fmt.MISSING, fmt.MISSING, fmt.MISSING], baseline.get("transfer")))
    if not sources:
        return None
    present = {
        (row.get("method"), bool(row.get("targeted")))
        for _, rows in sources
        for row in rows
        if isinstance(row, Mapping)
    }
    columns = [c for c in _TRANSFER_COLUMNS if c in present]
    rows = []
    for key, table in sources:
        cells = {
            (row.get("method"), bool(row.get("targeted"))): row
            for row in table
            if isinstance(row, Mapping)
        }
        rows.append(
            key
            + [
                f"{fmt.fraction(get(cells.get(c), 'success'))} ({fmt.fraction(get(cells.get(c), 'white_box_success'))})"
                if c in cells
                else fmt.MISSING
                for c in columns
            ]
        )
    headers = ["source model", "defence", "budget", "seed"] + [
        f"{m.upper()} {'targeted' if t else 'untargeted'}" for m, t in columns
    ]
    return Table(headers, rows, numeric=set(range(2, len(headers))))
