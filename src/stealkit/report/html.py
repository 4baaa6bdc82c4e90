"""The experiment report: one self-contained HTML file, and the same tables in Markdown.

    results = json.loads(Path("runs/default/results.json").read_text())
    write_report(results, Path("runs/default/report.html"))
    docs_text = render_markdown(results)

The HTML page needs nothing beside itself: CSS is inline and plots are base64 PNG data URIs.
Results written by older stealkit versions may lack keys; a missing value is shown as "—" and
never guessed. Every piece of text from the results is escaped.
"""

from __future__ import annotations

import html
import json
import math
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from stealkit.report.plots import (
    CurvePoint,
    TradeoffPoint,
    convergence,
    fidelity_vs_budget,
    protection_vs_utility,
    to_data_uri,
)

MISSING = "—"

# --- reading results tolerantly -----------------------------------------------------------------


def _get(obj: Any, *keys: str) -> Any:
    """``obj[k1][k2]...``, or None where any level is missing or not a mapping."""
    for key in keys:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(key)
    return obj


def _num(value: Any) -> float | None:
    """A finite number as float; None for anything else (missing, bool, NaN, text)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _list(results: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    items = results.get(key)
    return [item for item in items if isinstance(item, Mapping)] if isinstance(items, list) else []


def _is_ok(run: Mapping[str, Any]) -> bool:
    return run.get("status", "ok") == "ok"


def _sort_key(value: Any) -> tuple[int, float, str]:
    number = _num(value)
    return (0, number, "") if number is not None else (1, 0.0, str(value))


def _run_key(run: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(_sort_key(run.get(k)) for k in ("attack", "defense", "budget", "seed"))


# --- formatting ---------------------------------------------------------------------------------


def _text(value: Any) -> str:
    return MISSING if value is None or value == "" else str(value)


def _fraction(value: Any) -> str:
    number = _num(value)
    return MISSING if number is None else f"{round(number, 3) + 0.0:.3f}"  # + 0.0: no "-0.000"


def _count(value: Any) -> str:
    number = _num(value)
    if number is None:
        return _text(value)
    return f"{number:,.0f}" if number == int(number) else f"{number:,g}"


def _money(value: Any) -> str:
    number = _num(value)
    if number is None:
        return MISSING
    return f"{number:,.2f}" if number == 0 or abs(number) >= 0.01 else f"{number:.2g}"


def _seconds(value: Any) -> str:
    number = _num(value)
    return MISSING if number is None else f"{number:,.1f}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{seconds:.1f} s"


def _date(value: Any) -> str:
    if not isinstance(value, str):
        return _text(value)
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return value


def _mean_std(values: Sequence[float]) -> str:
    if not values:
        return MISSING
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


# --- the report's content, shared by HTML and Markdown ------------------------------------------


@dataclass
class _Table:
    headers: list[str]
    rows: list[list[str]]
    numeric: set[int] = field(default_factory=set)  # right-aligned columns
    code: set[int] = field(default_factory=set)  # columns shown as code


def _header_facts(results: Mapping[str, Any]) -> list[tuple[str, str]]:
    runs = _list(results, "runs")
    victim = _get(results, "victim")
    ok = sum(_is_ok(r) for r in runs)
    test_accuracy = _num(_get(victim, "test_accuracy"))
    victim_text = _text(_get(victim, "name"))
    if test_accuracy is not None:
        victim_text += f" (test accuracy {test_accuracy:.3f})"
    run_time = _total((_num(r.get("wall_seconds")) for r in runs), _duration)
    wall = _num(results.get("wall_seconds"))  # the whole experiment, set-up included
    return [
        ("Experiment", _text(results.get("name"))),
        ("Created", _date(results.get("created"))),
        ("stealkit", _text(results.get("stealkit_version"))),
        ("Victim", victim_text),
        ("Evaluation set", _sized(_get(victim, "eval_set"), _get(victim, "eval_size"))),
        ("Query pool", _sized(_get(victim, "pool"), _get(victim, "pool_size"))),
        ("Runs", f"{len(runs)} ({ok} ok, {len(runs) - ok} failed)"),
        ("Queries bought", _total((_num(_get(r, "ledger", "spent")) for r in runs), _count)),
        ("Money spent", _total((_num(_get(r, "ledger", "cost")) for r in runs), _money)),
        ("Wall time", run_time if wall is None else f"{_duration(wall)} (runs: {run_time})"),
    ]


_ENCODER_NOTE = (
    "Encoder victim (the API answers embeddings): accuracy is the downstream linear-probe "
    "accuracy of each stolen encoder (a linear head trained on its frozen features), agreement "
    "how often stolen encoder + its head and victim encoder + its head predict the same class; "
    "defences' victim accuracy is the victim's own probe accuracy on defended embeddings."
)


def _is_encoder(results: Mapping[str, Any]) -> bool:
    """Whether the runs judged encoders by linear probes (their config names a probe set)."""
    return any(_get(r, "config", "probe") is not None for r in _list(results, "runs"))


def _sized(name: Any, size: Any) -> str:
    return _text(name) if _num(size) is None else f"{_text(name)} ({_count(size)} images)"


def _total(values: Iterable[float | None], fmt: Any) -> str:
    known = [v for v in values if v is not None]
    return fmt(sum(known)) if known else MISSING


def _runs_table(runs: Sequence[Mapping[str, Any]]) -> _Table:
    rows = [
        [
            _text(r.get("attack")),
            _text(r.get("defense")),
            _count(r.get("budget")),
            _text(r.get("seed")),
            _fraction(_get(r, "metrics", "agreement")),
            _fraction(_get(r, "metrics", "accuracy")),
            _fraction(_get(r, "metrics", "relative_accuracy")),
            _count(_get(r, "ledger", "spent")),
            _money(_get(r, "ledger", "cost")),
            _seconds(r.get("wall_seconds")),
        ]
        for r in sorted(runs, key=_run_key)
    ]
    headers = [
        "attack",
        "defence",
        "budget",
        "seed",
        "agreement",
        "accuracy",
        "relative accuracy",
        "queries spent",
        "cost",
        "wall s",
    ]
    return _Table(headers, rows, numeric={2, 3, 4, 5, 6, 7, 8, 9})


Setting = tuple[Any, Any, Any]  # (attack, defence, budget)


def _by_setting(runs: Sequence[Mapping[str, Any]]) -> dict[Setting, list[Mapping[str, Any]]]:
    groups: dict[Setting, list[Mapping[str, Any]]] = defaultdict(list)
    for run in sorted(runs, key=_run_key):
        groups[(run.get("attack"), run.get("defense"), run.get("budget"))].append(run)
    return dict(groups)


def _metric(runs: Iterable[Mapping[str, Any]], *keys: str) -> list[float]:
    return [v for v in (_num(_get(r, *keys)) for r in runs) if v is not None]


def _seeds_table(runs: Sequence[Mapping[str, Any]]) -> _Table | None:
    """Mean ± std (sample std) over seeds per (attack, defence, budget); None if no repeats."""
    groups = _by_setting(runs)
    if all(len(group) < 2 for group in groups.values()):
        return None
    rows = [
        [
            _text(attack),
            _text(defense),
            _count(budget),
            str(len(group)),
            _mean_std(_metric(group, "metrics", "agreement")),
            _mean_std(_metric(group, "metrics", "accuracy")),
            _mean_std(_metric(group, "metrics", "relative_accuracy")),
        ]
        for (attack, defense, budget), group in groups.items()
    ]
    headers = ["attack", "defence", "budget", "seeds", "agreement", "accuracy", "relative accuracy"]
    return _Table(headers, rows, numeric={2, 3, 4, 5, 6})


def _defenses_table(defenses: Sequence[Mapping[str, Any]], clean: Any) -> _Table:
    """``clean``, the undefended victim's accuracy on the same evaluation set, gives the utility
    drop of results that did not record it."""

    def drop(d: Mapping[str, Any]) -> Any:
        accuracy, base = _num(d.get("victim_accuracy")), _num(clean)
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
            _text(d.get("name")),
            _text(d.get("repr")),
            _fraction(d.get("victim_accuracy")),
            _fraction(drop(d)),
            _fraction(d.get("top1_kept")),
            _fraction(d.get(change_key)),
        ]
        for d in defenses
    ]
    headers = ["defence", "repr", "victim accuracy", "utility drop", "top-1 kept", change]
    return _Table(headers, rows, numeric={2, 3, 4, 5}, code={1})


def _failed_table(runs: Sequence[Mapping[str, Any]]) -> _Table:
    rows = [
        [
            _text(r.get("attack")),
            _text(r.get("defense")),
            _count(r.get("budget")),
            _text(r.get("seed")),
            _text(r.get("status")),
            _text(r.get("error")),
            _count(_get(r, "ledger", "spent")),
            _seconds(r.get("wall_seconds")),
        ]
        for r in sorted(runs, key=_run_key)
    ]
    headers = ["attack", "defence", "budget", "seed", "status", "error", "queries spent", "wall s"]
    return _Table(headers, rows, numeric={2, 3, 6, 7}, code={5})


def _provenance(results: Mapping[str, Any]) -> list[tuple[str, list[tuple[str, str]]]]:
    """Each distinct repr, with the names it was used under: (section, [(repr, used as)])."""
    runs = _list(results, "runs")
    sections = []
    for title, repr_key, name_key in (
        ("Attacks", "attack_repr", "attack"),
        ("Defences", "defense_repr", "defense"),
        ("Surrogates", "surrogate", "attack"),
    ):
        used: dict[str, dict[str, None]] = defaultdict(dict)
        for run in runs:
            if run.get(repr_key) is not None:
                used[str(run[repr_key])][_text(run.get(name_key))] = None
        sections.append((title, [(r, ", ".join(names)) for r, names in sorted(used.items())]))
    victim_repr = _get(results, "victim", "repr")
    if victim_repr is not None:
        victim = [(str(victim_repr), _text(_get(results, "victim", "name")))]
        sections.insert(0, ("Victim", victim))
    return [(title, items) for title, items in sections if items]


def _config_yaml(config: Any) -> str:
    # A JSON round trip turns anything unusual (tuples, paths) into plain, safely dumpable data.
    plain = json.loads(json.dumps(config, default=str))
    return yaml.safe_dump(plain, sort_keys=False, allow_unicode=True)


# --- plots --------------------------------------------------------------------------------------


def _curves(runs: Sequence[Mapping[str, Any]]) -> dict[tuple[str, str], list[CurvePoint]]:
    curves: dict[tuple[str, str], list[CurvePoint]] = defaultdict(list)
    for (attack, defense, budget), group in _by_setting(runs).items():
        agreement = _metric(group, "metrics", "agreement")
        cost = _metric(group, "ledger", "cost")
        size = _num(budget)
        if size is None or size <= 0 or not agreement:
            continue
        curves[(_text(attack), _text(defense))].append(
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
    utility = {_text(d.get("name")): _num(d.get("victim_accuracy")) for d in defenses}
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
    for r in sorted(runs, key=_run_key):
        pts = [
            (q, a, _num(p.get("accuracy")))
            for p in r.get("curve") or []
            if isinstance(p, Mapping)
            and (q := _num(p.get("queries"))) is not None
            and (a := _num(p.get("agreement"))) is not None
        ]
        if pts:
            label = f"{_text(r.get('attack'))} | {_text(r.get('defense'))} | seed {_text(r.get('seed'))}"
            if len(out) < 12:  # more lines than that are unreadable
                out[f"{label} | {_count(r.get('budget'))} q"] = pts
    return out


_TRANSFER_COLUMNS = [(m, t) for t in (False, True) for m in ("fgsm", "bim", "pgd")]


def _transfer_table(
    runs: Sequence[Mapping[str, Any]], baseline: Mapping[str, Any] | None
) -> _Table | None:
    """Success on the victim of each transfer attack, per stolen model and for the baseline."""
    sources: list[tuple[list[str], Any]] = [
        (
            [
                _text(r.get("attack")),
                _text(r.get("defense")),
                _count(r.get("budget")),
                _text(r.get("seed")),
            ],
            r.get("transfer"),
        )
        for r in sorted(runs, key=_run_key)
        if r.get("transfer")
    ]
    if baseline and baseline.get("transfer"):
        name = f"baseline ({_text(baseline.get('arch'))} on {_text(baseline.get('dataset'))})"
        sources.append(([name, MISSING, MISSING, MISSING], baseline.get("transfer")))
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
                f"{_fraction(_get(cells.get(c), 'success'))} ({_fraction(_get(cells.get(c), 'white_box_success'))})"
                if c in cells
                else MISSING
                for c in columns
            ]
        )
    headers = ["source model", "defence", "budget", "seed"] + [
        f"{m.upper()} {'targeted' if t else 'untargeted'}" for m, t in columns
    ]
    return _Table(headers, rows, numeric=set(range(2, len(headers))))


def _figures(results: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """(title, caption, data URI) for each plot the results can support."""
    ok = [r for r in _list(results, "runs") if _is_ok(r)]
    figures = []
    curves = _curves(ok)
    if curves:
        prices = sorted(
            {p for p in (_num(_get(r, "ledger", "price_per_1k")) for r in ok) if p is not None}
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
    points = _tradeoff(ok, _list(results, "defenses"))
    if points:
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
nav { margin: 1em 0 0; font-size: .92em; } nav a { color: #1f5fbf; text-decoration: none; }
details > summary { cursor: pointer; color: #1f5fbf; margin: .4em 0; }
"""


