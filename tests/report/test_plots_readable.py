"""The report's figures stay readable: no hidden series, no magnified flat lines, no one-point
figures. Each test reads the drawn Axes back (limits, line data, legend texts)."""

from __future__ import annotations

from typing import Any

import pytest
from matplotlib.axes import Axes
from matplotlib.container import ErrorbarContainer
from matplotlib.figure import Figure

from stealkit.report import render_html
from stealkit.report.plots import (
    CurvePoint,
    TradeoffPoint,
    convergence,
    fidelity_vs_budget,
    has_tradeoff,
    protection_vs_utility,
)

BUDGETS = (1000.0, 5000.0, 20000.0)


def _flat(level: float, wobble: float = 0.0) -> list[CurvePoint]:
    return [CurvePoint(b, level + wobble * (i % 2), 0.004) for i, b in enumerate(BUDGETS)]


def _series(ax: Axes) -> dict[str, tuple[list[float], list[float], float]]:
    """label -> (x data, y data, line width) of each series drawn on ``ax``."""
    out = {}
    for c in ax.containers:
        assert isinstance(c, ErrorbarContainer)
        line = c.lines[0]
        assert line is not None
        xs, ys = (list(map(float, d)) for d in line.get_data())
        out[c.get_label()] = (xs, ys, float(line.get_linewidth()))
    return out


def _legend(fig: Figure) -> list[str]:
    return [t.get_text() for legend in fig.legends for t in legend.get_texts()]


# --- 1. overlapping series stay distinguishable -----------------------------------------------


def test_identical_fidelity_curves_are_dodged_thinned_and_named() -> None:
    curves = {("knockoff", "none"): _flat(0.3), ("knockoff", "top1"): _flat(0.3)}
    fig = fidelity_vs_budget(curves)
    drawn = _series(fig.axes[0])
    (xs_a, ys_a, lw_a), (xs_b, ys_b, lw_b) = drawn["knockoff | none"], drawn["knockoff | top1"]
    assert ys_a == ys_b
    for a, b, budget in zip(xs_a, xs_b, BUDGETS, strict=True):
        assert a < budget < b  # dodged to either side of the true budget...
        assert 0.9 < a / budget and b / budget < 1.1  # ...by a few per cent only
    assert lw_a > lw_b  # the later one drawn thinner over the earlier
    assert _legend(fig) == ["knockoff | none", "knockoff | top1"]


def test_nearly_identical_curves_and_a_curve_hidden_at_one_budget_are_dodged() -> None:
    curves = {
        ("a", "none"): _flat(0.5),
        ("b", "none"): _flat(0.5, wobble=0.002),  # within a marker of ("a", "none")
        ("c", "none"): [CurvePoint(5000.0, 0.5)],  # one point, under the others' middle one
    }
    drawn = _series(fidelity_vs_budget(curves).axes[0])
    middles = sorted(xs[-1] if len(xs) == 1 else xs[1] for xs, _, _ in drawn.values())
    assert len(set(middles)) == 3 and middles[0] < 5000.0 < middles[-1]


def test_distinct_curves_keep_their_true_budgets() -> None:
    curves = {("a", "none"): _flat(0.2), ("a", "top1"): _flat(0.5), ("b", "none"): _flat(0.8)}
    fig = fidelity_vs_budget(curves)
    for xs, _, lw in _series(fig.axes[0]).values():
        assert xs == list(BUDGETS) and lw == 1.5
    assert len(_legend(fig)) == 3


def test_identical_convergence_curves_are_dodged_in_both_panels() -> None:
    curve = [(128.0, 0.2, 0.19), (256.0, 0.4, 0.38), (384.0, 0.5, 0.49)]
    labels = [f"dfme | {d} | seed 0 | 384 q" for d in ("none", "rounding", "top1")]
    fig = convergence({label: curve for label in labels})
    for ax in fig.axes[:2]:
        drawn = _series(ax)
        assert set(drawn) == set(labels)
        firsts = sorted(xs[0] for xs, _, _ in drawn.values())
        assert firsts[0] < 128.0 < firsts[-1] and len(set(firsts)) == 3
        widths = [drawn[label][2] for label in labels]
        assert widths == sorted(widths, reverse=True) and widths[0] > widths[-1]
        assert ax.get_ylim() == (0.0, 1.0)
    assert _legend(fig) == labels


# --- 2. y axes do not magnify tiny differences --------------------------------------------------


@pytest.mark.parametrize("level", [0.0, 0.3, 0.97, 0.99])
def test_a_flat_line_gets_at_least_a_fifth_of_the_unit_axis(level: float) -> None:
    fig = fidelity_vs_budget({("knockoff", "none"): _flat(level, wobble=0.01)})
    bottom, top = fig.axes[0].get_ylim()
    assert top - bottom >= 0.2
    assert bottom <= level and level + 0.01 <= top  # the data stays in view...
    assert -0.05 <= bottom and top <= 1.05  # ...and the axis stays about [0, 1]
    assert all(0.0 <= t <= 1.0 for t in fig.axes[0].get_yticks())


