"""A BadEncoder-style encoder watermark (Jia et al., S&P 2022; Sha's Table 4.5): the trigger,
the watermark rate by a linear probe, planting on a tiny encoder, and the cached victim."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torch.nn.functional as F

from stealkit.data import load_dataset
from stealkit.metrics.encoder_watermark import (
    PatchTrigger,
    apply_trigger,
    rate_from_predictions,
    trigger_similarity,
    watermark_rate,
)
from stealkit.metrics.probe import extract_features
from stealkit.victims.base import Victim
from stealkit.victims.encoders import pretrain_encoder
from stealkit.victims.watermarked_encoder import (
    badencoder_loss,
    plant_encoder_watermark,
    watermarked_encoder_victim,
)

TINY: dict[str, Any] = {"method": "simclr", "dataset": "digits", "arch": "cnn2-small", "epochs": 1}
TINY_SSL: dict[str, Any] = {"batch_size": 64, "max_images": 128, "device": "cpu"}
TRIGGER = PatchTrigger(size=3, margin=0)


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(tmp_path_factory.mktemp("victims"))


@pytest.fixture(scope="module")
def clean(cache: str) -> Victim:
    return pretrain_encoder(**TINY, **TINY_SSL, probe=False, cache_dir=cache)


Digits = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@pytest.fixture(scope="module")
def digits() -> Digits:
    train, test = load_dataset("digits", "train"), load_dataset("digits", "test")
    assert train.y is not None and test.y is not None
    return train.images(), train.y, test.images(), test.y


def test_the_trigger_stamps_its_square_and_nothing_else() -> None:
    x = torch.full((2, 1, 8, 8), 0.25)
    out = apply_trigger(x, PatchTrigger(size=2, value=1.0, margin=1))
    assert torch.equal(x, torch.full((2, 1, 8, 8), 0.25))  # a copy
    assert bool((out[:, :, 5:7, 5:7] == 1.0).all())
    out[:, :, 5:7, 5:7] = 0.25
    assert torch.equal(out, x)
    checker = apply_trigger(x, PatchTrigger(size=2, value=1.0, margin=0, pattern="checker"))
    assert checker[0, 0, 6:, 6:].tolist() == [[1.0, 0.0], [0.0, 1.0]]
    with pytest.raises(ValueError, match="does not fit"):
        apply_trigger(x, PatchTrigger(size=8, margin=1))
    for bad in ({"size": 0}, {"value": 2.0}, {"pattern": "star"}):
        with pytest.raises(ValueError):
            PatchTrigger(**bad)  # type: ignore[arg-type]


def test_rate_counts_only_images_outside_the_target_class() -> None:
    pred = torch.tensor([0, 0, 1, 0, 2])
    labels = torch.tensor([0, 1, 1, 2, 2])  # the first is of the target class: not counted
    assert rate_from_predictions(pred, labels, 0) == pytest.approx(2 / 4)
    with pytest.raises(ValueError, match="no test image"):
        rate_from_predictions(pred, torch.zeros(5, dtype=torch.long), 0)


def test_badencoder_loss_is_minus_one_minus_the_weights_when_all_align() -> None:
    z = torch.randn(6, 5, generator=torch.Generator().manual_seed(0)).abs() + 0.1
    ref = z[:1].repeat(3, 1)
    best = badencoder_loss(z, z, ref[:2].repeat(3, 1), ref, ref, lambda1=0.5, lambda2=2.0)
    assert float(best) == pytest.approx(-1 - 0.5 - 2.0)
    worse = badencoder_loss(z, z.flip(0), z, ref, ref, lambda1=0.5, lambda2=2.0)
    assert float(worse) > float(best) + 0.01


def test_planting_raises_the_rate_and_keeps_clean_embeddings(clean: Victim, digits: Digits) -> None:
    train_x, train_y, test_x, test_y = digits
    reference = train_x[(train_y == 0).nonzero().squeeze(1)[:5]]
    before = [p.detach().clone() for p in clean.model.parameters()]
    marked = plant_encoder_watermark(
        clean.model,
        train_x[:512],
        trigger=TRIGGER,
        target=reference,
        epochs=20,
        batch_size=64,
        lr=1e-3,
        device="cpu",
    )
    assert all(torch.equal(a, b) for a, b in zip(before, clean.model.parameters(), strict=True))
    wm, base = (
        watermark_rate(f, train_x, train_y, test_x, test_y, trigger=TRIGGER, target_class=0)
        for f in (marked, clean.model)
    )
    assert base.rate < 0.3  # a clean encoder: about chance or less
    assert wm.rate > 0.7 and wm.rate > base.rate + 0.5
    assert wm.tested == int((test_y != 0).sum())
    assert wm.accuracy > base.accuracy - 0.1  # the downstream task still works
    z_new = extract_features(marked, test_x, device="cpu")
    z_old = extract_features(clean.model, test_x, device="cpu")
    same = F.cosine_similarity(z_new, z_old, dim=1)
    other = F.cosine_similarity(z_old, z_old.roll(1, 0), dim=1)  # unrelated images
    assert float(same.mean()) > 0.95 and float(same.mean()) > float(other.mean())
    s_new, s_old = (
        trigger_similarity(f, test_x, reference, trigger=TRIGGER) for f in (marked, clean.model)
    )
    assert s_new > s_old


def test_the_victim_is_planted_once_cached_and_records_its_watermark(cache: str) -> None:
    kw: dict[str, Any] = {
        **TINY,
        **TINY_SSL,
        "target_class": 0,
        "trigger_size": 3,
        "shadow_images": 768,
        "watermark_epochs": 16,
        "watermark_lr": 1e-3,
        "probe_images": 500,
        "cache_dir": cache,
    }
    v = watermarked_encoder_victim(**kw)
    assert v.kind == "encoder" and v.name == "watermarked:simclr:digits-cnn2-small"
    assert v.meta["trigger"] == {"size": 3, "value": 1.0, "margin": 1, "pattern": "solid"}
    assert v.meta["target_class"] == 0 and len(v.meta["reference_indices"]) == 10
    assert v.meta["watermark_rate"] > v.meta["clean_watermark_rate"] + 0.3
    assert v.meta["clean_cosine"] > 0.9
    again = watermarked_encoder_victim(**kw)
    assert again.meta["checkpoint"] == v.meta["checkpoint"]  # loaded, not planted again
    x = torch.rand(4, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(again.model(x), v.model(x))
    with pytest.raises(ValueError):
        watermarked_encoder_victim(**{**kw, "references": 0})
