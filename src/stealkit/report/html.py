"""The experiment report as one self-contained HTML file.

    results = load_results(Path("runs/default/results.json"))
    write_report(results, Path("runs/default/report.html"))

The page needs nothing beside itself: CSS is inline and plots are base64 PNG data URIs. Results
written by older stealkit versions may lack keys; a missing value is shown as "—" and never
guessed. Every piece of text from the results is escaped.
"""

from __future__ import annotations

import html
import json
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from stealkit.report import format as fmt
from stealkit.report import tables
from stealkit.report.plots import (
    CurvePoint,
    TradeoffPoint,
    convergence,
    fidelity_vs_budget,
    has_curve,
    has_tradeoff,
    protection_vs_utility,
    to_data_uri,
)
from stealkit.report.read import (
    by_setting,
    get,
    is_encoder,
    is_interrupted,
    is_ok,
    metric,
    num,
    records,
    run_key,
)

# --- the plots' data ----------------------------------------------------------------------------


def _curves(runs: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], list[CurvePoint]]:
    curves: dict[tuple[str, str], list[CurvePoint]] = defaultdict(list)
    for (attack, defense, budget), group in by_setting(runs).items():
        agreement = metric(group, "metrics", "agreement")
        cost = metric(group, "ledger", "cost")
        size = num(budget)
        if size is None or size <= 0 or not agreement:
            continue
        curves[(fmt.text(attack), fmt.text(defense))].append(
            CurvePoint(
                budget=size,
                agreement=statistics.fmean(agreement),
                agreement_std=statistics.stdev(agreement) if len(agreement) > 1 else 0.0,
                cost=statistics.fmean(cost) if cost else None,
            )
        )
    return dict(curves)


def _tradeoff(
    runs: Sequence[Mapping[str, Any]], defenses: Sequence[Mapping[str, Any]]
) -> list[TradeoffPoint]:
    """Each attack's mean agreement at its largest budget, per defence with a known accuracy."""
    utility = {fmt.text(d.get("name")): num(d.get("victim_accuracy")) for d in defenses}
    points = []
    for (attack, defense), curve in sorted(_curves(runs).items()):
        accuracy = utility.get(defense)
        if accuracy is not None:
            best = max(curve, key=lambda p: p.budget)
            points.append(TradeoffPoint(defense, attack, accuracy, best.agreement))
    return points


def _convergence_curves(
    runs: Sequence[Mapping[str, Any]],
) -> dict[str, list[tuple[float, float, float | None]]]:
    """Within-run curves (data-free attacks with ``curve_every``), labelled by run."""
    out: dict[str, list[tuple[float, float, float | None]]] = {}
    for r in sorted(runs, key=run_key):
        pts = [
            (q, a, num(p.get("accuracy")))
            for p in r.get("curve") or []
            if isinstance(p, Mapping)
            and (q := num(p.get("queries"))) is not None
            and (a := num(p.get("agreement"))) is not None
        ]
        if pts:
            label = f"{fmt.text(r.get('attack'))} | {fmt.text(r.get('defense'))} | seed {fmt.text(r.get('seed'))}"
            if len(out) < 12:  # more lines than that are unreadable
                out[f"{label} | {fmt.count(r.get('budget'))} q"] = pts
    return out


