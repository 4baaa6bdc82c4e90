"""Unfinished grids: planned runs missing, interrupted runs, invocations; old results unchanged."""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from stealkit.report import render_html, render_markdown

ATTACKS = ("knockoff-random", "copycat")
DEFENSES = ("none", "top1")
BUDGETS = (1000, 2000, 4000)
INTERRUPTED = ("copycat", "top1", 4000, 0)  # stopped part-way after buying 37 queries
NEVER_STARTED = ("knockoff-random", "top1", 4000, 0)
FAILED = ("copycat", "none", 4000, 0)
MISSING = (
    "2 of 12 planned runs missing (the grid was interrupted; re-run the same command to resume)"
)


def _run(attack: str, defense: str, budget: int, seed: int) -> dict[str, Any]:
    key = (attack, defense, budget, seed)
    run: dict[str, Any] = {"attack": attack, "defense": defense, "budget": budget, "seed": seed}
    if key == FAILED:
        return run | {"status": "failed", "error": "ValueError: boom", "ledger": {"spent": 0}}
    if key == INTERRUPTED:
        return run | {
            "status": "interrupted",
            "error": "interrupted by the user (SIGINT)",
            "metrics": None,
            "ledger": {"budget": budget, "spent": 37, "cost": 0.037},
            "wall_seconds": 2.0,
        }
    return run | {
        "status": "ok",
        "error": None,
        "metrics": {"agreement": 0.5 + budget / 10_000, "accuracy": 0.5},
        "ledger": {"budget": budget, "spent": budget, "cost": budget / 1000},
        "wall_seconds": 1.0,
    }


def _interrupted() -> dict[str, Any]:
    """A 12-run grid stopped by Ctrl-C on its second invocation: 9 ok, 1 failed, 1 interrupted."""
    keys = [(a, d, b, 0) for a in ATTACKS for d in DEFENSES for b in BUDGETS]
    planned = [dict(zip(("attack", "defense", "budget", "seed"), k, strict=True)) for k in keys]
    return {
        "name": "resumable",
        "complete": False,
        "config_hash": "3f2a9c0d17e4",
        "planned": planned,
        "invocations": [
            {
                "started": "2026-11-23T18:00:00",
                "finished": "2026-11-23T18:20:00",
                "status": "interrupted",
                "ran": 6,
                "skipped": 0,
                "queries_bought": 14_000,
            },
            {
                "started": "2026-11-24T09:00:00",
                "finished": "2026-11-24T09:30:00",
                "status": "interrupted",
                "ran": 5,
                "skipped": 6,
                "queries_bought": 9_037,
            },
        ],
        "runs": [_run(*k) for k in keys if k != NEVER_STARTED],
    }


def _section(page: str, anchor: str) -> str:
    return page.split(f'id="{anchor}"')[1].split("</section>")[0]


def _rows(section: str) -> list[list[str]]:
    body = section.split("<tbody>")[1].split("</tbody>")[0]
    return [re.findall(r"<td[^>]*>(.*?)</td>", row) for row in body.split("</tr>") if "<td" in row]


def test_missing_planned_runs_are_a_fact_and_a_warning_above_the_tables() -> None:
    page = render_html(_interrupted())
    assert f"<dt>Grid</dt><dd>{MISSING}</dd>" in page
    warning = re.search(r'<p class="warning"[^>]*>(.*?)</p>', page)
    assert warning is not None and MISSING in warning.group(1)
    assert page.index('class="warning"') < page.index("<nav>") < page.index('id="runs"')
    text = render_markdown(_interrupted())
    assert f"- **Grid**: {MISSING}" in text
    assert re.search(r"^> \*\*Warning\*\*: Incomplete results: " + re.escape(MISSING), text, re.M)
    assert text.index("> **Warning**") < text.index("## Runs")


def test_interrupted_runs_are_counted_apart_from_failed_ones() -> None:
    page = render_html(_interrupted())
    assert "<dt>Runs</dt><dd>11 (9 ok, 1 failed, 1 interrupted)</dd>" in page
    assert "- **Runs**: 11 (9 ok, 1 failed, 1 interrupted)" in render_markdown(_interrupted())
    # 9 ok runs (4 x 1,000 + 4 x 2,000 + 1 x 4,000 = 16,000 queries) + 37 bought before Ctrl-C.
    assert "<dt>Queries bought</dt><dd>16,037</dd>" in page


