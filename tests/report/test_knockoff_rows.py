"""benchmarks.knockoff groups runs into rows by what was trained: a label-only victim, another
attack type or a named recipe never shares a row (and its mean) with Knockoff on posteriors."""

from __future__ import annotations

from typing import Any

from benchmarks import knockoff as bench


def _run(
    experiment: str,
    attack: str,
    kind: str,
    strategy: str,
    output: str,
    seed: int = 0,
    agreement: float = 0.9,
) -> dict[str, Any]:
    return {
        "experiment": experiment,
        "attack": attack,
        "defense": "none",
        "budget": 20000,
        "seed": seed,
        "surrogate": "cnn3",
        "wall_seconds": 10.0,
        "threads": 1,
        "attack_repr": f"{kind}({strategy})",
        "metrics": {"agreement": agreement, "accuracy": agreement},
        "config": {
            "victim": {"name": "digit-recognizer", "output": output},
            "pool": {"dataset": "fashion-mnist", "split": "train"},
            "attack": {"type": kind, "params": {"strategy": strategy}},
        },
    }


def test_labels_and_other_attacks_get_rows_of_their_own() -> None:
    runs = [
        _run("knockoff-random", "knockoff-random", "knockoff", "random", "probabilities"),
        _run("knockoff-labels", "knockoff-random", "knockoff", "random", "label", agreement=0.5),
        _run("knockoff-labels", "activethief-kcenter", "activethief", "kcenter", "label"),
    ]
    keys = [bench.knockoff(r) for r in runs]
    assert keys == [
        "random, cnn3",
        "random, cnn3, labels, knockoff-random recipe",
        "activethief kcenter, cnn3, labels",
    ]
    groups = bench.by_setting(runs)
    assert len(groups) == 3  # before, the label run was seed 0 of the posterior row
    assert [r["metrics"]["agreement"] for r in groups[("random, cnn3", "none", 20000)]] == [0.9]
    names = [bench.old_name(r) for r in runs]
    assert names[1] == "random-labels-20000-cnn3-knockoff-random"
    assert names[2] == "activethief-kcenter-labels-20000-cnn3"


def test_the_posterior_table_shows_the_label_rows_apart() -> None:
    runs = [
        _run("knockoff-random", "knockoff-random", "knockoff", "random", "probabilities", s, 0.9)
        for s in (0, 1)
    ] + [_run("knockoff-labels", "activethief-kcenter", "activethief", "kcenter", "label", 0, 0.5)]
    text = bench.markdown({}, {}, runs)
    assert "| random, cnn3 | 0.900 ± 0.000 / 0.900 ± 0.000 |" in text
    assert "| activethief kcenter, cnn3, labels | 0.500 / 0.500 |" in text
