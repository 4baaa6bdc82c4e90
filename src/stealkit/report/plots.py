"""The report's figures, drawn on matplotlib's Agg canvas and embedded as PNG data URIs.

    fig = fidelity_vs_budget({("knockoff-random", "none"): [CurvePoint(1000, 0.91)]})
    src = to_data_uri(fig)            # "data:image/png;base64,..."

The functions take plain points, not a results dict (the report shapes those); each returns a
``matplotlib.figure.Figure`` bound to an Agg canvas. No pyplot is involved, so no global figure
registry holds the figures and nothing needs closing: a figure is freed once dropped.

Every figure stays readable whatever the numbers:

- An agreement or accuracy axis spans at least a fifth of [0, 1] (``_unit_limits``), so a flat
  line at 0.30 ± 0.01 looks flat instead of filling the panel from 0.285 to 0.315.
- Series that would hide each other (equal within a marker's height wherever they share an x)
  are dodged a few points sideways, each later one drawn thinner over the thicker earlier ones,
  so that every one shows; the legend names every series.
- A figure with nothing to compare is not drawn: ``has_tradeoff`` says whether a
  protection-against-utility figure is worth it (two defences or more); a fidelity figure with
  one budget degrades to one point per series side by side (see ``fidelity_vs_budget``).
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter, NullLocator
from matplotlib.transforms import offset_copy
from matplotlib.typing import LineStyleType

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
_LINESTYLES: tuple[LineStyleType, ...] = ("-", "--", ":", "-.")
_MIN_SPAN = 0.2  # the least part of [0, 1] an agreement or accuracy axis shows
_HIDES = 0.02  # series this close, as a fraction of the y axis, hide each other

Style = tuple[str, LineStyleType, str]  # colour, line style, marker
_K = TypeVar("_K", bound=Hashable)


@dataclass(frozen=True)
class CurvePoint:
    """One budget of one (attack, defence) curve: mean agreement over seeds, its std, mean cost."""

    budget: float
    agreement: float
    agreement_std: float = 0.0
    cost: float | None = None


@dataclass(frozen=True)
class TradeoffPoint:
    """One attack against one defence: the defence's utility and the attack's best agreement."""

    defense: str
    attack: str
    victim_accuracy: float
    agreement: float


def to_data_uri(fig: Figure, *, dpi: int = 110) -> str:
    """The figure as a ``data:image/png;base64,...`` URI for an ``<img src>``."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def fidelity_vs_budget(
    curves: Mapping[tuple[str, str], Sequence[CurvePoint]], *, prices: Sequence[float] = ()
) -> Figure:
    """Agreement against query budget (log x), one line per (attack, defence).

    Colour marks the attack, line style and marker the defence, and the legend names every
    (attack, defence); error bars are the std over seeds. ``prices`` are the distinct prices per
    1,000 queries seen in the runs: one non-zero price adds a money axis on top; several (so
    budget no longer fixes money) add a second panel of agreement against cost.

    The agreement axis spans at least 0.2 of [0, 1]. Series that hide each other (within 2 % of
    that axis at every budget they share, as when a defence keeps the top-1 label from a
    label-only attack) are dodged sideways by a few per cent of a budget, each later one thinner
    over the thicker earlier ones; the ticks mark the true budgets.

    With a single budget across all series there is no curve to draw. The figure is then not
    left out (a one-budget grid still wants its attacks and defences compared at a glance): it
    degrades to one point per (attack, defence) side by side at that budget, and its title says
    so. The report's tables hold the exact numbers either way.
    """
    series = [(key, sorted(pts, key=lambda p: p.budget)) for key, pts in sorted(curves.items())]
    attacks = sorted({attack for (attack, _), _ in series})
    defenses = sorted({defense for (_, defense), _ in series})
    paid = sorted({p for p in prices if p > 0})
    by_cost = len(paid) > 1 or (len(paid) == 1 and len(set(prices)) > 1)
    fig = _figure((11.0, 4.6) if by_cost else (9.0, 4.8))
    axes = fig.subplots(1, 2, sharey=True) if by_cost else [fig.add_subplot()]

    bottom, top = _unit_limits(
        v
        for _, pts in series
        for p in pts
        for v in (p.agreement - p.agreement_std, p.agreement + p.agreement_std)
    )
    styles: list[Style] = [
        (
            _COLORS[attacks.index(attack) % len(_COLORS)],
            _LINESTYLES[defenses.index(defense) % len(_LINESTYLES)],
            _MARKERS[defenses.index(defense) % len(_MARKERS)],
        )
        for (attack, defense), _ in series
    ]
    labels = [f"{attack} | {defense}" for (attack, defense), _ in series]
    budgets = sorted({p.budget for _, pts in series for p in pts if p.budget > 0})
    single = len(budgets) == 1
    on_budget = [[(p.budget, p.agreement, p.agreement_std) for p in pts] for _, pts in series]
    _draw(axes[0], on_budget, styles, labels, tol=_HIDES * (top - bottom), spread=single)
    if by_cost:
        on_cost = [
            [
                (p.cost, p.agreement, p.agreement_std)
                for p in pts
                if p.cost is not None and p.cost > 0
            ]
            for _, pts in series
        ]
        _draw(axes[1], on_cost, styles, labels, tol=_HIDES * (top - bottom))

    _log_ticks(axes[0], budgets, _short_number)
    axes[0].set_xlabel("query budget (log scale)")
    axes[0].set_ylabel("agreement with the victim")
    _unit_axis(axes[0], "y", bottom, top)
    if single:
        axes[0].set_title(
            f"one budget ({_short_number(budgets[0])} queries): no curve, one point per "
            "attack and defence, side by side",
            fontsize=10,
        )
    if by_cost:
        costs = sorted({x for s in on_cost for x, _, _ in s})
        _log_ticks(axes[1], costs, lambda c: f"{c:g}")
        axes[1].set_xlabel("money spent (log scale)")
    elif len(paid) == 1:
        price = paid[0]
        top_axis = axes[0].secondary_xaxis("top", functions=_scale(price / 1000))
        top_axis.xaxis.set_minor_locator(NullLocator())
        top_axis.set_xticks([b * price / 1000 for b in budgets])
        top_axis.xaxis.set_major_formatter(FuncFormatter(lambda c, _: f"{c:g}"))
        top_axis.xaxis.set_minor_formatter(NullFormatter())
        top_axis.set_xlabel(f"money spent (at {price:g} per 1,000 queries)")
    for ax in axes:
        ax.grid(True, alpha=0.3)
    _legend(fig, styles, labels, title="attack | defence")
    return fig


