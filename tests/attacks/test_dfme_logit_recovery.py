"""DFME's approximate victim logits keep a confident victim's small classes; DaST's and DFME's
default generators end in their papers' tails."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from stealkit.attacks import DFME, DaST
from stealkit.attacks import dast as dast_module
from stealkit.attacks import data_free as data_free_module
from stealkit.attacks.dfme import centred_logits, logits_from_probs, victim_logits_of
from stealkit.models import build_model
from stealkit.oracle import OutputKind
from stealkit.oracle.response import Response


def _surrogate() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_model("mlp", in_channels=1, num_classes=4, image_size=8)


def test_small_classes_of_a_confident_victim_keep_their_logits():
    logits = torch.tensor([[30.0, 0.0, -10.0, -20.0], [0.0, 25.0, 5.0, -30.0]])
    probs = F.softmax(logits, dim=1)  # float32: the small classes are ~1e-13 .. 1e-24
    assert float(probs.min()) < 1e-20 and float(probs.min()) > 0
    centred = logits - logits.mean(dim=1, keepdim=True)
    got = logits_from_probs(probs)
    assert got.dtype == torch.float32
    assert torch.allclose(got, centred, atol=1e-3)
    # the earlier floor of 1e-8 made the three small classes of row 0 one value: no signal left
    old = logits_from_probs(probs, floor=1e-8)
    assert float(old[0, 1:].max() - old[0, 1:].min()) == 0.0
    assert float((old - centred).abs().max()) > 5.0
    # a class the victim (or a top-k answer) gives exactly 0 stays finite, at log(1e-30)
    zero = logits_from_probs(torch.tensor([[1.0, 0.0]]))
    assert torch.isfinite(zero).all()
    assert float(zero[0, 0] - zero[0, 1]) == pytest.approx(-torch.log(torch.tensor(1e-30)).item())


def test_logit_answers_are_centred_directly_and_score_answers_go_through_the_log():
    logits = torch.tensor([[80.0, 0.0, -40.0]])  # softmax underflows to exactly 0 in float32
    from_logits = victim_logits_of(Response(OutputKind.LOGITS, logits, 3))
    assert torch.equal(from_logits, centred_logits(logits))
    assert torch.allclose(from_logits, torch.tensor([[66.6667, -13.3333, -53.3333]]), atol=1e-3)
    probs = F.softmax(logits, dim=1)
    from_probs = victim_logits_of(Response(OutputKind.PROBABILITIES, probs, 3))
    assert torch.allclose(from_probs, logits_from_probs(probs))


def test_dfme_recovers_the_toy_victims_logits_through_the_oracle(make_oracle, toy_model):
    x = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    centred = centred_logits(toy_model(x))
    for output in ("probabilities", "logits"):
        oracle = make_oracle(output, budget=16)
        got = DFME().victim_logits(oracle, x)
        assert torch.allclose(got, centred, atol=1e-4), output
        assert oracle.ledger.spent == 16


def test_dfme_prob_floor_is_validated_and_shown():
    assert "prob_floor=1e-30" in repr(DFME())
    assert "prob_floor=1e-08" in repr(DFME(prob_floor=1e-8))
    for bad in (0.0, 1.0, -1e-3, True, "1e-8"):
        with pytest.raises(ValueError, match="prob_floor must"):
            DFME(prob_floor=bad)


@pytest.mark.parametrize(
    ("make", "module", "output", "tail"),
    [
        (lambda: DaST(query_batch=32, nz=8, ngf=8), dast_module, "label", "sigmoid"),
        (
            lambda: DaST(query_batch=32, nz=8, ngf=8, tail="bn-tanh"),
            dast_module,
            "label",
            "bn-tanh",
        ),
        (lambda: DFME(query_batch=8, nz=8, ngf=8), data_free_module, "probabilities", "bn-tanh"),
        (
            lambda: DFME(query_batch=8, nz=8, ngf=8, tail="sigmoid"),
            data_free_module,
            "probabilities",
            "sigmoid",
        ),
    ],
    ids=["dast", "dast-bn-tanh", "dfme", "dfme-sigmoid"],
)
def test_default_generators_end_in_the_chosen_tail(
    make, module, output, tail, make_oracle, monkeypatch
):
    built = []
    real = module.default_generator

    def recording(*args, **kw):
        built.append(real(*args, **kw))
        return built[-1]

    monkeypatch.setattr(module, "default_generator", recording)
    attack = make()
    assert f"tail={tail!r}" in repr(attack)
    oracle = make_oracle(output, budget=100)
    attack.run(oracle, surrogate=_surrogate(), budget=100, device="cpu")
    assert [g.tail for g in built] == [tail]
    assert oracle.ledger.spent == 100
    with pytest.raises(ValueError, match="tail must be one of"):
        type(attack)(tail="relu")
