"""The downsampled surrogate: a registry backbone on average-pooled inputs."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stealkit.experiments.judges import encoder_surrogate
from stealkit.models import build_model, model_names
from stealkit.models.downsampled import Downsampled
from stealkit.oracle import InputSpec


def test_it_is_resnet8_on_3x_pooled_inputs() -> None:
    assert "resnet8-down3" in model_names()
    torch.manual_seed(0)
    net = build_model("resnet8-down3", in_channels=3, num_classes=10, image_size=96)
    torch.manual_seed(0)
    old = Downsampled(build_model("resnet8", in_channels=3, num_classes=10, image_size=32), 3)
    new_state, old_state = net.state_dict(), old.state_dict()
    assert list(new_state) == list(old_state)
    for key in new_state:
        assert torch.equal(new_state[key], old_state[key]), key
    x = torch.rand(2, 3, 96, 96)
    net.eval()
    with torch.no_grad():
        assert net(x).shape == (2, 10) and net.features(x).shape == (2, 128)
        torch.testing.assert_close(net.features(x), net.net.features(F.avg_pool2d(x, 3)))


def test_it_sees_only_block_means() -> None:
    net = build_model("resnet8-down3", in_channels=1, num_classes=4, image_size=30).eval()
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 30, 30, generator=g)
    means = F.interpolate(F.avg_pool2d(x, 3), scale_factor=3, mode="nearest")  # same block means
    other = torch.rand(3, 1, 30, 30, generator=g)
    with torch.no_grad():
        torch.testing.assert_close(net(means), net(x))
        assert not torch.allclose(net(other), net(x))


def test_as_an_encoder_surrogate_and_bad_sizes() -> None:
    sur = encoder_surrogate("resnet8-down3", InputSpec(channels=3, height=96, width=96), 1280)
    with torch.no_grad():
        assert sur.eval()(torch.rand(2, 3, 96, 96)).shape == (2, 1280)
    with pytest.raises(ValueError, match="at least 3 px"):
        build_model("resnet8-down3", in_channels=1, num_classes=2, image_size=2)
    with pytest.raises(ValueError, match="factor"):
        Downsampled(torch.nn.Identity(), 0)