def has_curve(curves: Mapping[tuple[str, str], Sequence[CurvePoint]]) -> bool:
    """Whether ``curves`` make a fidelity figure: more than one point in all. A single run (one
    attack, one defence, one budget) is a number, which the runs table already shows."""
    return sum(len(points) for points in curves.values()) >= 2


def has_tradeoff(points: Sequence[TradeoffPoint]) -> bool:
    """Whether ``points`` make a protection-against-utility figure: two defences or more.

    One defence (say only ``none`` was run) is one column with nothing to trade off against;
    the report leaves that figure out, and its Defences table holds the numbers.
    """
    return len({p.defense for p in points}) >= 2


def protection_vs_utility(points: Sequence[TradeoffPoint]) -> Figure:
    """For each defence, the victim's accuracy under it (x) against each attack's agreement (y).

    Right is better for honest users; low is better protection. Colour and marker mark the
    attack; each defence's markers form a column labelled with its name. Defences of equal (or
    nearly equal) accuracy, common since top-k, rounding and argmax keep the top-1 label, are
    drawn side by side a few points apart rather than on top of each other. Both axes span at
    least 0.2 of [0, 1]. The figure compares defences: see ``has_tradeoff`` for when it is
    worth drawing (given one defence it still draws its column).
    """
    attacks = sorted({p.attack for p in points})
    utility = {p.defense: p.victim_accuracy for p in points}
    left, right = _unit_limits(utility.values())
    fig = _figure((9.0, 4.8))
    ax = fig.add_subplot()

    shift = _dodge(utility, gap=0.05 * (right - left), step=14.0)
    for defense, (dx, sharing) in shift.items():
        column = [p for p in points if p.defense == defense]
        moved = offset_copy(ax.transData, fig=fig, x=dx, y=0.0, units="points")
        for p in column:
            i = attacks.index(p.attack)
            ax.scatter(
                [p.victim_accuracy],
                [p.agreement],
                s=55,
                alpha=0.85,
                zorder=3,
                transform=moved,
                color=_COLORS[i % len(_COLORS)],
                marker=_MARKERS[i % len(_MARKERS)],
            )
        highest = max(column, key=lambda p: p.agreement)
        ax.annotate(
            defense,
            (highest.victim_accuracy, highest.agreement),
            xytext=(dx, 8),
            textcoords="offset points",
            rotation=90 if sharing > 1 else 0,
            ha="center",
            va="bottom",
            fontsize=8.5,
            color="#333",
        )
    # Scatters drawn through an offset transform do not update the data limits: set them.
    bottom, top = _unit_limits(p.agreement for p in points)
    _unit_axis(ax, "x", left, right)
    _unit_axis(ax, "y", bottom, top + 0.3 * (top - bottom))  # room above for the names
    ax.set_xlabel("victim accuracy under the defence (utility for honest users; right is better)")
    ax.set_ylabel("agreement at largest budget\n(lower is better protection)")
    ax.grid(True, alpha=0.3)
    handles = [
        Line2D(
            [],
            [],
            linestyle="",
            color=_COLORS[i % len(_COLORS)],
            marker=_MARKERS[i % len(_MARKERS)],
        )
        for i in range(len(attacks))
    ]
    fig.legend(
        handles, attacks, title="attack", loc="outside right upper", fontsize=9, frameon=False
    )
    return fig


