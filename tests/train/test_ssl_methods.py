"""Self-supervised methods: MoCo's queue, and training through the
shared loop moving the backbone but never the momentum networks by gradient."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from stealkit.models import build_model
from stealkit.train.ssl import METHODS, MoCoV2, build_method, pretrain


def _backbone() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_model("cnn2-small", in_channels=1, num_classes=1, image_size=8)


def test_moco_enqueues_the_previous_steps_keys() -> None:
    moco = MoCoV2(_backbone(), (1, 8, 8), queue_size=16, proj_dim=8).train()
    views = torch.rand(2 * 6, 1, 8, 8)
    start = moco.queue.clone()
    keys = moco(views).chunk(2)[1]
    assert torch.equal(moco.queue, start)  # the loss of this step sees the old queue
    moco(views)
    torch.testing.assert_close(moco.queue[:6], keys)  # enqueued at the start of the next step
    assert torch.equal(moco.queue[6:], start[6:])


@pytest.mark.parametrize("name", sorted(METHODS))
def test_pretrain_moves_the_backbone_through_fit(name: str) -> None:
    params = {"queue_size": 64} if name == "moco" else {}
    method = build_method(name, _backbone(), (1, 8, 8), **params)
    first = [p.detach().clone() for p in method.backbone.parameters()]
    x = torch.rand(64, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    hist = pretrain(method, x, steps=4, batch_size=32, device="cpu")
    assert hist.steps == 4 and all(torch.isfinite(torch.tensor(hist.epoch_loss)))
    moved = [
        not torch.equal(a, b) for a, b in zip(first, method.backbone.parameters(), strict=True)
    ]
    assert any(moved)
    frozen = [p for n, p in method.named_parameters() if n.startswith(("key_", "target_"))]
    assert all(p.grad is None and not p.requires_grad for p in frozen)
    with pytest.raises(ValueError, match="unknown"):
        build_method("dino", _backbone(), (1, 8, 8))
