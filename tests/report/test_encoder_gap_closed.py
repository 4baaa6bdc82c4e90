"""benchmarks.encoder_steal's gap closed: (acc - floor) / (victim - floor) against the untrained
floor of the same seed, found in any experiment judged the same way, in the tables and the JSON."""

from __future__ import annotations

from typing import Any

import pytest
from benchmarks import encoder_steal as bench

JUDGED = {
    "victim": {"name": "ssl", "output": "embedding"},
    "probe": {"dataset": "fashion-mnist", "limit": 100},
    "eval": {"dataset": "fashion-mnist", "limit": 5000},
    "surrogate": {"arch": "cnn3"},
}


def _run(attack: str, seed: int, acc: float, agr: float, steps: int = 450) -> dict[str, Any]:
    return {
        "attack": attack,
        "defense": "none",
        "budget": 2000,
        "seed": seed,
        "status": "ok",
        "info": {"steps": steps},
        "ledger": {"spent": 0 if steps == 0 else 2000},
        "metrics": {"accuracy": acc, "agreement": agr, "victim_accuracy": 0.8},
    }


def _results(name: str, runs: list[dict[str, Any]], **cfg: Any) -> dict[str, Any]:
    config = {**JUDGED, "pool": {"dataset": "skimage-crops"}, **cfg}
    return {"config": config, "victim": {"test_accuracy": 0.8}, "runs": runs}


def test_gap_closed_by_hand() -> None:
    assert bench.gap_closed(0.7, 0.6, 0.8) == pytest.approx(0.5)
    assert bench.gap_closed(0.6, 0.6, 0.8) == 0.0 and bench.gap_closed(0.8, 0.6, 0.8) == 1.0
    assert bench.gap_closed(0.5, 0.6, 0.8) == pytest.approx(-0.5)  # worse than untrained
    assert bench.gap_closed(0.7, 0.8, 0.8) is None and bench.gap_closed(None, 0.6, 0.8) is None


def test_each_run_is_measured_against_the_floor_of_its_own_seed() -> None:
    floor_runs = [_run("untrained", 0, 0.6, 0.7, steps=0), _run("untrained", 1, 0.7, 0.8, steps=0)]
    results = {
        "encoder-contsteal-out-10": _results(
            "encoder-contsteal-out-10",
            [*floor_runs, _run("contsteal", 0, 0.7, 0.85), _run("contsteal", 1, 0.75, 0.9)],
        ),
        # judged the same way (the pool does not matter): it borrows the floor
        "encoder-losses-out": _results(
            "encoder-losses-out", [_run("encoder-mse", 0, 0.8, 1.0)], pool={"dataset": "x"}
        ),
        # judged by other probes: no floor
        "encoder-efficientnet-out": _results(
            "encoder-efficientnet-out",
            [_run("encoder-mse", 0, 0.7, 0.8)],
            probe={"dataset": "fashion-mnist", "limit": 5000},
        ),
    }
    found = bench.floors(results)
    by_seed = found[bench.judged_by(results["encoder-contsteal-out-10"])]
    assert by_seed == {
        0: {"accuracy": 0.6, "agreement": 0.7},
        1: {"accuracy": 0.7, "agreement": 0.8},
    }
    gaps = bench.run_gaps(_run("contsteal", 1, 0.75, 0.9), by_seed)
    assert gaps["accuracy"] == pytest.approx(0.5) and gaps["agreement"] == pytest.approx(0.5)
    unseen = bench.run_gaps(_run("contsteal", 7, 0.75, 0.9), by_seed)  # the mean floor: 0.65
    assert unseen["accuracy"] == pytest.approx(0.1 / 0.15)

    data = bench.summary(results)["experiments"]
    mse = data["encoder-losses-out"]["runs"][0]["gap_closed"]
    assert mse == {"accuracy": pytest.approx(1.0), "agreement": pytest.approx(1.0)}
    assert data["encoder-efficientnet-out"]["floor"] is None
    assert data["encoder-efficientnet-out"]["runs"][0]["gap_closed"] == {
        "accuracy": None,
        "agreement": None,
    }

    text = bench.markdown(results)
    assert "| untrained (floor) | 100 |" in text
    # contsteal over seeds 0 and 1: accuracy gaps 0.5 and 0.5, agreement gaps 0.5 and 0.5
    row = next(line for line in text.splitlines() if line.startswith("| contsteal | 100 |"))
    assert "| 0.500 ± 0.000 |" in row
    assert "gap closed (accuracy)" in text
