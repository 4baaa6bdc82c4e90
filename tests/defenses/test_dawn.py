"""DAWN (Szyller et al. 2021): a keyed fraction of answers carries a wrong class, the same on
every repeat and per key; a copy trained on the answers repeats the marks, the victim does not."""

from __future__ import annotations

import pytest
import torch

from stealkit.defenses import DefendedOracle, build_defense
from stealkit.defenses.dawn import Dawn, keyed_hashes, watermark_labels, watermark_rate
from stealkit.oracle import InputSpec, Ledger, LocalOracle, OutputKind
from toys import RowBands

SPEC = InputSpec(1, 8, 8)
X = torch.rand(4000, 1, 8, 8, generator=torch.Generator().manual_seed(0))


def test_watermark_labels_are_always_wrong_and_cover_the_other_classes() -> None:
    labels = torch.zeros(1000, dtype=torch.long)
    which = torch.rand(1000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    y = watermark_labels(labels, which, 4)
    assert not bool((y == labels).any()) and set(y.tolist()) == {1, 2, 3}
    assert watermark_labels(torch.tensor([3]), torch.tensor([0.999999]), 4).item() == 2


def test_the_keyed_hash_is_deterministic_per_key() -> None:
    a, b = keyed_hashes(X[:50], b"k1"), keyed_hashes(X[:50], b"k1")
    assert torch.equal(a, b) and not torch.equal(a, keyed_hashes(X[:50], b"k2"))
    assert bool(((a >= 0) & (a < 1)).all())


@pytest.mark.parametrize("output", ["probabilities", "label"])
def test_a_fraction_of_answers_is_marked_the_same_way_every_time(output: str) -> None:
    dawn = Dawn(rate=0.05, key="owner")
    api = DefendedOracle(LocalOracle(RowBands(), SPEC, output=output, ledger=Ledger()), dawn)
    clean = LocalOracle(RowBands(), SPEC, output=output, ledger=Ledger()).query(X)
    first, again = api.query(X), api.query(X)
    changed = first.labels() != clean.labels()
    assert 0.03 < float(changed.float().mean()) < 0.07  # about rate of the queries
    assert torch.equal(first.values, again.values)  # a repeat cannot reveal the marks
    if output == "probabilities":
        assert torch.allclose(first.values.sum(1), torch.ones(len(X)))
        assert first.kind is OutputKind.PROBABILITIES
    wm_x, wm_y = dawn.marked("thief")
    assert len(wm_x) == 2 * int(changed.sum())  # both passes were recorded
    assert torch.equal(wm_y[: int(changed.sum())], first.labels()[changed])


def test_a_copy_repeats_the_marks_and_the_victim_does_not() -> None:
    dawn = build_defense("dawn", rate=0.05, key="owner")
    api = DefendedOracle(LocalOracle(RowBands(), SPEC, ledger=Ledger()), dawn)
    answers = api.query(X).labels()
    memory = {
        bytes((x * 255).round().to(torch.uint8).numpy().tobytes()): int(y)
        for x, y in zip(X, answers, strict=True)
    }

    def copy(x: torch.Tensor) -> torch.Tensor:  # a perfect copy of what the API answered
        return torch.tensor(
            [memory[bytes((r * 255).round().to(torch.uint8).numpy().tobytes())] for r in x]
        )

    def victim(x: torch.Tensor) -> torch.Tensor:
        return RowBands()(x).argmax(1)

    assert isinstance(dawn, Dawn)
    wm_x, wm_y = dawn.marked("thief")
    assert watermark_rate(copy, wm_x, wm_y) == 1.0
    assert watermark_rate(victim, wm_x, wm_y) == 0.0
    assert dawn.marked("someone else")[0].numel() == 0  # marks are kept per client
    assert "key" not in repr(dawn) and "owner" not in repr(dawn)


@pytest.mark.parametrize(("kw", "match"), [({"rate": 0.0}, "rate"), ({"key": ""}, "key")])
def test_bad_settings_are_refused(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Dawn(**kw)


def test_a_run_behind_dawn_records_the_copys_watermark_rate(tmp_path) -> None:
    pytest.importorskip("mlxtend")
    from stealkit.experiments.config import parse_config
    from stealkit.experiments.runner import Experiment

    cfg = parse_config(
        {
            "name": "dawn",
            "victim": {"name": "digit-recognizer", "output": "probabilities"},
            "pool": {"dataset": "digits", "split": "train", "limit": 400},
            "eval": {"dataset": "mnist-5k", "split": "test", "limit": 200},
            "surrogate": {"arch": "cnn2-small"},
            "attacks": {
                "kr": {
                    "type": "knockoff",
                    "params": {
                        "strategy": "random",
                        "online_steps": 0,
                        "recipe": {"epochs": 3, "min_steps": 30},
                    },
                }
            },
            "defenses": {"dawn": {"type": "dawn", "params": {"rate": 0.2, "key": "k"}}},
            "grid": [{"attacks": ["kr"], "defenses": ["none", "dawn"], "budgets": [400]}],
        }
    )
    runs = {r["defense"]: r for r in Experiment(cfg, tmp_path, progress=False).run()["runs"]}
    m = runs["dawn"]["metrics"]
    assert 40 < m["watermarked_queries"] < 120  # about 20% of 400
    assert 0.0 <= m["watermark_rate"] <= 1.0
    assert "watermark_rate" not in runs["none"]["metrics"]  # only a watermarking defence adds it
