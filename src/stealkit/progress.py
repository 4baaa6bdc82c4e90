"""Progress inside a run: bars on a terminal, a plain line about every 10% otherwise.

Library code reports work through ``track(kind, total)``; nothing is shown unless a caller (the
CLI's ``stealkit run``) opened a ``reporting(...)`` block, so tests and library users see no
output they did not ask for.

    with reporting(enabled=True):           # the runner does this
        bar = track("training steps", 600)  # the training loop does this
        for step in range(600):
            bar.update(1)
        bar.close()
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import IO, Any

_REPORTER: ContextVar[_Reporter | None] = ContextVar("stealkit_progress", default=None)


class Tracker:
    """One piece of work with a known size; ``update`` adds done units, ``close`` ends it."""

    def update(self, n: int = 1) -> None:  # noqa: B027 - the silent tracker does nothing
        """Count ``n`` more units done."""

    def set(self, done: int) -> None:  # noqa: B027
        """Set the units done (for counters that are read, like a ledger's spent)."""

    def close(self) -> None:  # noqa: B027
        """End the work (the bar disappears; the plain form prints its last line)."""


class _Bar(Tracker):
    def __init__(self, desc: str, total: int, unit: str, stream: IO[str], position: int) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm(
            total=total,
            desc=desc,
            unit=unit,
            file=stream,
            leave=False,
            position=position,
            dynamic_ncols=True,
            mininterval=0.5,
        )

    def update(self, n: int = 1) -> None:
        self._tqdm.update(n)

    def set(self, done: int) -> None:
        self._tqdm.update(done - self._tqdm.n)

    def close(self) -> None:
        self._tqdm.close()


class _Lines(Tracker):
    """A line at every further tenth of the work, and one at the end."""

    def __init__(self, desc: str, total: int, unit: str, stream: IO[str], prefix: str) -> None:
        self.desc, self.total, self.unit, self.stream, self.prefix = (
            desc,
            total,
            unit,
            stream,
            prefix,
        )
        self.done, self._next, self._t0 = 0, max(1, total // 10), time.monotonic()
        self._closed = False

    def update(self, n: int = 1) -> None:
        self.set(self.done + n)

    def set(self, done: int) -> None:
        self.done = done
        if self.done >= self._next and self.done < self.total:
            self._line()
            step = max(1, self.total // 10)
            self._next = (self.done // step + 1) * step

    def _line(self) -> None:
        pct = 100.0 * self.done / self.total if self.total else 100.0
        secs = time.monotonic() - self._t0
        print(
            f"{self.prefix}{self.desc}: {self.done:,}/{self.total:,} {self.unit} "
            f"({pct:.0f}%, {secs:.0f} s)",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._line()


class _Reporter:
    def __init__(self, tty: bool, stream: IO[str], prefix: str) -> None:
        self.tty, self.stream, self.prefix = tty, stream, prefix
        self.open: list[Tracker] = []

    def track(self, desc: str, total: int, unit: str) -> Tracker:
        t: Tracker
        if self.tty:
            t = _Bar(desc, total, unit, self.stream, position=len(self.open) + 1)
        else:
            t = _Lines(desc, total, unit, self.stream, self.prefix)
        self.open.append(t)
        return _Closing(t, self)


class _Closing(Tracker):
    """Removes its tracker from the reporter's stack when closed."""

    def __init__(self, inner: Tracker, owner: _Reporter) -> None:
        self.inner, self.owner = inner, owner

    def update(self, n: int = 1) -> None:
        self.inner.update(n)

    def set(self, done: int) -> None:
        self.inner.set(done)

    def close(self) -> None:
        self.inner.close()
        if self.inner in self.owner.open:
            self.owner.open.remove(self.inner)


@contextmanager
def reporting(
    *,
    enabled: bool = True,
    tty: bool | None = None,
    stream: IO[str] | None = None,
    prefix: str = "  ",
) -> Iterator[None]:
    """Show the progress that library code reports inside this block (``enabled=False``: none).

    ``tty`` picks bars (True) or plain lines (False); by default, bars when ``stream`` (stderr)
    is a terminal.
    """
    out = stream if stream is not None else sys.stderr
    rep = _Reporter(out.isatty() if tty is None else tty, out, prefix) if enabled else None
    token = _REPORTER.set(rep)
    try:
        yield
    finally:
        _REPORTER.reset(token)


def track(desc: str, total: int, *, unit: str = "it") -> Tracker:
    """A tracker for ``total`` units of work: a bar or lines inside ``reporting``, else silent."""
    rep = _REPORTER.get()
    if rep is None or total < 1:
        return Tracker()
    return rep.track(desc, total, unit)


def active() -> bool:
    """Whether progress is being shown (cheap code paths may skip building descriptions)."""
    return _REPORTER.get() is not None


def ledger_tracker(desc: str, budget: int | None) -> tuple[Tracker, Any]:
    """A tracker of queries bought against ``budget`` and the ``on_charge`` listener that feeds
    it from a ``Ledger``."""
    t = track(desc, budget or 0, unit="q")
    return t, (lambda ledger: t.set(ledger.spent))
