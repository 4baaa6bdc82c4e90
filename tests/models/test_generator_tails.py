"""The generators' tails: "bn-tanh" (DFME's final batch norm, then tanh) and "sigmoid" (DaST's)."""

from __future__ import annotations

import pytest
import torch

from stealkit.models.generators import TAILS, build_generator, to_unit_range

NZ = 8


def _g(tail: str, kind: str = "dcgan", seed: int = 0):
    return build_generator(kind, NZ, 1, 12, num_classes=3, ngf=8, tail=tail, seed=seed)


def test_tails_share_every_weight_at_a_seed_and_set_tail_equals_building_with_it():
    ref = dict(_g("bn-tanh").named_parameters())
    for tail in TAILS:
        for kind in ("dcgan", "conditional", "multibranch"):
            built, switched = _g(tail, kind), _g("bn-tanh", kind).set_tail(tail)
            assert built.tail == switched.tail == tail
            sd_b, sd_s = built.state_dict(), switched.state_dict()
            assert sd_b.keys() == sd_s.keys()
            assert all(torch.equal(sd_b[k], sd_s[k]) for k in sd_b), (tail, kind)
            if kind == "dcgan":
                params = dict(built.named_parameters())
                assert params.keys() == ref.keys()
                assert all(torch.equal(params[k], ref[k]) for k in ref)
    # only "bn-tanh" carries the final batch norm's running statistics
    extra = set(_g("bn-tanh").state_dict()) - set(_g("sigmoid").state_dict())
    assert extra == {
        "block2.4.running_mean",
        "block2.4.running_var",
        "block2.4.num_batches_tracked",
    }


def test_each_tail_maps_its_pre_activation_as_documented():
    z = torch.randn(6, NZ, generator=torch.Generator().manual_seed(1))
    labels = torch.tensor([0, 1, 2, 0, 1, 2])
    for tail, act in (
        ("sigmoid", torch.sigmoid),
        ("bn-tanh", to_unit_range),
        ("tanh", to_unit_range),
    ):
        g = _g(tail, "multibranch")
        with torch.no_grad():
            t = g.pre_activation(z, labels)
            assert torch.allclose(g(z, labels), act(t))
        assert f"tail={tail!r}" in repr(g)


def test_the_final_batch_norm_pins_the_batch_mean_near_grey_and_sigmoid_does_not():
    """The issue: with bn-tanh a generator cannot make mostly-black (MNIST-like) batches."""
    z = torch.randn(64, NZ, generator=torch.Generator().manual_seed(2))
    means = {}
    for tail in ("bn-tanh", "sigmoid"):
        g = _g(tail).train()
        with torch.no_grad():
            g.block2[3].bias.fill_(-6.0)  # push every output pixel towards black
            means[tail] = float(g(z).mean())
    assert abs(means["bn-tanh"] - 0.5) < 0.05  # the batch norm removes the shift
    assert means["sigmoid"] < 0.05


def test_images_stay_in_the_unit_range_and_bad_tails_are_refused():
    z = 30 * torch.randn(8, NZ, generator=torch.Generator().manual_seed(3))
    for tail in TAILS:
        with torch.no_grad():
            x = _g(tail)(z)
        assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    with pytest.raises(ValueError, match="tail must be one of"):
        _g("relu")
    with pytest.raises(ValueError, match="tail must be one of"):
        _g("sigmoid").set_tail("softmax")
