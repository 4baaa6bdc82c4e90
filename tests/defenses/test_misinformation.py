"""Adaptive Misinformation: alpha by hand; confident answers kept, unsure ones flipped; answers
stay distributions; in-distribution digits keep the victim's accuracy, noise does not get it."""

from __future__ import annotations

import math

import pytest
import torch

from stealkit.defenses import DefendedOracle, build_defense
from stealkit.defenses.misinformation import (
    AdaptiveMisinformation,
    adaptive_misinformation,
    misinformation_weight,
    reversed_posterior,
)
from stealkit.oracle import InputSpec, Ledger, LocalOracle
from toys import RowBands


def test_alpha_and_the_reversed_posterior_by_hand() -> None:
    p = torch.tensor([[0.7, 0.2, 0.1], [0.4, 0.35, 0.25]])
    alpha = misinformation_weight(p, tau=0.5, nu=10.0)
    assert alpha[0] == pytest.approx(1 / (1 + math.exp(10 * 0.2)))
    assert alpha[1] == pytest.approx(1 / (1 + math.exp(10 * -0.1)))
    rev = reversed_posterior(torch.tensor([[0.5, 0.25, 0.25]]))
    assert torch.allclose(rev, torch.tensor([[0.2, 0.4, 0.4]]))


def test_confident_rows_are_kept_and_unsure_rows_flip() -> None:
    p = torch.tensor([[0.95, 0.03, 0.02], [0.4, 0.35, 0.25]])
    out = adaptive_misinformation(p, tau=0.6, nu=200.0)
    assert torch.allclose(out[0], p[0], atol=1e-6)
    assert out[1].argmax() == 2  # the least likely class now leads
    assert torch.allclose(out.sum(1), torch.ones(2)) and bool((out >= 0).all())


def test_through_an_oracle_it_hurts_out_of_distribution_queries_only() -> None:
    spec = InputSpec(1, 8, 8)
    clean = LocalOracle(RowBands(scale=40.0), spec, ledger=Ledger())
    defended = DefendedOracle(
        LocalOracle(RowBands(scale=40.0), spec, ledger=Ledger()),
        build_defense("adaptive_misinformation", tau=0.6, nu=200.0),
    )
    g = torch.Generator().manual_seed(0)
    natural = torch.zeros(50, 1, 8, 8)
    cls = torch.randint(4, (50,), generator=g)
    for i, c in enumerate(cls.tolist()):  # an image with one bright band: confidently its class
        natural[i, 0, 2 * c : 2 * c + 2] = 1.0
    noise = torch.rand(50, 1, 8, 8, generator=g) * 0.2 + 0.4  # flat: no band stands out
    kept = (defended.query(natural).labels() == clean.query(natural).labels()).float().mean()
    flipped = (defended.query(noise).labels() != clean.query(noise).labels()).float().mean()
    assert kept == 1.0 and flipped > 0.9


@pytest.mark.parametrize(("kw", "match"), [({"tau": 0.0}, "tau"), ({"nu": -1.0}, "nu")])
def test_bad_settings_are_refused(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        AdaptiveMisinformation(**kw)