def test_a_wide_spread_keeps_its_own_range() -> None:
    curves = {("a", "none"): _flat(0.1), ("b", "none"): _flat(0.9)}
    bottom, top = fidelity_vs_budget(curves).axes[0].get_ylim()
    assert 0.0 < bottom < 0.1 and 0.9 < top < 1.0


def test_the_money_panel_shares_the_wide_axis() -> None:
    curves = {
        ("a", "none"): [CurvePoint(b, 0.3, 0.0, b / 1000) for b in BUDGETS],
        ("a", "top1"): [CurvePoint(b, 0.3, 0.0, b / 500) for b in BUDGETS],
    }
    fig = fidelity_vs_budget(curves, prices=[1.0, 2.0])
    assert len(fig.axes) == 2
    for ax in fig.axes:
        bottom, top = ax.get_ylim()
        assert top - bottom >= 0.2


def test_protection_vs_utility_axes_span_at_least_a_fifth() -> None:
    points = [
        TradeoffPoint("none", "knockoff", 0.997, 0.300),
        TradeoffPoint("top1", "knockoff", 0.990, 0.310),
    ]
    ax = protection_vs_utility(points).axes[0]
    (left, right), (bottom, top) = ax.get_xlim(), ax.get_ylim()
    assert right - left >= 0.2 and left <= 0.990 and 0.997 <= right <= 1.05
    assert top - bottom >= 0.2 and bottom <= 0.3 and 0.31 <= top
    assert all(0.0 <= t <= 1.0 for t in [*ax.get_xticks(), *ax.get_yticks()])


# --- 3. figures with nothing to compare ---------------------------------------------------------


def test_one_budget_degrades_to_points_side_by_side() -> None:
    curves = {  # apart in agreement, so only the one-budget spread moves them sideways
        (attack, defense): [CurvePoint(1000.0, 0.3 + 0.2 * i + 0.1 * j, 0.01)]
        for i, attack in enumerate(("copycat", "knockoff"))
        for j, defense in enumerate(("none", "top1"))
    }
    fig = fidelity_vs_budget(curves)
    ax = fig.axes[0]
    xs = [x for x, _, _ in _series(ax).values()]
    assert all(len(x) == 1 for x in xs)
    spots = sorted(x[0] for x in xs)
    assert len(set(spots)) == 4 and spots[0] < 1000.0 < spots[-1]
    left, right = ax.get_xlim()
    assert left < spots[0] and spots[-1] < right
    assert list(ax.get_xticks()) == [1000.0]
    assert "one budget" in ax.get_title()
    assert len(_legend(fig)) == 4


def test_has_tradeoff_needs_two_defences() -> None:
    only_none = [TradeoffPoint("none", a, 0.99, 0.8) for a in ("knockoff", "copycat")]
    assert not has_tradeoff(only_none)
    assert not has_tradeoff([])
    assert has_tradeoff([*only_none, TradeoffPoint("top1", "knockoff", 0.99, 0.7)])


def _results(defenses: tuple[str, ...]) -> dict[str, Any]:
    runs = [
        {
            "attack": attack,
            "defense": defense,
            "budget": budget,
            "seed": 0,
            "status": "ok",
            "metrics": {"agreement": 0.5 + 0.1 * i},
            "ledger": {"budget": budget, "spent": budget, "cost": budget / 1000},
        }
        for attack in ("knockoff", "copycat")
        for defense in defenses
        for i, budget in enumerate((1000, 5000))
    ]
    return {
        "name": "tiny",
        "defenses": [{"name": d, "victim_accuracy": 0.99} for d in defenses],
        "runs": runs,
    }


@pytest.mark.parametrize(("defenses", "shown"), [(("none",), False), (("none", "top1"), True)])
def test_protection_vs_utility_section_needs_two_defences(
    defenses: tuple[str, ...], shown: bool
) -> None:
    page = render_html(_results(defenses))
    assert ('id="protection-vs-utility"' in page) is shown
    assert ('alt="Protection vs utility"' in page) is shown
    assert 'alt="Fidelity vs budget"' in page
    assert page.count("data:image/png;base64,") == (2 if shown else 1)


def test_a_single_run_draws_no_fidelity_figure() -> None:
    one = _results(("none",))
    one["runs"] = one["runs"][:1]
    page = render_html(one)
    assert 'alt="Fidelity vs budget"' not in page and "data:image/png;base64," not in page
    assert "One run is one number" in page
    two = _results(("none",))
    two["runs"] = two["runs"][:2]  # one attack at two budgets: a curve
    assert 'alt="Fidelity vs budget"' in render_html(two)
