"""The report's facts and tables as Markdown, for docs (no plots, no config).

    Path("docs/results.md").write_text(render_markdown(load_results(path)))

Text from the results never becomes markup: table cells stay on one line with pipes escaped, and
HTML in them is either inside a code span or escaped.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from typing import Any

from stealkit.report import format as fmt
from stealkit.report import tables
from stealkit.report.read import get, is_encoder, is_ok, records


def _md_cell(text: str, code: bool) -> str:
    """One table cell or list item: on one line, pipes escaped, and HTML either inert inside a
    code span or escaped, so that text from results never becomes markup in the docs."""
    text = " ".join(text.split()).replace("|", "\\|")
    if code and text != fmt.MISSING and "``" not in text:
        return f"`` {text} ``" if "`" in text else f"`{text}`"
    return html.escape(text, quote=False)


def _md_table(table: tables.Table) -> str:
    def line(cells: Sequence[str], code: set[int]) -> str:
        return "| " + " | ".join(_md_cell(c, i in code) for i, c in enumerate(cells)) + " |"

    rule = (
        "|"
        + "|".join("---:" if i in table.numeric else "---" for i in range(len(table.headers)))
        + "|"
    )
    return "\n".join(
        [line(table.headers, set()), rule] + [line(row, table.code) for row in table.rows]
    )


def _provenance(results: Mapping[str, Any]) -> str:
    lines = []
    for section, items in tables.provenance(results):
        lines.append(f"### {section}\n")
        lines += [f"- {_md_cell(r, True)} — {_md_cell(used, False)}" for r, used in items]
        lines.append("")
    note, invocations = tables.invocations_note(results), tables.invocations_table(results)
    if note is not None or invocations is not None:
        lines.append("### Invocations\n")
        if note is not None:
            lines += [_md_cell(note, False), ""]
        if invocations is not None:
            lines += [_md_table(invocations), ""]
    return "\n".join(lines).strip() or "Nothing recorded."


def render_markdown(results: Mapping[str, Any]) -> str:
    """The report's facts and tables (no plots, no config) as Markdown, for docs."""
    runs = records(results, "runs")
    ok = [r for r in runs if is_ok(r)]
    failed = [r for r in runs if not is_ok(r)]
    defenses = records(results, "defenses")
    parts = [f"# stealkit report: {_md_cell(fmt.text(results.get('name')), False)}"]
    parts.append(
        "\n".join(f"- **{k}**: {_md_cell(v, False)}" for k, v in tables.header_facts(results))
    )
    warning = tables.grid_warning(results)
    if warning is not None:
        parts.append(f"> **Warning**: {_md_cell(warning, False)}")
    for weak in tables.evaluation_warnings(results):
        parts.append(f"> **Warning**: {_md_cell(weak, False)}")
    note = tables.ENCODER_NOTE + "\n\n" if is_encoder(results) else ""
    parts.append(
        "## Runs\n\n" + note + (_md_table(tables.runs_table(ok)) if ok else "No successful runs.")
    )
    seeds = tables.seeds_table(ok)
    if seeds is not None:
        parts.append(
            "## Across seeds\n\nMean ± sample standard deviation over seeds.\n\n" + _md_table(seeds)
        )
    transfer = tables.transfer_table(ok, results.get("transfer_baseline"))
    if transfer is not None:
        parts.append(
            "## Transfer attacks\n\nSuccess on the victim over images it classifies correctly; "
            "in brackets, white-box success on the source model.\n\n" + _md_table(transfer)
        )
    parts.append(
        "## Defences\n\n"
        + (
            _md_table(tables.defenses_table(defenses, get(results, "victim", "test_accuracy")))
            if defenses
            else "No defences recorded."
        )
    )
    parts.append("## What produced this\n\n" + _provenance(results))
    body = _md_table(tables.failed_table(failed)) if failed else "No run failed."
    missing = tables.missing_table(results)
    if missing is not None:
        body += (
            "\n\n### Missing planned runs\n\nPlanned runs that have not finished or failed yet; "
            "a re-run does them.\n\n" + _md_table(missing)
        )
    parts.append(f"## {tables.failed_title(failed)}\n\n" + body)
    return "\n\n".join(parts) + "\n"
