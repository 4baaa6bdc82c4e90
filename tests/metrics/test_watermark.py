"""Adi et al.'s trigger set is deterministic, abstract and in range; trigger accuracy counts
matches; the ownership p-value is the binomial tail worked out by hand."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor

from stealkit.metrics.watermark import (
    trigger_accuracy,
    trigger_matches,
    trigger_set,
    trigger_test,
)
from stealkit.oracle import InputSpec, LocalOracle
from toys import RowBands

SPEC = InputSpec(channels=1, height=28, width=28)


def test_trigger_set_is_deterministic_per_seed_and_in_range() -> None:
    x, y = trigger_set(50, SPEC, 10, seed=3)
    x2, y2 = trigger_set(50, SPEC, 10, seed=3)
    x3, y3 = trigger_set(50, SPEC, 10, seed=4)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert not torch.equal(x, x3) and not torch.equal(y, y3)
    assert x.shape == (50, 1, 28, 28) and x.dtype == torch.float32
    assert y.shape == (50,) and y.dtype == torch.long
    assert int(y.min()) >= 0 and int(y.max()) <= 9 and len(set(y.tolist())) >= 8
    flat = x.flatten(1)  # every image spans the whole value range
    torch.testing.assert_close(flat.min(1).values, torch.zeros(50))
    torch.testing.assert_close(flat.max(1).values, torch.ones(50))
    # no two trigger images alike
    assert float(torch.cdist(flat, flat).add(torch.eye(50) * 1e9).min()) > 1.0


def test_trigger_images_are_smooth_not_pixel_noise() -> None:
    x, _ = trigger_set(20, SPEC, 10, seed=0)
    step = (x[..., 1:] - x[..., :-1]).abs().mean()
    noise = torch.rand(20, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    noise_step = (noise[..., 1:] - noise[..., :-1]).abs().mean()  # about 1/3
    assert float(step) < 0.25 * float(noise_step)


def test_trigger_set_follows_the_spec() -> None:
    rgb = InputSpec(channels=3, height=8, width=8, value_range=(-1.0, 1.0))
    x, y = trigger_set(5, rgb, 3, seed=0)
    assert x.shape == (5, 3, 8, 8) and set(y.tolist()) <= {0, 1, 2}
    assert float(x.min()) == pytest.approx(-1.0) and float(x.max()) == pytest.approx(1.0)
    one, one_y = trigger_set(1, SPEC, 10, seed=0)
    assert one.shape == (1, 1, 28, 28) and one_y.shape == (1,)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (dict(n=0, num_classes=10), "n must be a positive int"),
        (dict(n=5, num_classes=1), "num_classes must be an int >= 2"),
    ],
)
def test_trigger_set_rejects_bad_sizes(kwargs: dict[str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        trigger_set(spec=SPEC, seed=0, **kwargs)


def test_trigger_accuracy_counts_matching_labels_from_scores_or_labels() -> None:
    x = torch.zeros(4, 1, 8, 8)
    x[0, 0, 0:2] = 1.0  # RowBands: class j is rows 2j, 2j+1 -> this image is class 0
    x[1, 0, 2:4] = 1.0  # class 1
    x[2, 0, 4:6] = 1.0  # class 2
    x[3, 0, 6:8] = 1.0  # class 3
    y = torch.tensor([0, 1, 3, 3])
    model = RowBands()
    assert trigger_matches(model, x, y) == 3
    assert trigger_accuracy(model, x, y) == 0.75
    oracle = LocalOracle(RowBands(), InputSpec(1, 8, 8), output="label")

    def labels(q: Tensor) -> Tensor:
        return oracle.query(q).labels()

    assert trigger_accuracy(labels, x, y) == 0.75  # a black box answering labels
    with pytest.raises(ValueError, match="as many trigger images as labels"):
        trigger_accuracy(model, x, y[:3])


def test_p_value_matches_the_binomial_tail_by_hand() -> None:
    # n=3, C=2: P[X>=3] = 1/8, P[X>=2] = 3/8 + 1/8, P[X>=0] = 1
    assert trigger_test(3, 3, 2) == pytest.approx(1 / 8)
    assert trigger_test(2, 3, 2) == pytest.approx(1 / 2)
    assert trigger_test(0, 3, 2) == pytest.approx(1.0)
    # n=10, C=10: P[X>=2] = 1 - 0.9^10 - 10 * 0.1 * 0.9^9
    assert trigger_test(2, 10, 10) == pytest.approx(1 - 0.9**10 - 10 * 0.1 * 0.9**9)
    # all 100 of Adi's triggers right against 10 classes: 1e-100
    assert math.log10(trigger_test(100, 100, 10)) == pytest.approx(-100)
    # a slow reference: the sum of the tail terms
    n, c, k = 20, 4, 9
    tail = sum(math.comb(n, j) * (1 / c) ** j * (1 - 1 / c) ** (n - j) for j in range(k, n + 1))
    assert trigger_test(k, n, c) == pytest.approx(tail, rel=1e-9)


def test_p_value_rejects_impossible_counts() -> None:
    with pytest.raises(ValueError, match=r"correct must be an int in \[0, n=5\]"):
        trigger_test(6, 5, 10)
    with pytest.raises(ValueError, match="n must be a positive int"):
        trigger_test(0, 0, 10)
    with pytest.raises(ValueError, match="num_classes must be an int >= 2"):
        trigger_test(1, 5, 1)
