"""The shared moving average: its maths, and the buffer policy each user chooses."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stealkit.train.averaging import ema_


def _bn_net(fill: float) -> nn.Module:
    net = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    with torch.no_grad():
        for t in [*net.parameters(), net[1].running_mean, net[1].running_var]:
            t.fill_(fill)
    net[1].num_batches_tracked.fill_(int(fill))
    return net


def test_ema_is_a_convex_step_on_parameters() -> None:
    online, target = nn.Linear(3, 2), nn.Linear(3, 2)
    before = target.weight.detach().clone()
    ema_(target, online, 0.9, buffers="copy")
    torch.testing.assert_close(target.weight, 0.9 * before + 0.1 * online.weight.detach())
    ema_(target, online, 0.0, buffers="copy")
    torch.testing.assert_close(target.weight, online.weight)


@pytest.mark.parametrize(("policy", "expected_stat"), [("copy", 3.0), ("average", 1.5)])
def test_ema_buffer_policy(policy: str, expected_stat: float) -> None:
    target, source = _bn_net(1.0), _bn_net(3.0)
    ema_(target, source, 0.75, buffers=policy)  # type: ignore[arg-type]
    torch.testing.assert_close(target[0].weight, torch.full((2, 3), 1.5))  # 0.75 * 1 + 0.25 * 3
    assert torch.allclose(target[1].running_mean, torch.full((2,), expected_stat))
    assert torch.allclose(target[1].running_var, torch.full((2,), expected_stat))
    assert int(target[1].num_batches_tracked) == 3  # integer buffers are always copied


@pytest.mark.parametrize("decay", [-0.1, 1.5, True, "0.9"])
def test_ema_rejects_a_bad_decay(decay: object) -> None:
    with pytest.raises(ValueError, match="decay must be a number in"):
        ema_(nn.Linear(2, 2), nn.Linear(2, 2), decay, buffers="copy")  # type: ignore[arg-type]


def test_ema_rejects_an_unknown_buffer_policy() -> None:
    with pytest.raises(ValueError, match="buffers must be 'average' or 'copy'"):
        ema_(nn.Linear(2, 2), nn.Linear(2, 2), 0.5, buffers="mean")  # type: ignore[arg-type]
