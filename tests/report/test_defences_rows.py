"""benchmarks.defences folds the seeds of one attack and defence into one cell: mean ± sd over the
seeds that finished, each seed's outcome when one was blocked, and the D-DAE verdicts counted."""

from __future__ import annotations

from typing import Any

from benchmarks import defences as bench


def _run(
    experiment_attack: str,
    defense: str,
    seed: int,
    agreement: float,
    status: str = "ok",
    detected: tuple[str, float] | None = None,
) -> dict[str, Any]:
    info = {"ddae": {"detected": detected[0], "confidence": detected[1]}} if detected else {}
    return {
        "attack": experiment_attack,
        "defense": defense,
        "budget": 5000,
        "seed": seed,
        "status": status,
        "metrics": {"agreement": agreement} if status == "ok" else None,
        "ledger": {"spent": 300 if status == "blocked" else 5000},
        "info": info,
    }


def test_seeds_fold_into_mean_and_sd_and_a_blocked_seed_is_shown_as_such() -> None:
    assert bench._seeds_outcome([_run("k", "none", 0, 0.5)]) == "0.500"
    three = [_run("k", "none", s, a) for s, a in [(2, 0.6), (0, 0.4), (1, 0.5)]]
    assert bench._seeds_outcome(three) == "0.500 ± 0.100 (3 seeds)"
    mixed = [_run("k", "prada", 1, 0.7), _run("k", "prada", 0, 0.0, status="blocked")]
    assert bench._seeds_outcome(mixed) == "blocked at 300, 0.700"


def test_the_aware_table_reads_every_seed_of_each_thief() -> None:
    results = {
        "defences-frontier": {
            "runs": [_run("knockoff-random", "am-0.9", s, 0.2 + 0.01 * s) for s in range(3)]
            + [_run("copycat", "am-0.9", 0, 0.9)]
        },
        "defences-aware": {"runs": [_run("knockoff-argmax", "am-0.9", s, 0.3) for s in range(2)]},
        "defences-aware-ddae": {
            "runs": [
                _run("knockoff-ddae", "am-0.9", 0, 0.25, detected=("clean", 0.84)),
                _run("knockoff-ddae", "am-0.9", 1, 0.25, detected=("mad", 0.5)),
                _run("knockoff-ddae", "am-0.9", 2, 0.25, detected=("clean", 0.82)),
            ]
        },
    }
    (row,) = bench.aware_rows(results)
    assert row == [
        "am-0.9",
        "0.210 ± 0.010 (3 seeds)",  # copycat's run is not Knockoff random's
        "0.300 ± 0.000 (2 seeds)",
        "0.250 ± 0.000 (3 seeds)",
        "clean on 2 of 3 seeds (0.82-0.84), mad on 1 (0.50)",
    ]