def _e(text: str) -> str:
    return html.escape(text, quote=True)


def _html_table(table: _Table) -> str:
    def cell(tag: str, i: int, text: str) -> str:
        cls = ' class="num"' if i in table.numeric else ""
        code = tag == "td" and i in table.code and text != MISSING
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


_LONG = 40  # a per-run table longer than this folds away when the seed table summarises it


def render_html(results: Mapping[str, Any]) -> str:
    """The whole report as one HTML document (what ``write_report`` writes)."""
    runs = _list(results, "runs")
    ok = [r for r in runs if _is_ok(r)]
    failed = [r for r in runs if not _is_ok(r)]
    defenses = _list(results, "defenses")
    seeds = _seeds_table(ok)
    sections: list[tuple[str, str, str]] = []  # (title, anchor, body)

    body = _html_table(_runs_table(ok)) if ok else _note("No successful runs.")
    if ok and seeds is not None and len(ok) > _LONG:
        body = f"<details><summary>Show all {len(ok)} runs</summary>{body}</details>"
    if failed:
        body += _note(f"{len(failed)} failed run(s) are listed under Failed runs, below.")
    if _is_encoder(results):
        body = _note(_ENCODER_NOTE) + body
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
        sections.append(("Plots", "plots", _note("No successful runs to plot.")))

    transfer = _transfer_table(ok, results.get("transfer_baseline"))
    if transfer is not None:
        note = _note(
            "Success rate on the victim of adversarial examples crafted on each source model, "
            "over evaluation images the victim classifies correctly (untargeted: the victim's "
            "label changes; targeted: it becomes a random other class). In brackets: success on "
            "the source model itself (white-box)."
        )
        sections.append(("Transfer attacks", "transfer", note + _html_table(transfer)))

    body = (
        _html_table(_defenses_table(defenses, _get(results, "victim", "test_accuracy")))
        if defenses
        else _note("No defences recorded.")
    )
    sections.append(("Defences", "defenses", body))

    body = "".join(
        f'<h3>{_e(section)}</h3><ul class="reprs">'
        + "".join(f"<li><code>{_e(r)}</code> — {_e(used)}</li>" for r, used in items)
        + "</ul>"
        for section, items in _provenance(results)
    )
    sections.append(("What produced this", "provenance", body or _note("Nothing recorded.")))

    body = _html_table(_failed_table(failed)) if failed else _note("No run failed.")
    sections.append(("Failed runs", "failed", body))

    config = results.get("config")
    body = (
        f'<details><summary>Show the config (YAML)</summary><pre class="config">'
        f"{_e(_config_yaml(config))}</pre></details>"
        if config is not None
        else _note("No config recorded.")
    )
    sections.append(("Config", "config", body))

    title = f"stealkit report: {_text(results.get('name'))}"
    facts = "".join(f"<dt>{_e(k)}</dt><dd>{_e(v)}</dd>" for k, v in _header_facts(results))
    nav = " · ".join(f'<a href="#{anchor}">{_e(name)}</a>' for name, anchor, _ in sections)
    parts = [f"<h1>{_e(title)}</h1>", f'<dl class="facts">{facts}</dl>', f"<nav>{nav}</nav>"]
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


