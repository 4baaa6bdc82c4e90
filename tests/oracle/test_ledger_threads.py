"""The ledger is exact under concurrency: threads sharing one oracle never answer past its budget,
and a batch that fails is never charged."""

from __future__ import annotations

import threading

import pytest
import torch
from torch import Tensor, nn

from stealkit.errors import BudgetExceeded, VictimError
from stealkit.oracle import InputSpec, Ledger, LocalOracle

SPEC = InputSpec(channels=1, height=8, width=8)


class Slow(nn.Module):
    """A classifier whose forward yields the GIL, so threads interleave inside answering."""

    def forward(self, x: Tensor) -> Tensor:
        out = x.reshape(len(x), 4, 16).mean(2)
        torch.nn.functional.conv2d(x, torch.ones(2, 1, 3, 3))  # releases the GIL for a moment
        return out


def _hammer(oracle: LocalOracle, threads: int, batches: int, size: int) -> tuple[int, int]:
    answered, refused = [0] * threads, [0] * threads
    x = torch.rand(size, *SPEC.shape, generator=torch.Generator().manual_seed(0))
    start = threading.Barrier(threads)

    def work(i: int) -> None:
        start.wait()
        for _ in range(batches):
            try:
                answered[i] += len(oracle.query(x))
            except BudgetExceeded:
                refused[i] += 1

    pool = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(answered), sum(refused)


@pytest.mark.parametrize("trial", range(3))
def test_sixteen_threads_never_overspend(trial: int) -> None:
    oracle = LocalOracle(Slow(), SPEC, ledger=Ledger(budget=10_000))
    answered, refused = _hammer(oracle, threads=16, batches=200, size=8)
    ledger = oracle.ledger
    assert ledger.spent == answered == 10_000  # 10,000 is a multiple of 8: the budget fills
    assert ledger.reserved == 0
    assert ledger.calls == 10_000 // 8
    assert refused == 16 * 200 - 10_000 // 8 == ledger.refused_calls
    assert ledger.refused_queries == 8 * refused


def test_odd_budget_under_threads_stops_short_and_exact() -> None:
    oracle = LocalOracle(Slow(), SPEC, ledger=Ledger(budget=1_001))
    answered, _ = _hammer(oracle, threads=8, batches=50, size=8)
    assert oracle.ledger.spent == answered == 1_000  # the last 8-batch would cross 1,001


class Flaky(nn.Module):
    """Fails on every other call, as a remote victim might."""

    def __init__(self) -> None:
        super().__init__()
        self.calls = 0
        self.lock = threading.Lock()

    def forward(self, x: Tensor) -> Tensor:
        with self.lock:
            self.calls += 1
            fail = self.calls % 2 == 0
        if fail:
            raise RuntimeError("victim unavailable")
        return x.reshape(len(x), 4, 16).mean(2)


def test_a_failed_answer_releases_its_reservation() -> None:
    oracle = LocalOracle(Flaky(), SPEC, ledger=Ledger(budget=64))
    x = torch.rand(8, *SPEC.shape)
    ok = failed = 0
    for _ in range(20):
        try:
            oracle.query(x)
            ok += 1
        except RuntimeError:
            failed += 1
        except BudgetExceeded:
            break
    assert oracle.ledger.spent == 8 * ok == 64 and failed >= 7
    assert oracle.ledger.reserved == 0


class NaNs(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        out = x.reshape(len(x), 4, 16).mean(2)
        out[0, 0] = float("nan")
        return out


@pytest.mark.parametrize("output", ["probabilities", "logits", "label", "topk"])
def test_non_finite_victim_answers_are_refused_and_not_charged(output: str) -> None:
    oracle = LocalOracle(NaNs(), SPEC, output=output, ledger=Ledger(budget=100))
    with pytest.raises(VictimError, match="NaN or infinite values for 1 of 4 inputs"):
        oracle.query(torch.rand(4, *SPEC.shape))
    assert oracle.ledger.spent == 0 and oracle.ledger.reserved == 0


def test_record_refuses_negative_counts_and_counts_past_the_budget() -> None:
    ledger = Ledger(budget=10)
    with pytest.raises(ValueError, match="cannot have -1 inputs"):
        ledger.record(-1)
    with pytest.raises(ValueError, match="cannot record 11 queries"):
        ledger.record(11)
    with pytest.raises(ValueError, match="integer"):
        ledger.record(2.5)  # type: ignore[arg-type]
    ledger.record(10)
    assert ledger.spent == 10
    with pytest.raises(ValueError, match="cannot record 1 queries"):
        ledger.record(1)
    assert ledger.spent == 10


def test_reservations_count_against_the_budget_until_released() -> None:
    ledger = Ledger(budget=10)
    ledger.reserve(6)
    assert ledger.remaining == 4
    with pytest.raises(BudgetExceeded, match="6 reserved by batches in flight, 4 left"):
        ledger.reserve(5)
    ledger.release(6)
    ledger.reserve(10)
    ledger.commit(10)
    assert (ledger.spent, ledger.reserved, ledger.remaining) == (10, 0, 0)
    with pytest.raises(ValueError, match="only 0 are reserved"):
        ledger.commit(1)


def test_a_ledger_pickles_without_its_lock() -> None:
    import pickle

    ledger = Ledger(budget=5)
    ledger.charge(3)
    copy = pickle.loads(pickle.dumps(ledger))
    copy.charge(2)
    assert copy.spent == 5 and ledger.spent == 3
