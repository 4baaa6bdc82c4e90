"""Black-Box Ripper on the 1x8x8 row-band toy victim: the evolutionary step, exact budget."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import stealkit.attacks.ripper as ripper_module
from stealkit.attacks.base import TrainRecipe
from stealkit.attacks.ripper import BlackBoxRipper, evolution_step
from stealkit.data.dataset import ImageDataset
from stealkit.data.pool import QueryPool
from stealkit.errors import BudgetExceeded
from stealkit.metrics import agreement
from stealkit.models import build_model
from stealkit.models.generators import build_generator
from toys import RowBands

NZ = 8
RECIPE = TrainRecipe(epochs=10, min_steps=150, batch_size=64)


def _surrogate(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("mlp", in_channels=1, num_classes=4, image_size=8)


def _pool(spec8, n: int = 400) -> QueryPool:
    x = torch.rand((n, 1, 8, 8), generator=torch.Generator().manual_seed(1))
    return QueryPool(ImageDataset("noise", (x * 255).to(torch.uint8)), spec8)


def _generator():
    """An untrained DCGAN stands in for the proxy-trained one (tests skip the GAN)."""
    return build_generator("dcgan", NZ, 1, 8, ngf=8, seed=0)


def _ripper(**kw) -> BlackBoxRipper:
    params = dict(nz=NZ, population=10, elite=3, generations=5, sigma=0.5, recipe=RECIPE)
    return BlackBoxRipper(**(params | kw))


def test_an_evolutionary_step_never_lowers_the_best_fitness():
    gen = torch.Generator().manual_seed(0)
    target = torch.randn(3, 1, 5, generator=gen)  # three searches, one optimum each

    def fitness_of(z: torch.Tensor) -> torch.Tensor:
        return -(z - target).pow(2).sum(-1)

    z = 3.0 * torch.randn(3, 12, 5, generator=gen)
    fit = fitness_of(z)
    first = fit.max(1).values
    evaluated: list[int] = []

    def evaluate(children: torch.Tensor) -> torch.Tensor:
        evaluated.append(children.shape[1])
        return fitness_of(children)

    for _ in range(30):
        best = fit.max(1).values
        top = fit.topk(4, dim=1).indices
        elites_before = z.gather(1, top.unsqueeze(2).expand(3, 4, 5))
        z, fit = evolution_step(z, fit, evaluate, elite=4, sigma=0.3, generator=gen)
        assert z.shape == (3, 12, 5) and fit.shape == (3, 12)
        assert bool((fit.max(1).values >= best).all())  # elites survive: never worse
        assert torch.equal(z[:, :4], elites_before)  # kept unchanged, fittest first
        assert torch.allclose(fit, fitness_of(z))  # carried fitness is the elites' own
    assert evaluated == [8] * 30  # only the K - u children are evaluated (queried)
    assert bool((fit.max(1).values > first + 1.0).all())  # and the search climbs
    with pytest.raises(ValueError, match="elite"):
        evolution_step(z, fit, evaluate, elite=12, sigma=0.3, generator=gen)


def test_spends_exactly_the_budget_and_never_more(make_oracle, spec8):
    for transfer in ("all", "found"):
        oracle = make_oracle("probabilities", budget=333)
        result = _ripper(transfer=transfer, recipe=TrainRecipe(epochs=1, min_steps=10)).run(
            oracle, pool=_pool(spec8), surrogate=_surrogate(), generator=_generator(), budget=333
        )
        assert oracle.ledger.spent == 333 == result.queries
        with pytest.raises(BudgetExceeded):
            oracle.query(torch.rand(1, 1, 8, 8))


def test_found_images_keep_their_own_answers(make_oracle, spec8, monkeypatch):
    seen: dict[str, torch.Tensor] = {}
    train = ripper_module.train_surrogate

    def spy(surrogate, x, p, recipe, **kw):
        seen["x"], seen["p"] = x, p
        return train(surrogate, x, p, recipe, **kw)

    monkeypatch.setattr(ripper_module, "train_surrogate", spy)
    oracle = make_oracle("probabilities", budget=600)
    result = _ripper(transfer="found", recipe=TrainRecipe(epochs=1, min_steps=10)).run(
        oracle, pool=_pool(spec8), surrogate=_surrogate(), generator=_generator(), budget=600
    )
    x, p = seen["x"], seen["p"]
    searches = result.info["searches"]  # final populations of 10, per class (4) and search
    assert 40 * (searches - 1) < len(x) <= 40 * searches  # the last search may be trimmed
    assert result.info["transfer_size"] == len(x)
    # every image's answer is the victim's answer to that very image
    assert torch.allclose(p, F.softmax(RowBands()(x), dim=1), atol=1e-5)


def test_beats_chance(make_oracle, toy_model, spec8):
    oracle = make_oracle("probabilities", budget=1000)
    result = _ripper(gan_steps=100, proxy_images=400, ngf=8, ndf=8).run(
        oracle, pool=_pool(spec8), surrogate=_surrogate(), budget=1000, device="cpu"
    )
    x = torch.rand((500, 1, 8, 8), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        victim, stolen = toy_model(x).argmax(1), result.surrogate(x).argmax(1)
    assert torch.bincount(victim).max() / len(x) < 0.3  # a constant guess agrees < 30%
    assert agreement(stolen, victim) > 0.5
    assert result.info["generations_run"] > 0 and result.info["transfer_size"] == 1000


def test_deterministic_at_a_fixed_seed(make_oracle, spec8):
    runs = []
    for seed in (1, 1, 2):
        result = _ripper(recipe=TrainRecipe(epochs=1, min_steps=20)).run(
            make_oracle("probabilities", budget=300),
            pool=_pool(spec8),
            surrogate=_surrogate(),
            generator=_generator(),
            budget=300,
            seed=seed,
        )
        runs.append(result.surrogate.state_dict())
    assert all(torch.equal(runs[0][k], runs[1][k]) for k in runs[0])
    assert not all(torch.equal(runs[0][k], runs[2][k]) for k in runs[0])


def test_needs_a_pool_and_scores_and_refuses_before_buying(make_oracle, spec8):
    attack = _ripper()
    assert attack.needs_pool is True and attack.steals == "classifier"
    oracle = make_oracle("probabilities", budget=100)
    with pytest.raises(ValueError, match="pool"):
        attack.run(oracle, surrogate=_surrogate(), budget=100)
    labels = make_oracle("label", budget=100)
    with pytest.raises(ValueError, match="learns from"):
        attack.run(labels, pool=_pool(spec8), surrogate=_surrogate(), budget=100)
    assert oracle.ledger.spent == 0 == labels.ledger.spent


def test_repr_and_bad_hyperparameters():
    text = repr(BlackBoxRipper(population=20, elite=5, transfer="found"))
    assert "population=20" in text and "elite=5" in text and "transfer='found'" in text
    for bad, match in (
        ({"elite": 30}, "elite"),
        ({"elite": 0}, "elite"),
        ({"sigma": 0.0}, "sigma"),
        ({"threshold": 1.5}, "threshold"),
        ({"transfer": "best"}, "transfer"),
    ):
        with pytest.raises(ValueError, match=match):
            BlackBoxRipper(**bad)
