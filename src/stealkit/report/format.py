"""How the report writes values: every function takes what the results hold and returns text.

    fmt.fraction(0.91234)   # "0.912"
    fmt.count(48000)        # "48,000"
    fmt.money(None)         # "—": a missing value is shown as MISSING, never guessed

Numbers are read with ``read.num``, so booleans, NaN and text are never formatted as numbers.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any

from stealkit.report.read import num

MISSING = "—"


def text(value: Any) -> str:
    """Any value as text; None and "" as MISSING."""
    return MISSING if value is None or value == "" else str(value)


def fraction(value: Any) -> str:
    """A rate or accuracy with three decimals."""
    number = num(value)
    return MISSING if number is None else f"{round(number, 3) + 0.0:.3f}"  # + 0.0: no "-0.000"


def count(value: Any) -> str:
    """A count with thousands separators; non-numbers (a seed named "a") as their text."""
    number = num(value)
    if number is None:
        return text(value)
    return f"{number:,.0f}" if number == int(number) else f"{number:,g}"


def money(value: Any) -> str:
    """A price with two decimals, or two significant digits below a cent."""
    number = num(value)
    if number is None:
        return MISSING
    return f"{number:,.2f}" if number == 0 or abs(number) >= 0.01 else f"{number:.2g}"


def seconds(value: Any) -> str:
    """Seconds with one decimal."""
    number = num(value)
    return MISSING if number is None else f"{number:,.1f}"


def duration(secs: float) -> str:
    """A length of time for people: "1 h 02 min", "3 min 05 s", "24.2 s"."""
    minutes, whole = divmod(round(secs), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {whole:02d} s" if minutes else f"{secs:.1f} s"


def date(value: Any) -> str:
    """An ISO timestamp to the minute; anything that is not one as its text."""
    if not isinstance(value, str):
        return text(value)
    try:
        return datetime.fromisoformat(value).strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return value


def mean_std(values: Sequence[float]) -> str:
    """Mean ± sample standard deviation; a single value alone."""
    if not values:
        return MISSING
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"


def sized(name: Any, size: Any) -> str:
    """A data set's name, with its size in images where known."""
    return text(name) if num(size) is None else f"{text(name)} ({count(size)} images)"


def total(values: Iterable[float | None], fmt: Callable[[float], str]) -> str:
    """The sum of the known values, formatted; MISSING when none is known."""
    known = [v for v in values if v is not None]
    return fmt(sum(known)) if known else MISSING