def convergence(curves: Mapping[str, Sequence[tuple[float, float, float | None]]]) -> Figure:
    """Accuracy (left) and agreement (right) against queries spent within one run, one line per
    run label; points are ``(queries, agreement, accuracy)``, accuracy None when unknown.

    These are the convergence curves of data-free attacks (MEGA's Fig. 3 style): a steady climb
    or an oscillation shows here, not in end-of-budget numbers. Both panels span [0, 1]. Runs
    whose curves hide each other in a panel (within 0.02 at every checkpoint they share) are
    dodged sideways there by a few per cent of the queries, each later one thinner over the
    thicker earlier ones; a marker at each checkpoint and the legend, which names every run,
    tell them apart.
    """
    fig = _figure((11.0, 4.4))
    ax_acc, ax_agr = fig.subplots(1, 2, sharey=True)
    runs = [(label, sorted(pts, key=lambda p: p[0])) for label, pts in sorted(curves.items())]
    labels = [label for label, _ in runs]
    styles: list[Style] = [
        (
            _COLORS[i % len(_COLORS)],
            _LINESTYLES[(i // len(_COLORS)) % len(_LINESTYLES)],
            _MARKERS[i % len(_MARKERS)],
        )
        for i in range(len(runs))
    ]
    agreement = [[(q, a, 0.0) for q, a, _ in pts] for _, pts in runs]
    accuracy = [[(q, c, 0.0) for q, _, c in pts if c is not None] for _, pts in runs]
    for ax, placed in ((ax_acc, accuracy), (ax_agr, agreement)):
        _draw(ax, placed, styles, labels, tol=_HIDES, log=False, markersize=4.0)
    for ax, name in ((ax_acc, "accuracy"), (ax_agr, "agreement with the victim")):
        ax.set_xlabel("queries spent")
        ax.set_title(name, fontsize=10)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _short_number(v)))
        ax.grid(True, alpha=0.3)
    ax_acc.set_ylim(0, 1)
    _legend(fig, styles, labels)
    return fig


# --- drawing series that stay apart ------------------------------------------------------------


def _draw(
    ax: Axes,
    series: Sequence[Sequence[tuple[float, float, float]]],
    styles: Sequence[Style],
    labels: Sequence[str],
    *,
    tol: float,
    log: bool = True,
    spread: bool = False,
    markersize: float = 6.0,
) -> None:
    """Each series of ``(x, y, y error)`` points as a line in its style, labelled.

    Series that hide each other (``_hiding``) are dodged sideways about their true x and drawn
    thinner each after the first; with ``spread`` every series is dodged (one x, points side
    by side) at full weight.
    """
    values = [{x: y for x, y, _ in s} for s in series]
    groups = [list(range(len(series)))] if spread else _hiding(values, tol)
    slots = _slots(groups)
    step = _step([x for s in series for x, _, _ in s], log=log, crowd=len(series) if spread else 0)
    for i, (points, (color, linestyle, marker), label) in enumerate(
        zip(series, styles, labels, strict=True)
    ):
        if not points:
            continue
        slot, rank, size = slots[i]
        lw, ms = _weight(0, 1, markersize) if spread else _weight(rank, size, markersize)
        xs = [x * 10 ** (slot * step) if log else x + slot * step for x, _, _ in points]
        ax.errorbar(
            xs,
            [y for _, y, _ in points],
            yerr=[e for _, _, e in points] if any(e for _, _, e in points) else None,
            color=color,
            linestyle=linestyle,
            marker=marker,
            linewidth=lw,
            markersize=ms,
            capsize=3,
            zorder=2 + rank / 10,
            label=label,
        )


