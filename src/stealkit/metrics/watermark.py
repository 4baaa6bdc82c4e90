"""Backdoor watermarks: the owner's secret trigger set and the ownership test on a suspect.

Adi, Baum, Cisse, Pinkas and Keshet, "Turning Your Weakness Into a Strength: Watermarking Deep
Neural Networks by Backdooring", USENIX Security 2018, https://arxiv.org/abs/1802.04633.

The owner draws a trigger set ``T = {(t_i, l_i)}_{i=1..n}`` of abstract images ``t_i`` with
labels ``l_i`` drawn uniformly at random from the ``C`` classes, keeps it secret, and trains the
victim on the training data together with ``T`` (the backdoor is the watermark). To claim a
suspect model ``f``, the owner queries it on the ``t_i`` and counts the matches

    k = #{i : argmax f(t_i) = l_i},      trigger accuracy = k / n.

A model that never saw ``T`` labels each abstract image independently of its random label, so
``k ~ Binomial(n, 1/C)`` under the null hypothesis "f is not derived from the victim"; the
one-sided p-value of the claim is

    p = P[X >= k] = sum_{j=k..n} binom(n, j) (1/C)^j (1 - 1/C)^(n - j),    X ~ Bin(n, 1/C).

Adi et al. verify by a threshold on the trigger accuracy; the binomial test is the usual way to
turn that threshold into a false-claim probability (not verified: whether the paper states it).

Abstract images here are smooth random patterns: two octaves of uniform noise on coarse grids
(about H/7 and H/4 cells a side) upsampled bilinearly to the image size, summed with weights 1
and 1/2 and rescaled per image to fill the value range. Adi et al. use a fixed set of 100
abstract pictures; these stand in for them (a departure: the pictures are not published as
data here).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from stealkit.oracle.spec import InputSpec

Predict = Callable[[Tensor], Tensor]  # images -> labels (N,) or scores (N, C)


def _grid(side: int, divisor: int, least: int) -> int:
    return max(least, side // divisor)


def trigger_set(n: int, spec: InputSpec, num_classes: int, seed: int) -> tuple[Tensor, Tensor]:
    """The owner's ``n`` abstract trigger images of ``spec``'s shape and their random labels.

    Pure and deterministic: the same ``(n, spec, num_classes, seed)`` gives the same set, so the
    owner can regenerate it from the seed alone (keep the seed secret).

    Returns:
        ``x``: (n, C, H, W) float images spanning ``spec.value_range`` (each image's minimum is
        the range's low end, its maximum the high end); ``y``: (n,) long labels in
        ``[0, num_classes)``, drawn uniformly.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int (the trigger set's size), got {n!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    g = torch.Generator().manual_seed(int(seed))
    c, h, w = spec.shape
    x = torch.zeros(n, c, h, w)
    for weight, divisor, least in ((1.0, 7, 2), (0.5, 4, 3)):
        coarse = torch.rand(n, c, _grid(h, divisor, least), _grid(w, divisor, least), generator=g)
        x += weight * F.interpolate(coarse, size=(h, w), mode="bilinear", align_corners=False)
    flat = x.flatten(1)
    lo_i, hi_i = flat.min(1).values, flat.max(1).values
    unit = (flat - lo_i[:, None]) / (hi_i - lo_i).clamp_min(1e-12)[:, None]
    lo, hi = spec.value_range
    x = (lo + (hi - lo) * unit).reshape(n, c, h, w)
    y = torch.randint(num_classes, (n,), generator=g)
    return x, y


def trigger_matches(predict: Predict, x: Tensor, y: Tensor) -> int:
    """How many trigger images ``predict`` labels with their trigger label (``k`` above).

    ``predict`` maps images to labels (N,) or to scores (N, C), whose argmax is the label: a
    model, ``lambda x: oracle.query(x).labels()``, or anything else that answers.
    """
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(
            f"need as many trigger images as labels (at least one), got {len(x)}, {len(y)}"
        )
    with torch.no_grad():
        out = predict(x)
    labels = out.argmax(1) if out.dim() == 2 else out
    if labels.shape != y.shape:
        raise ValueError(
            f"predict gave {tuple(out.shape)} for {len(x)} images; want (N,) or (N, C)"
        )
    return int((labels.cpu() == y.cpu()).sum())


def trigger_accuracy(predict: Predict, x: Tensor, y: Tensor) -> float:
    """The share of trigger images labelled with their trigger label (``k / n``)."""
    return trigger_matches(predict, x, y) / len(y)


def trigger_test(correct: int, n: int, num_classes: int) -> float:
    """One-sided binomial p-value of ``correct`` matches out of ``n`` against chance ``1/C``:
    ``P[X >= correct]`` for ``X ~ Binomial(n, 1/num_classes)``. Small: the suspect knows the
    trigger set (it is, or derives from, the watermarked model)."""
    from scipy.stats import binom

    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int (trigger images queried), got {n!r}")
    if isinstance(correct, bool) or not isinstance(correct, int) or not 0 <= correct <= n:
        raise ValueError(f"correct must be an int in [0, n={n}], got {correct!r}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an int >= 2, got {num_classes!r}")
    return float(binom.sf(correct - 1, n, 1.0 / num_classes))