def test_interrupted_run_is_listed_with_its_status_and_queries_bought() -> None:
    page = render_html(_interrupted())
    assert "<h2>Failed and interrupted runs</h2>" in page
    assert "2 failed or interrupted run(s) are listed under Failed and interrupted runs" in page
    rows = _rows(_section(page, "failed"))
    assert rows[0] == [
        "copycat",
        "none",
        "4,000",
        "0",
        "failed",
        "<code>ValueError: boom</code>",
        "0",
        "—",
    ]
    assert rows[1] == [
        "copycat",
        "top1",
        "4,000",
        "0",
        "interrupted",
        "<code>interrupted by the user (SIGINT)</code>",
        "37",
        "2.0",
    ]
    assert len(_rows(_section(page, "runs"))) == 9  # the interrupted run is not among the results
    text = render_markdown(_interrupted())
    assert "## Failed and interrupted runs" in text
    assert (
        "| copycat | top1 | 4,000 | 0 | interrupted | `interrupted by the user (SIGINT)` | 37 | 2.0 |"
        in text
    )


def test_missing_runs_are_listed_with_their_last_status() -> None:
    page = render_html(_interrupted())
    missing = _section(page, "failed").split("<h3>Missing planned runs</h3>")[1]
    assert _rows(missing) == [
        ["copycat", "top1", "4,000", "0", "interrupted"],
        ["knockoff-random", "top1", "4,000", "0", "not started"],
    ]
    assert "| knockoff-random | top1 | 4,000 | 0 | not started |" in render_markdown(_interrupted())


def test_invocations_are_in_the_provenance_section() -> None:
    page = render_html(_interrupted())
    provenance = _section(page, "provenance")
    assert "stealkit run worked on this folder 2 times. Config hash: 3f2a9c0d17e4." in provenance
    assert _rows(provenance.split("<h3>Invocations</h3>")[1]) == [
        ["1", "2026-11-23 18:00", "2026-11-23 18:20", "interrupted", "6", "0", "14,000"],
        ["2", "2026-11-24 09:00", "2026-11-24 09:30", "interrupted", "5", "6", "9,037"],
    ]
    text = render_markdown(_interrupted())
    invocations = text.split("### Invocations")[1].split("## ")[0]
    assert (
        "| 2 | 2026-11-24 09:00 | 2026-11-24 09:30 | interrupted | 5 | 6 | 9,037 |" in invocations
    )


def test_a_planned_run_is_done_once_it_finished_or_failed_even_after_an_interruption() -> None:
    results = _interrupted()
    resumed = _run(*INTERRUPTED) | {"status": "ok", "metrics": {"agreement": 0.9}}
    results["runs"] += [resumed, _run(*NEVER_STARTED) | {"budget": 4000.0}]  # 4000.0 == 4000
    results["complete"] = True
    page = render_html(results)
    assert "<dt>Grid</dt><dd>all 12 planned runs done</dd>" in page
    assert 'class="warning"' not in page and "Missing planned runs" not in page
    assert "> **Warning**" not in render_markdown(results)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (
            {"invocations": [{"status": "running", "ran": 1}]},
            "2 of 12 planned runs missing (a stealkit run is still working on it, or was killed",
        ),
        (
            {"invocations": [{"status": "failed"}]},
            "2 of 12 planned runs missing (the last stealkit run failed; fix its error",
        ),
        ({"planned": None}, "Grid</dt><dd>incomplete (the grid was interrupted; re-run"),
    ],
)
def test_the_warning_says_why_runs_are_missing(change: dict[str, Any], says: str) -> None:
    results = _interrupted() | change
    page = render_html(results)
    assert says in page
    assert 'class="warning"' in page


def test_old_results_without_the_new_fields_render_as_before() -> None:
    new = _interrupted()
    old = copy.deepcopy(new)
    for key in ("complete", "planned", "invocations", "config_hash"):
        del old[key]
    for run in old["runs"]:
        if run.get("status") == "interrupted":
            run["status"] = "failed"
    page, text = render_html(old), render_markdown(old)
    assert "<dt>Runs</dt><dd>11 (9 ok, 2 failed)</dd>" in page
    assert "Grid" not in page and 'class="warning"' not in page
    assert "Invocations" not in page and "Missing planned runs" not in page
    assert "<h2>Failed runs</h2>" in page and "2 failed run(s) are listed under Failed runs" in page
    assert "interrupted" not in text.replace("interrupted by the user", "")
    assert "Warning" not in text and "## Failed runs" in text
    # The runs table is the same as for the new results.
    assert _rows(_section(page, "runs")) == _rows(_section(render_html(new), "runs"))
