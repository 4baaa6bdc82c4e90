"""The report's two figures, drawn on matplotlib's Agg canvas and embedded as PNG data URIs.

    fig = fidelity_vs_budget({("knockoff-random", "none"): [CurvePoint(1000, 0.91)]})
    src = to_data_uri(fig)            # "data:image/png;base64,..."

The functions take plain points, not a results dict (the report shapes those); each returns a
``matplotlib.figure.Figure`` bound to an Agg canvas. No pyplot is involved, so no global figure
registry holds the figures and nothing needs closing: a figure is freed once dropped.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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

    Colour marks the attack, line style and marker the defence; error bars are the std over
    seeds. ``prices`` are the distinct prices per 1,000 queries seen in the runs: one non-zero
    price adds a money axis on top; several (so budget no longer fixes money) add a second
    panel of agreement against cost.
    """
    attacks = sorted({attack for attack, _ in curves})
    defenses = sorted({defense for _, defense in curves})
    paid = sorted({p for p in prices if p > 0})
    by_cost = len(paid) > 1 or (len(paid) == 1 and len(set(prices)) > 1)
    fig = _figure((11.0, 4.6) if by_cost else (9.0, 4.8))
    axes = fig.subplots(1, 2, sharey=True) if by_cost else [fig.add_subplot()]

    for (attack, defense), points in sorted(curves.items()):
        color = _COLORS[attacks.index(attack) % len(_COLORS)]
        style = defenses.index(defense)
        pts = sorted(points, key=lambda p: p.budget)
        _curve(axes[0], [p.budget for p in pts], pts, color, style)
        if by_cost:
            costed = [p for p in pts if p.cost is not None and p.cost > 0]
            _curve(axes[1], [p.cost or 0.0 for p in costed], costed, color, style)

    budgets = sorted({p.budget for pts in curves.values() for p in pts if p.budget > 0})
    _log_ticks(axes[0], budgets, _short_number)
    axes[0].set_xlabel("query budget (log scale)")
    axes[0].set_ylabel("agreement with the victim")
    if by_cost:
        costs = sorted({p.cost for pts in curves.values() for p in pts if p.cost and p.cost > 0})
        _log_ticks(axes[1], costs, lambda c: f"{c:g}")
        axes[1].set_xlabel("money spent (log scale)")
    elif len(paid) == 1:
        price = paid[0]
        top = axes[0].secondary_xaxis("top", functions=_scale(price / 1000))
        top.xaxis.set_minor_locator(NullLocator())
        top.set_xticks([b * price / 1000 for b in budgets])
        top.xaxis.set_major_formatter(FuncFormatter(lambda c, _: f"{c:g}"))
        top.xaxis.set_minor_formatter(NullFormatter())
        top.set_xlabel(f"money spent (at {price:g} per 1,000 queries)")
    for ax in axes:
        ax.grid(True, alpha=0.3)

    handles = [Line2D([], [], color=_COLORS[i % len(_COLORS)], lw=2) for i in range(len(attacks))]
    handles += [
        Line2D(
            [],
            [],
            color="#444",
            linestyle=_LINESTYLES[i % len(_LINESTYLES)],
            marker=_MARKERS[i % len(_MARKERS)],
        )
        for i in range(len(defenses))
    ]
    labels = [f"attack: {a}" for a in attacks] + [f"defence: {d}" for d in defenses]
    fig.legend(handles, labels, loc="outside right upper", fontsize=9, frameon=False)
    return fig


def protection_vs_utility(points: Sequence[TradeoffPoint]) -> Figure:
    """For each defence, the victim's accuracy under it (x) against each attack's agreement (y).

    Right is better for honest users; low is better protection. Colour and marker mark the
    attack; each defence's markers form a column labelled with its name. Defences of equal (or
    nearly equal) accuracy, common since top-k, rounding and argmax keep the top-1 label, are
    drawn side by side a few points apart rather than on top of each other.
    """
    attacks = sorted({p.attack for p in points})
    utility = {p.defense: p.victim_accuracy for p in points}
    lo, hi = min(utility.values()), max(utility.values())
    pad = max(0.15 * (hi - lo), 0.005)
    left, right = lo - pad, max(min(hi + pad, 1.0 + pad / 3), hi + pad / 3)
    fig = _figure((9.0, 4.8))
    ax = fig.add_subplot()
    ax.set_xlim(left, right)

    shift = _dodge(utility, gap=0.03 * (right - left), step=14.0)
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
    low, high = min(p.agreement for p in points), max(p.agreement for p in points)
    span = max(high - low, 0.05)
    bottom, top = max(low - 0.15 * span, -0.02), high + 0.35 * span  # room above for labels
    ax.set_ylim(bottom, top)
    ax.set_yticks([t for t in ax.get_yticks() if max(bottom, 0.0) <= t <= min(top, 1.0)])
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
    return {
        name: ((k - (len(group) - 1) / 2) * step, len(group))
        for group in groups
        for k, name in enumerate(group)
    }


def _curve(
    ax: Axes, xs: Sequence[float], points: Sequence[CurvePoint], color: str, style: int
) -> None:
    ax.errorbar(
        xs,
        [p.agreement for p in points],
        yerr=[p.agreement_std for p in points],
        color=color,
        linestyle=_LINESTYLES[style % len(_LINESTYLES)],
        marker=_MARKERS[style % len(_MARKERS)],
        markersize=6,
        capsize=3,
    )


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


def convergence(curves: Mapping[str, Sequence[tuple[float, float, float | None]]]) -> Figure:
    """Accuracy (left) and agreement (right) against queries spent within one run, one line per
    run label; points are ``(queries, agreement, accuracy)``, accuracy None when unknown.

    These are the convergence curves of data-free attacks (MEGA's Fig. 3 style): a steady climb
    or an oscillation shows here, not in end-of-budget numbers.
    """
    fig = _figure((11.0, 4.4))
    ax_acc, ax_agr = fig.subplots(1, 2, sharey=True)
    for i, (label, pts) in enumerate(sorted(curves.items())):
        pts = sorted(pts)
        color = _COLORS[i % len(_COLORS)]
        style = _LINESTYLES[(i // len(_COLORS)) % len(_LINESTYLES)]
        xs = [q for q, _, _ in pts]
        ax_agr.plot(xs, [a for _, a, _ in pts], color=color, linestyle=style, label=label)
        acc = [(q, c) for q, _, c in pts if c is not None]
        if acc:
            ax_acc.plot([q for q, _ in acc], [c for _, c in acc], color=color, linestyle=style)
    for ax, name in ((ax_acc, "accuracy"), (ax_agr, "agreement with the victim")):
        ax.set_xlabel("queries spent")
        ax.set_title(name, fontsize=10)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: _short_number(v)))
        ax.grid(True, alpha=0.3)
    ax_acc.set_ylim(0, 1)
    fig.legend(loc="outside right upper", fontsize=9, frameon=False)
    return fig