def _figures(results: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(title, caption, data URI) for each plot the results can support."""
    ok = [r for r in records(results, "runs") if is_ok(r)]
    figures = []
    curves = _curves(ok)
    if has_curve(curves):  # one run is one number: the runs table shows it
        prices = sorted(
            {p for p in (num(get(r, "ledger", "price_per_1k")) for r in ok) if p is not None}
        )
        caption = (
            "Agreement with the victim on the evaluation set against the query budget, "
            "mean over seeds with ± std bars."
        )
        uri = to_data_uri(fidelity_vs_budget(curves, prices=prices))
        figures.append(("Fidelity vs budget", caption, uri))
    within = _convergence_curves(ok)
    if within:
        caption = (
            "Accuracy and agreement of each data-free run's substitute against the queries it "
            "had spent, measured on the evaluation set (which the attack never sees)."
        )
        figures.append(("Convergence", caption, to_data_uri(convergence(within))))
    points = _tradeoff(ok, records(results, "defenses"))
    if has_tradeoff(points):  # one defence (say only `none`) has nothing to trade off
        caption = (
            "Each defence's victim accuracy (utility for honest users) against the mean "
            "agreement each attack reaches at its largest budget under it. Defences of equal "
            "or nearly equal accuracy are drawn side by side, a few points apart."
        )
        uri = to_data_uri(protection_vs_utility(points))
        figures.append(("Protection vs utility", caption, uri))
    return figures


# --- HTML ---------------------------------------------------------------------------------------

_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d1d1f;
       max-width: 1180px; margin: 2em auto; padding: 0 1.5em; }
h1 { font-size: 1.7em; margin-bottom: .2em; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: .2em; }
h3 { font-size: 1em; margin-bottom: .3em; }
dl.facts { display: grid; grid-template-columns: max-content 1fr; gap: .2em 1.2em; }
dl.facts dt { color: #666; } dl.facts dd { margin: 0; }
table { border-collapse: collapse; margin: .6em 0; font-size: .92em; }
th, td { padding: .3em .7em; border-bottom: 1px solid #e4e4e4; text-align: left;
         vertical-align: top; }
th { background: #f4f4f6; font-weight: 600; white-space: nowrap; }
tbody tr:nth-child(even) { background: #fafafa; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
code, pre { font: .88em/1.4 ui-monospace, "SFMono-Regular", Menlo, Consolas, monospace; }
td code { white-space: pre-wrap; word-break: break-word; }
ul.reprs li { margin: .25em 0; } ul.reprs code { background: #f4f4f6; padding: .1em .3em; }
figure { margin: 1em 0; } figure img { max-width: 100%; height: auto; }
figcaption { color: #555; font-size: .9em; }
pre.config { background: #f7f7f9; padding: 1em; overflow-x: auto; }
p.note { color: #666; font-size: .9em; }
p.warning { background: #fff4e0; border-left: 4px solid #e08a00; padding: .6em .9em; }
nav { margin: 1em 0 0; font-size: .92em; } nav a { color: #1f5fbf; text-decoration: none; }
details > summary { cursor: pointer; color: #1f5fbf; margin: .4em 0; }
"""


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _html_table(table: tables.Table) -> str:
    def cell(tag: str, i: int, text: str) -> str:
        cls = ' class="num"' if i in table.numeric else ""
        code = tag == "td" and i in table.code and text != fmt.MISSING
        body = f"<code>{_e(text)}</code>" if code else _e(text)
        return f"<{tag}{cls}>{body}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(table.headers))
    body = "\n".join(
        "<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>"
        for row in table.rows
    )
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}\n</tbody>\n</table>"


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def _config_yaml(config: Any) -> str:
    # A JSON round trip turns anything unusual (tuples, paths) into plain, safely dumpable data.
    plain = json.loads(json.dumps(config, default=str))
    return yaml.safe_dump(plain, sort_keys=False, allow_unicode=True)


def _provenance_html(results: Mapping[str, Any]) -> str:
    body = "".join(
        f'<h3>{_e(section)}</h3><ul class="reprs">'
        + "".join(f"<li><code>{_e(r)}</code> — {_e(used)}</li>" for r, used in items)
        + "</ul>"
        for section, items in tables.provenance(results)
    )
    note, invocations = tables.invocations_note(results), tables.invocations_table(results)
    if note is not None or invocations is not None:
        body += "<h3>Invocations</h3>" + (_note(note) if note is not None else "")
        body += _html_table(invocations) if invocations is not None else ""
    return body or _note("Nothing recorded.")


def _failed_html(results: Mapping[str, Any], failed: Sequence[Mapping[str, Any]]) -> str:
    body = _html_table(tables.failed_table(failed)) if failed else _note("No run failed.")
    missing = tables.missing_table(results)
    if missing is not None:
        note = _note("Planned runs that have not finished or failed yet; a re-run does them.")
        body += f"<h3>Missing planned runs</h3>{note}{_html_table(missing)}"
    return body