def _hiding(series: Sequence[Mapping[float, float]], tol: float) -> list[list[int]]:
    """The indices of ``series`` (each x -> y) grouped by which hide each other, in order.

    Two series hide each other when they share an x and lie within ``tol`` at every x they
    share; a series hidden by one hidden by a third joins their group.
    """
    parent = list(range(len(series)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    for j, b in enumerate(series):
        for i, a in enumerate(series[:j]):
            shared = a.keys() & b.keys()
            if shared and all(abs(a[x] - b[x]) <= tol for x in shared):
                ri, rj = root(i), root(j)
                parent[max(ri, rj)] = min(ri, rj)
    groups: dict[int, list[int]] = {}
    for i in range(len(series)):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())


def _slots(groups: Sequence[Sequence[_K]]) -> dict[_K, tuple[float, int, int]]:
    """For each member: its slot (centred on 0, one apart), its rank in its group, the group's size."""
    return {
        key: (k - (len(group) - 1) / 2, k, len(group))
        for group in groups
        for k, key in enumerate(group)
    }


def _step(xs: Sequence[float], *, log: bool, crowd: int = 0) -> float:
    """The distance between neighbouring slots on an x axis over ``xs``: a few points (decades
    on a log axis); with ``crowd`` series spread at one x, enough to fill its window."""
    if log:
        positive = [x for x in xs if x > 0]
        if not positive:
            return 0.0
        if crowd > 1:
            return min(0.1, 0.45 / (crowd - 1))  # decades, within the window of _log_ticks
        return 0.03 * max(math.log10(max(positive) / min(positive)), math.log10(4))
    if not xs:
        return 0.0
    return 0.03 * ((max(xs) - min(xs)) or abs(max(xs)) or 1.0)


def _weight(rank: int, size: int, markersize: float) -> tuple[float, float]:
    """Line width and marker size of the ``rank``-th of ``size`` series that hide each other:
    each later one thinner and smaller, drawn over the earlier ones, so each shows at its rim."""
    extra = min(size - 1 - rank, 3)
    return 1.5 + 1.2 * extra, markersize * (1 + 0.4 * extra)


def _legend(fig: Figure, styles: Sequence[Style], labels: Sequence[str], title: str = "") -> None:
    """One legend entry per series, in its colour, line style and marker."""
    handles = [
        Line2D([], [], color=color, linestyle=linestyle, marker=marker, lw=1.5)
        for color, linestyle, marker in styles
    ]
    fig.legend(
        handles,
        labels,
        title=title or None,
        loc="outside right upper",
        ncols=1 if len(labels) <= 16 else 2,
        fontsize=9,
        frameon=False,
    )


def _dodge(
    positions: Mapping[str, float], *, gap: float, step: float
) -> dict[str, tuple[float, int]]:
    """For each name, a sideways offset (points) that spreads names whose positions lie within
    ``gap`` of each other, and how many names share its place."""
    order = sorted(positions, key=lambda name: positions[name])
    groups: list[list[str]] = []
    for name in order:
        if groups and positions[name] - positions[groups[-1][-1]] <= gap:
            groups[-1].append(name)
        else:
            groups.append([name])
    return {name: (slot * step, size) for name, (slot, _, size) in _slots(groups).items()}


# --- axes ----------------------------------------------------------------------------------------


def _unit_limits(
    values: Iterable[float], *, min_span: float = _MIN_SPAN, pad: float = 0.04
) -> tuple[float, float]:
    """Limits of an axis of fractions (agreement, accuracy) that do not magnify tiny differences.

    The values' range, clipped to [0, 1], widened about its centre to at least ``min_span``
    (moved, not cut, where it would leave [0, 1]), then padded by ``pad`` of its span each side
    so a marker at 0 or 1 shows whole: a flat line at 0.285-0.315 gets about 0.19-0.41.
    """
    kept = [min(max(v, 0.0), 1.0) for v in values if math.isfinite(v)]
    lo, hi = (min(kept), max(kept)) if kept else (0.0, 1.0)
    if hi - lo < min_span:
        lo = min(max((lo + hi) / 2 - min_span / 2, 0.0), 1.0 - min_span)
        hi = lo + min_span
    margin = pad * (hi - lo)
    return lo - margin, hi + margin


def _unit_axis(ax: Axes, which: str, low: float, high: float) -> None:
    """Set an axis of fractions to ``low``-``high``, with ticks only inside [0, 1]."""
    axis = ax.yaxis if which == "y" else ax.xaxis
    (ax.set_ylim if which == "y" else ax.set_xlim)(low, high)
    first, last = max(low, 0.0) - 1e-9, min(high, 1.0) + 1e-9
    axis.set_ticks([t for t in axis.get_majorticklocs() if first <= t <= last])


def _scale(factor: float) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """Forward and inverse maps of a secondary axis that is ``factor`` times its parent."""
    return (lambda x: x * factor, lambda y: y / factor)


def _figure(size: tuple[float, float]) -> Figure:
    fig = Figure(figsize=size, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _log_ticks(ax: Axes, values: Sequence[float], label: Callable[[float], str]) -> None:
    """A log x axis whose ticks are exactly ``values``, labelled by ``label(value)``."""
    ax.set_xscale("log")
    if not values:
        return
    ax.set_xticks(values)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: label(v)))
    ax.xaxis.set_minor_locator(NullLocator())
    if len(values) == 1:
        ax.set_xlim(values[0] / 2, values[0] * 2)


def _short_number(value: float) -> str:
    for size, suffix in ((1e6, "M"), (1e3, "k")):
        if value >= size:
            return f"{value / size:g}{suffix}"
    return f"{value:g}"
