"""Linear probe: learns separable features, is deterministic, judges two encoders by one protocol;
embedding similarity and probe agreement measure what they say."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from stealkit.metrics import (
    embedding_similarity,
    extract_features,
    linear_probe,
    probe_agreement,
)
from stealkit.metrics.probe import probe_features


def _blobs(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """Images (N, 1, 4, 4) whose class (0-2) sets the mean of three pixels."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(3, (n,), generator=g)
    x = torch.rand((n, 1, 4, 4), generator=g) * 0.2
    x[torch.arange(n), 0, 0, y] += 0.7
    return x, y


def flatten(x: Tensor) -> Tensor:
    return x.flatten(1)


def test_probe_learns_separable_features_and_is_deterministic() -> None:
    (xtr, ytr), (xte, yte) = _blobs(120, 0), _blobs(60, 1)
    a = linear_probe(flatten, xtr, ytr, xte, yte, epochs=20, batch_size=32, device="cpu")
    b = linear_probe(flatten, xtr, ytr, xte, yte, epochs=20, batch_size=32, device="cpu")
    assert a.accuracy >= 0.9 and a.train_accuracy >= 0.9
    assert a.predictions.shape == (60,) and a.predictions.dtype == torch.long
    assert torch.equal(a.predictions, b.predictions) and a.accuracy == b.accuracy
    assert probe_agreement(a, b) == 1.0
    logits = a.head(extract_features(flatten, xte, device="cpu"))
    assert logits.shape == (60, 3) and torch.equal(logits.argmax(1), a.predictions)


def test_useless_encoder_probes_near_chance_and_disagrees() -> None:
    (xtr, ytr), (xte, yte) = _blobs(150, 0), _blobs(150, 1)
    good = linear_probe(flatten, xtr, ytr, xte, yte, epochs=20, batch_size=32, device="cpu")
    noise = torch.Generator().manual_seed(7)

    def useless(x: Tensor) -> Tensor:
        return torch.rand((len(x), 5), generator=noise)

    bad = linear_probe(useless, xtr, ytr, xte, yte, epochs=20, batch_size=32, device="cpu")
    assert bad.accuracy < 0.6 < good.accuracy
    assert probe_agreement(good, bad) < 0.6


def test_modules_are_probed_in_eval_mode() -> None:
    enc = nn.Sequential(nn.Flatten(), nn.Dropout(0.9))
    enc.train()
    x = torch.rand(8, 1, 4, 4)
    assert torch.equal(extract_features(enc, x, device="cpu"), x.flatten(1))
    assert not enc.training


def test_embedding_similarity_values() -> None:
    a = torch.randn(10, 4, generator=torch.Generator().manual_seed(0))
    same = embedding_similarity(a, a)
    assert (
        same["cosine"] == pytest.approx(1.0) and same["mse"] == 0.0 and same["relative_l2"] == 0.0
    )
    flipped = embedding_similarity(-a, a)
    assert flipped["cosine"] == pytest.approx(-1.0) and flipped["relative_l2"] == pytest.approx(2.0)
    with pytest.raises(ValueError):
        embedding_similarity(a, a[:, :3])


def test_probe_refuses_mismatched_inputs() -> None:
    x, y = _blobs(10, 0)
    with pytest.raises(ValueError):
        linear_probe(flatten, x, y[:5], x, y, device="cpu")
    with pytest.raises(ValueError):
        linear_probe(flatten, x, y, x, y, epochs=0, device="cpu")


def test_probe_on_features_matches_the_probe_on_images_and_refuses_bad_input() -> None:
    x, y = _blobs(120, 0)
    tx, ty = _blobs(60, 1)
    on_images = linear_probe(flatten, x, y, tx, ty, epochs=20, batch_size=32, device="cpu")
    on_features = probe_features(
        flatten(x), y, flatten(tx), ty, epochs=20, batch_size=32, device="cpu"
    )
    assert on_features.accuracy >= 0.9
    assert on_features.accuracy == on_images.accuracy
    assert torch.equal(on_features.predictions, on_images.predictions)
    with pytest.raises(ValueError, match="same length"):
        probe_features(flatten(x), y[:5], flatten(tx), ty, device="cpu")
    with pytest.raises(ValueError, match="epochs"):
        probe_features(flatten(x), y, flatten(tx), ty, lr=0.0, device="cpu")
