"""The encoder judge embeds each probe and eval image once, and the undefended API's utility row
is the victim probe's own, equal to what the honest-user path measures."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from stealkit.data.dataset import ImageDataset
from stealkit.defenses.perturbation import NoDefense
from stealkit.experiments.judges import ProbeJudge
from stealkit.oracle.spec import InputSpec
from stealkit.victims.base import Victim


class CountingEncoder(nn.Module):
    """A fixed random projection of 8x8 images that counts the images it embeds."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.proj = nn.Linear(64, 16)
        self.seen = 0

    def forward(self, x: Tensor) -> Tensor:
        self.seen += len(x)
        return torch.tanh(self.proj(x.flatten(1)))


def _data(n: int, seed: int) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = torch.randint(0, 80, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    x[:, :, : 3 * 2] += (y * 50).to(torch.uint8).view(-1, 1, 1, 1)  # learnable from the pixels
    return ImageDataset("toy", x, y)


@pytest.fixture()
def judge_and_model() -> tuple[ProbeJudge, CountingEncoder]:
    model = CountingEncoder()
    victim = Victim("toy-encoder", model, InputSpec(1, 8, 8), kind="encoder")
    judge = ProbeJudge(
        victim,
        eval_set=_data(50, 1),
        probe_set=_data(120, 2),
        probe_epochs=3,
        device=torch.device("cpu"),
    )
    return judge, model


def test_victim_embeds_each_probe_and_eval_image_once(judge_and_model) -> None:
    judge, model = judge_and_model
    assert model.seen == 120 + 50
    assert judge.victim_embeddings.shape == (50, 16)
    assert judge.victim_accuracy is not None and judge.victim_accuracy > 0.5


def test_undefended_utility_costs_no_victim_calls_and_equals_the_measured_row(
    judge_and_model,
) -> None:
    judge, model = judge_and_model
    before = model.seen
    row = judge.defense_utility("none", None)
    assert model.seen == before  # nothing embedded again
    measured = judge.defense_utility("none", NoDefense())  # through the honest user's oracle
    assert model.seen == before + 120 + 50 + 50
    assert row["repr"] == measured["repr"] == "NoDefense()"
    assert row["victim_accuracy"] == measured["victim_accuracy"]
    assert row["top1_kept"] == measured["top1_kept"] == 1.0
    assert measured["mean_relative_l2_change"] == pytest.approx(row["mean_relative_l2_change"])