_LONG = 40  # a per-run table longer than this folds away when the seed table summarises it


def render_html(results: Mapping[str, Any]) -> str:
    """The whole report as one HTML document (what ``write_report`` writes)."""
    runs = records(results, "runs")
    ok = [r for r in runs if is_ok(r)]
    failed = [r for r in runs if not is_ok(r)]
    failed_title = tables.failed_title(failed)
    defenses = records(results, "defenses")
    seeds = tables.seeds_table(ok)
    sections: list[tuple[str, str, str]] = []  # (title, anchor, body)

    body = _html_table(tables.runs_table(ok)) if ok else _note("No successful runs.")
    if ok and seeds is not None and len(ok) > _LONG:
        body = f"<details><summary>Show all {len(ok)} runs</summary>{body}</details>"
    if failed:
        kind = "failed or interrupted" if any(map(is_interrupted, failed)) else "failed"
        body += _note(f"{len(failed)} {kind} run(s) are listed under {failed_title}, below.")
    if is_encoder(results):
        body = _note(tables.ENCODER_NOTE) + body
    sections.append(("Runs", "runs", body))
    if seeds is not None:
        note = _note("Mean ± sample standard deviation over seeds.")
        sections.append(("Across seeds", "seeds", note + _html_table(seeds)))

    figures = _figures(results)
    for title, caption, uri in figures:
        body = (
            f'<figure><img src="{uri}" alt="{_e(title)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>"
        )
        sections.append((title, title.lower().replace(" ", "-"), body))
    if not figures:
        why = (
            "One run is one number: see the runs table; a grid of budgets, attacks or defences "
            "draws curves here."
            if ok
            else "No successful runs to plot."
        )
        sections.append(("Plots", "plots", _note(why)))

    transfer = tables.transfer_table(ok, results.get("transfer_baseline"))
    if transfer is not None:
        note = _note(
            "Success rate on the victim of adversarial examples crafted on each source model, "
            "over evaluation images the victim classifies correctly (untargeted: the victim's "
            "label changes; targeted: it becomes a random other class). In brackets: success on "
            "the source model itself (white-box)."
        )
        sections.append(("Transfer attacks", "transfer", note + _html_table(transfer)))

    body = (
        _html_table(tables.defenses_table(defenses, get(results, "victim", "test_accuracy")))
        if defenses
        else _note("No defences recorded.")
    )
    sections.append(("Defences", "defenses", body))
    sections.append(("What produced this", "provenance", _provenance_html(results)))
    sections.append((failed_title, "failed", _failed_html(results, failed)))

    config = results.get("config")
    body = (
        f'<details><summary>Show the config (YAML)</summary><pre class="config">'
        f"{_e(_config_yaml(config))}</pre></details>"
        if config is not None
        else _note("No config recorded.")
    )
    sections.append(("Config", "config", body))

    title = f"stealkit report: {fmt.text(results.get('name'))}"
    facts = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in tables.header_facts(results))
    nav = " · ".join(f'<a href="#{anchor}">{_e(name)}</a>' for name, anchor, _ in sections)
    parts = [f"<h1>{_e(title)}</h1>", f'<dl class="facts">{facts}</dl>']
    warning = tables.grid_warning(results)
    if warning is not None:
        parts.append(f'<p class="warning" role="alert">{_e(warning)}</p>')
    for weak in tables.evaluation_warnings(results):
        parts.append(f'<p class="warning">{_e(weak)}</p>')
    parts.append(f"<nav>{nav}</nav>")
    parts += [
        f'<section id="{anchor}">\n<h2>{_e(name)}</h2>\n{body}\n</section>'
        for name, anchor, body in sections
    ]
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(parts)
        + "\n</body>\n</html>\n"
    )


def write_report(results: Mapping[str, Any], path: Path) -> Path:
    """Write the self-contained HTML report of ``results`` (a ``results.json`` dict) to ``path``.

    Args:
        results: the experiment's results, as the runner stores them; missing keys are tolerated.
        path: the HTML file to write; its parent directories are created.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_html(results), encoding="utf-8")
    return path
