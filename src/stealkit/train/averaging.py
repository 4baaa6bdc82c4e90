"""Exponential moving averages of a network's weights: one helper, with its buffer policy chosen.

Two users, two policies. MoCo's and BYOL's momentum encoders copy the online network's buffers
(``buffers="copy"``: the target normalises with the statistics of the batches it sees now). MEGA's
``average`` keeps the substitute's weights averaged over rounds and averages the floating-point
buffers as well (``buffers="average"``: batch-norm statistics that belong to the averaged
weights). Integer buffers, such as batch norm's step counter, are always copied.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

BufferPolicy = Literal["average", "copy"]


def ema_(target: nn.Module, source: nn.Module, decay: float, *, buffers: BufferPolicy) -> None:
    """In place: ``target <- decay * target + (1 - decay) * source``, parameter by parameter.

    ``target`` and ``source`` must be the same architecture. ``decay`` 0 copies ``source``; 1 keeps
    ``target``. Buffers follow ``buffers`` (see the module's docstring).
    """
    if isinstance(decay, bool) or not isinstance(decay, int | float) or not 0.0 <= decay <= 1.0:
        raise ValueError(f"decay must be a number in [0, 1], got {decay!r}")
    if buffers not in ("average", "copy"):
        raise ValueError(f"buffers must be 'average' or 'copy', got {buffers!r}")
    with torch.no_grad():
        for pt, ps in zip(target.parameters(), source.parameters(), strict=True):
            pt.mul_(decay).add_(ps.detach(), alpha=1.0 - decay)
        for bt, bs in zip(target.buffers(), source.buffers(), strict=True):
            if buffers == "average" and bt.is_floating_point():
                bt.mul_(decay).add_(bs, alpha=1.0 - decay)
            else:
                bt.copy_(bs)