# --- Markdown -----------------------------------------------------------------------------------


def _md_cell(text: str, code: bool) -> str:
    """One table cell or list item: on one line, pipes escaped, and HTML either inert inside a
    code span or escaped, so that text from results never becomes markup in the docs."""
    text = " ".join(text.split()).replace("|", "\\|")
    if code and text != MISSING and "``" not in text:
        return f"`` {text} ``" if "`" in text else f"`{text}`"
    return html.escape(text, quote=False)


def _md_table(table: _Table) -> str:
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


def render_markdown(results: Mapping[str, Any]) -> str:
    """The report's facts and tables (no plots, no config) as Markdown, for docs."""
    runs = _list(results, "runs")
    ok = [r for r in runs if _is_ok(r)]
    failed = [r for r in runs if not _is_ok(r)]
    defenses = _list(results, "defenses")
    parts = [f"# stealkit report: {_md_cell(_text(results.get('name')), False)}"]
    parts.append("\n".join(f"- **{k}**: {_md_cell(v, False)}" for k, v in _header_facts(results)))
    note = _ENCODER_NOTE + "\n\n" if _is_encoder(results) else ""
    parts.append(
        "## Runs\n\n" + note + (_md_table(_runs_table(ok)) if ok else "No successful runs.")
    )
    seeds = _seeds_table(ok)
    if seeds is not None:
        parts.append(
            "## Across seeds\n\nMean ± sample standard deviation over seeds.\n\n" + _md_table(seeds)
        )
    transfer = _transfer_table(ok, results.get("transfer_baseline"))
    if transfer is not None:
        parts.append(
            "## Transfer attacks\n\nSuccess on the victim over images it classifies correctly; "
            "in brackets, white-box success on the source model.\n\n" + _md_table(transfer)
        )
    parts.append(
        "## Defences\n\n"
        + (
            _md_table(_defenses_table(defenses, _get(results, "victim", "test_accuracy")))
            if defenses
            else "No defences recorded."
        )
    )
    lines = []
    for section, items in _provenance(results):
        lines.append(f"### {section}\n")
        lines += [f"- {_md_cell(r, True)} — {_md_cell(used, False)}" for r, used in items]
        lines.append("")
    parts.append("## What produced this\n\n" + ("\n".join(lines).strip() or "Nothing recorded."))
    parts.append(
        "## Failed runs\n\n" + (_md_table(_failed_table(failed)) if failed else "No run failed.")
    )
    return "\n\n".join(parts) + "\n"
