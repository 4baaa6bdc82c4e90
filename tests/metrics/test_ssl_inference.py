"""Dataset inference, encoder form: the density against a hand-computed Gaussian, exact query
counts, and a stolen encoder told from an independent one."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stealkit.metrics.ssl_inference import EncoderDatasetInference, fit_density, log_likelihoods
from stealkit.models import build_model
from stealkit.oracle import InputSpec, Ledger, LocalOracle
from stealkit.train import fit

SPEC = InputSpec(1, 8, 8)


def test_one_component_is_the_diagonal_gaussian_of_the_data() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(300, 5, generator=g, dtype=torch.float64) * torch.tensor([1, 2, 3, 0.5, 1.5])
    gmm = fit_density(z, components=1, smoothing=1e-3)
    mu, var = z.mean(0), z.var(0, unbiased=False) + 1e-3
    new = torch.randn(7, 5, generator=g, dtype=torch.float64)
    by_hand = -0.5 * (torch.log(2 * math.pi * var) + (new - mu) ** 2 / var).sum(1)
    torch.testing.assert_close(log_likelihoods(gmm, new), by_hand)
    with pytest.raises(ValueError, match="two per component"):
        fit_density(z[:5], components=4)


class CosineEncoder(nn.Module):
    """An MLP's output, normalised (the representation), with a cosine classifier used only in
    training: it pulls the images it is trained on onto their class directions."""

    def __init__(self, seed: int, dim: int = 8) -> None:
        super().__init__()
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = build_model("mlp", in_channels=1, num_classes=dim, image_size=8)
            self.classes = nn.Parameter(torch.randn(10, dim))
        self.training_head = False

    def forward(self, x: Tensor) -> Tensor:
        z = F.normalize(self.net(x), dim=1)
        return 10 * z @ F.normalize(self.classes, dim=1).T if self.training_head else z


def _train(
    model: CosineEncoder, x: Tensor, y: Tensor, *, steps: int, seed: int, lr: float = 1e-3
) -> CosineEncoder:
    model.training_head = True
    fit(
        model,
        x,
        y,
        loss_fn=F.cross_entropy,
        steps=steps,
        lr=lr,
        batch_size=64,
        seed=seed,
        device="cpu",
    )
    model.training_head = False
    return model.eval()


@pytest.fixture(scope="module")
def encoders() -> dict[str, object]:
    """A victim encoder trained on a private set of random images with random labels; the same
    weights stolen and fine-tuned on the thief's own task; an encoder trained on other images."""
    g = torch.Generator().manual_seed(0)
    xs, ys = torch.rand(300, 1, 8, 8, generator=g), torch.randint(0, 10, (300,), generator=g)
    xp = torch.rand(300, 1, 8, 8, generator=g)
    xo, yo = torch.rand(1000, 1, 8, 8, generator=g), torch.randint(0, 10, (1000,), generator=g)
    victim = _train(CosineEncoder(0), xs, ys, steps=400, seed=0)
    stolen = _train(copy.deepcopy(victim), xo, yo, steps=50, seed=1, lr=3e-5)
    independent = _train(CosineEncoder(2), xo, yo, steps=400, seed=2)
    return {"victim": victim, "stolen": stolen, "independent": independent, "data": (xs, xp)}


def _run(encoders: dict[str, object], name: str, di: EncoderDatasetInference) -> object:
    xs, xp = encoders["data"]  # type: ignore[misc]
    victim = LocalOracle(encoders["victim"], SPEC, output="embedding")  # type: ignore[arg-type]
    suspect = LocalOracle(encoders[name], SPEC, output="embedding", ledger=Ledger())  # type: ignore[arg-type]
    return di.run(victim, suspect, private=xs, public=xp)


def test_a_stolen_encoder_is_caught_and_an_independent_one_is_not(encoders) -> None:
    di = EncoderDatasetInference(samples=25, fit_samples=200, components=10, seed=0)
    itself = _run(encoders, "victim", di)
    stolen = _run(encoders, "stolen", di)
    independent = _run(encoders, "independent", di)
    assert itself.p_value < 1e-6  # type: ignore[attr-defined]
    assert stolen.p_value < 1e-6  # type: ignore[attr-defined]
    assert independent.p_value > 0.05  # type: ignore[attr-defined]
    assert stolen.suspect_queries == 50 and stolen.victim_queries == 200  # type: ignore[attr-defined]


def test_the_suspect_must_answer_in_the_victims_space(encoders) -> None:
    xs, xp = encoders["data"]
    victim = LocalOracle(encoders["victim"], SPEC, output="embedding")
    other = nn.Sequential(nn.Flatten(), nn.Linear(64, 5))
    with pytest.raises(ValueError, match="5-d representations, the victim 8-d"):
        EncoderDatasetInference(samples=5, fit_samples=40).run(
            victim, LocalOracle(other, SPEC, output="embedding"), private=xs, public=xp
        )
    labels = LocalOracle(encoders["victim"], SPEC, output="label")
    with pytest.raises(ValueError, match="needs embeddings"):
        EncoderDatasetInference(samples=5, fit_samples=40).run(
            victim, labels, private=xs, public=xp
        )


def test_hyperparameters_are_checked() -> None:
    with pytest.raises(ValueError, match="samples"):
        EncoderDatasetInference(samples=1)
    with pytest.raises(ValueError, match="2 \\* components"):
        EncoderDatasetInference(fit_samples=10, components=8)
    assert "components=3" in repr(EncoderDatasetInference(components=3))
