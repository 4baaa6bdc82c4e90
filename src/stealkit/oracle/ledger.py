"""The query ledger: an exact count of inputs answered, a budget, and a price."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from typing import Any

from stealkit.errors import BudgetExceeded

Listener = Callable[["Ledger"], None]


def _count(n: object) -> int:
    if isinstance(n, bool) or not hasattr(n, "__index__"):
        raise ValueError(f"a query count must be an integer, got {n!r}")
    value = int(n)  # type: ignore[call-overload]
    if value < 0:
        raise ValueError(f"a batch cannot have {value} inputs")
    return value


class Ledger:
    """Counts every input an oracle answers and refuses batches that would cross the budget.

    A batch of 64 inputs costs 64 queries. A batch that would take ``spent`` past ``budget`` is
    refused whole and nothing is charged. Money is ``spent * price_per_1k / 1000``.

    The ledger is exact under concurrency: an oracle ``reserve``s a batch (check and hold, under
    one lock) before it answers, ``commit``s the reservation once the answer is good, and
    ``release``s it when answering failed, so threads sharing one ledger can never answer more
    than the budget between them.

    Args:
        budget: most queries this ledger will pay for; ``None`` for no limit.
        price_per_1k: price of 1,000 queries, in any currency unit.
        on_charge: called with the ledger after every charge (a progress bar, say).
    """

    def __init__(
        self,
        *,
        budget: int | None = None,
        price_per_1k: float = 0.0,
        on_charge: Listener | None = None,
    ) -> None:
        if budget is not None:
            if isinstance(budget, bool) or not hasattr(budget, "__index__") or int(budget) < 0:
                raise ValueError(f"budget must be a non-negative integer or None, got {budget!r}")
            budget = int(budget)
        if not math.isfinite(price_per_1k) or price_per_1k < 0:
            raise ValueError(f"price_per_1k must be a finite number >= 0, got {price_per_1k}")
        self.budget = budget
        self.price_per_1k = float(price_per_1k)
        self.on_charge = on_charge
        self.spent = 0
        self.reserved = 0
        self.calls = 0
        self.refused_calls = 0
        self.refused_queries = 0
        self._lock = threading.Lock()

    @property
    def remaining(self) -> int | None:
        """Queries still available, not counting those reserved by batches in flight."""
        return None if self.budget is None else self.budget - self.spent - self.reserved

    @property
    def cost(self) -> float:
        return self.spent * self.price_per_1k / 1000.0

    def _refuse(self, n: int) -> BudgetExceeded:
        """Count a refusal (the caller holds the lock) and the error that explains it."""
        assert self.budget is not None
        self.refused_calls += 1
        self.refused_queries += n
        held = f" and {self.reserved} reserved by batches in flight" if self.reserved else ""
        return BudgetExceeded(
            f"a batch of {n} queries would exceed the budget: {self.spent} of {self.budget} "
            f"spent{held}, {self.budget - self.spent - self.reserved} left; nothing was charged. "
            "Send at most ledger.remaining inputs, or raise the budget."
        )

    def check(self, n: int) -> None:
        """Raise BudgetExceeded (and record the refusal) if ``n`` more queries cross the budget."""
        self._hold(n, keep=False)

    def reserve(self, n: int) -> None:
        """Check ``n`` queries against the budget and hold them for a batch being answered."""
        self._hold(n, keep=True)

    def _hold(self, n: int, *, keep: bool) -> None:
        n = _count(n)
        with self._lock:
            if self.budget is not None and self.spent + self.reserved + n > self.budget:
                raise self._refuse(n)
            if keep:
                self.reserved += n

    def release(self, n: int) -> None:
        """Give back a reservation whose batch was not answered: nothing is charged."""
        n = _count(n)
        with self._lock:
            if n > self.reserved:
                raise ValueError(f"cannot release {n} queries, only {self.reserved} are reserved")
            self.reserved -= n

    def commit(self, n: int) -> None:
        """Charge a reservation of ``n`` queries whose batch was answered."""
        n = _count(n)
        with self._lock:
            if n > self.reserved:
                raise ValueError(f"cannot commit {n} queries, only {self.reserved} are reserved")
            self.reserved -= n
            self.spent += n
            self.calls += 1
        if self.on_charge is not None:
            self.on_charge(self)

    def record(self, n: int) -> None:
        """Charge ``n`` answered queries that were not reserved; a count that is negative or
        would cross the budget is refused (ValueError) and nothing is charged."""
        n = _count(n)
        with self._lock:
            if self.budget is not None and self.spent + self.reserved + n > self.budget:
                raise ValueError(
                    f"cannot record {n} queries: {self.spent} of {self.budget} spent and "
                    f"{self.reserved} reserved; check or reserve before answering"
                )
            self.spent += n
            self.calls += 1
        if self.on_charge is not None:
            self.on_charge(self)

    def charge(self, n: int) -> None:
        """Reserve then commit, for callers with nothing to do in between."""
        self.reserve(n)
        self.commit(n)

    def state_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget,
            "price_per_1k": self.price_per_1k,
            "spent": self.spent,
            "cost": self.cost,
            "calls": self.calls,
            "refused_calls": self.refused_calls,
            "refused_queries": self.refused_queries,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with self._lock:
            self.budget = state["budget"]
            self.price_per_1k = float(state["price_per_1k"])
            self.spent = int(state["spent"])
            self.calls = int(state.get("calls", 0))
            self.refused_calls = int(state.get("refused_calls", 0))
            self.refused_queries = int(state.get("refused_queries", 0))

    def __getstate__(self) -> dict[str, Any]:  # a lock cannot be pickled (Ray, multiprocessing)
        state = self.__dict__.copy()
        del state["_lock"]
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"Ledger(spent={self.spent}, budget={self.budget}, "
            f"price_per_1k={self.price_per_1k}, cost={self.cost:.4f})"
        )
