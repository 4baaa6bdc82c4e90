"""Dataset inference, Blind Walk form: distances against a closed form, exact query counts, the
t-test against its formula, and a copy told from an independent model."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stealkit.metrics.dataset_inference import (
    NOISES,
    DatasetInference,
    bisect_walk_distances,
    blind_walk_distances,
    blind_walk_features,
    ownership_test,
    sample_directions,
)
from stealkit.models import build_model
from stealkit.oracle import InputSpec, Ledger, LocalOracle
from stealkit.train import fit, predict

WIDE = (-1e3, 1e3)  # a value range no walk reaches: no clipping


class Halfspace(nn.Module):
    """Two classes split by the hyperplane w.x = b: logits (0, w.x - b)."""

    def __init__(self, w: Tensor, b: float) -> None:
        super().__init__()
        self.w, self.b = w, b

    def forward(self, x: Tensor) -> Tensor:
        s = (x.flatten(1) * self.w.flatten()).sum(1) - self.b
        return torch.stack([torch.zeros_like(s), s], dim=1)


def labels_of(model: nn.Module) -> tuple[list[int], Callable[[Tensor], Tensor]]:
    sent: list[int] = []

    def predict_labels(x: Tensor) -> Tensor:
        sent.append(len(x))
        return model(x).argmax(1)

    return sent, predict_labels


def closed_form(w: Tensor, b: float, x: Tensor, dirs: Tensor, k_max: int) -> Tensor:
    """First k with sign(w.(x + k d) - b > 0) != sign(w.x - b > 0), by hand."""
    s0 = (x.flatten(1) * w.flatten()).sum(1) - b  # (N,)
    slope = (dirs.flatten(2) * w.flatten()).sum(2)  # (N, D)
    out = torch.full(slope.shape, k_max + 1, dtype=torch.long)
    for i in range(len(x)):
        for j in range(slope.shape[1]):
            s, a = float(s0[i]), float(slope[i, j])
            if s > 0 and a < 0:  # positive until s + k a <= 0
                k = math.ceil(s / -a)
            elif s <= 0 and a > 0:  # non-positive until s + k a > 0
                k = math.floor(-s / a) + 1
            else:
                continue
            if k <= k_max:
                out[i, j] = k
    return out


@pytest.fixture
def linear_case() -> tuple[Halfspace, Tensor, Tensor]:
    g = torch.Generator().manual_seed(3)
    w = torch.randn(1, 3, 3, generator=g, dtype=torch.float64)
    x = torch.rand(40, 1, 3, 3, generator=g, dtype=torch.float64)
    dirs = 0.15 * torch.randn(40, 5, 1, 3, 3, generator=g, dtype=torch.float64)
    return Halfspace(w, b=float((x.flatten(1) @ w.flatten()).median())), x, dirs


@pytest.mark.parametrize("k_max", [1, 4, 12])
def test_blind_walk_matches_the_closed_form_of_a_linear_model(linear_case, k_max: int) -> None:
    model, x, dirs = linear_case
    _, predict_labels = labels_of(model)
    got = blind_walk_distances(predict_labels, x, dirs, k_max, value_range=WIDE)
    want = closed_form(model.w, model.b, x, dirs, k_max)
    assert torch.equal(got, want)
    assert 0 < int((want <= k_max).sum()) < want.numel()  # some walks end, some reach the cap


def test_walks_clip_to_the_value_range() -> None:
    """Hand computation: label 1 once the pixel sum of a 2x2 image exceeds 1.9."""
    model = Halfspace(torch.ones(1, 2, 2, dtype=torch.float64), 1.9)
    x = torch.full((1, 1, 2, 2), 0.2, dtype=torch.float64)  # sum 0.8
    dirs = torch.stack(
        [
            torch.full((1, 2, 2), 0.1),  # +0.4 a step: 1.6 at k=2, 2.0 at k=3
            torch.full((1, 2, 2), -0.1),  # the sum only falls (and stops at 0): never
            torch.full((1, 2, 2), 0.5),  # 0.7 each at k=1 (2.8), clipped to 1 from k=2
            torch.tensor([[[1.0, 1.0], [0.0, 0.0]]]),  # two pixels clip at 1: sum 2.4 at k=1
            torch.tensor([[[0.06, 0.0], [0.0, 0.0]]]),  # one pixel, clipped at 1: sum <= 1.6
        ]
    ).double()
    _, predict_labels = labels_of(model)
    got = blind_walk_distances(predict_labels, x, dirs, 20)
    assert got.tolist() == [[3, 21, 1, 1, 21]]
    # without clipping the fifth walk ends at 0.8 + 0.06 k > 1.9: k = 19
    got_wide = blind_walk_distances(predict_labels, x, dirs, 30, value_range=WIDE)
    assert got_wide.tolist() == [[3, 31, 1, 1, 19]]


@pytest.mark.parametrize("k_max", [1, 6, 7, 31])
def test_bisection_finds_the_first_change_on_monotone_rays_at_a_fixed_cost(
    linear_case, k_max: int
) -> None:
    model, x, dirs = linear_case
    sent_linear, p_linear = labels_of(model)
    sent_bisect, p_bisect = labels_of(model)
    lin = blind_walk_distances(p_linear, x, dirs, k_max, value_range=WIDE)
    bis = bisect_walk_distances(p_bisect, x, dirs, k_max, value_range=WIDE)
    assert torch.equal(lin, bis)
    n, d = dirs.shape[:2]
    assert sum(sent_bisect) == n + n * d * math.ceil(math.log2(k_max + 1))
    # the linear walk pays one query per step taken: min(distance, cap) per walk
    assert sum(sent_linear) == n + int(lin.clamp(max=k_max).sum())


@pytest.mark.parametrize("search", ["linear", "bisect"])
def test_true_labels_start_at_zero_where_the_model_errs_and_cost_one_query(
    linear_case, search: str
) -> None:
    model, x, dirs = linear_case
    truth = model(x).argmax(1)
    wrong = torch.arange(len(x)) % 4 == 0
    truth[wrong] = 1 - truth[wrong]
    sent, predict_labels = labels_of(model)
    walk = blind_walk_distances if search == "linear" else bisect_walk_distances
    dist = walk(predict_labels, x, dirs, 7, reference=truth, value_range=WIDE)
    assert bool((dist[wrong] == 0).all()) and bool((dist[~wrong] > 0).all())
    _, p_free = labels_of(model)
    assert torch.equal(dist[~wrong], walk(p_free, x[~wrong], dirs[~wrong], 7, value_range=WIDE))
    n_right, d = int((~wrong).sum()), dirs.shape[1]
    per_walk = (
        int(dist[~wrong].clamp(max=7).sum())
        if search == "linear"
        else n_right * d * math.ceil(math.log2(8))
    )
    assert sum(sent) == len(x) + per_walk  # the misclassified points cost their first query only


def test_query_count_is_the_inputs_sent_to_the_oracle(linear_case) -> None:
    model, x, _ = linear_case
    oracle = LocalOracle(model.float(), InputSpec(1, 3, 3), output="label", ledger=Ledger())
    sent: list[int] = []

    def predict_labels(b: Tensor) -> Tensor:
        sent.append(len(b))
        return oracle.query(b.float()).labels()

    g = torch.Generator().manual_seed(0)
    feats = blind_walk_features(
        predict_labels, x.float(), per_noise=2, step=0.1, max_steps=5, generator=g
    )
    assert feats.shape == (40, 6)
    assert oracle.ledger.spent == sum(sent) == 40 + int(feats.clamp(max=5).sum())
    assert oracle.ledger.calls == len(sent)  # one charge per batch


def test_directions_have_the_asked_norm_and_the_noise_types_their_tails() -> None:
    g = torch.Generator().manual_seed(0)
    dirs = sample_directions(3, (1, 28, 28), per_noise=2, step=0.05, generator=g)
    assert dirs.shape == (3, 6, 1, 28, 28)
    norms = dirs.flatten(2).norm(dim=2)
    torch.testing.assert_close(norms, torch.full((3, 6), 0.05 * 28.0))
    z = dirs.flatten(2)
    z = (z - z.mean(2, keepdim=True)) / z.std(2, keepdim=True)
    kurtosis = (z**4).mean(2).mean(0).view(3, 2).mean(1)  # uniform 1.8, gaussian 3, laplace 6
    assert kurtosis[0] < 2.2 < kurtosis[1] < 3.6 < kurtosis[2]
    again = sample_directions(
        3, (1, 28, 28), per_noise=2, step=0.05, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(dirs, again)


def test_ownership_test_is_welchs_one_sided_t_test() -> None:
    g = torch.Generator().manual_seed(1)
    a = torch.randn(12, generator=g, dtype=torch.float64) + 0.8
    b = torch.randn(9, generator=g, dtype=torch.float64) * 2
    t, p = ownership_test(a, b)
    by_hand = (a.mean() - b.mean()) / (a.var() / len(a) + b.var() / len(b)).sqrt()
    assert t == pytest.approx(float(by_hand))
    t_rev, p_rev = ownership_test(b, a)
    assert t_rev == pytest.approx(-t) and p + p_rev == pytest.approx(1.0)  # one-sided
    assert ownership_test(a + 5, a)[1] < 1e-6 < 0.5 < ownership_test(a, a + 5)[1]
    assert ownership_test(torch.ones(4), torch.ones(4)) == (0.0, 1.0)
    with pytest.raises(ValueError, match="at least 2"):
        ownership_test(torch.ones(1), torch.ones(3))


def test_hyperparameters_are_checked() -> None:
    with pytest.raises(ValueError, match="samples"):
        DatasetInference(samples=1)
    with pytest.raises(ValueError, match="noises"):
        DatasetInference(noises=("pink",))
    with pytest.raises(ValueError, match="step"):
        DatasetInference(step=0.0)
    with pytest.raises(ValueError, match="reference"):
        DatasetInference(reference="victim")  # type: ignore[arg-type]
    assert "max_steps=7" in repr(DatasetInference(max_steps=7))


# --- a copy and an independent model --------------------------------------------------------------
SPEC = InputSpec(1, 8, 8)


def _mlp(seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_model("mlp", in_channels=1, num_classes=10, image_size=8)


@pytest.fixture(scope="module")
def three_models() -> dict[str, object]:
    """A victim that memorises a private set of random images with random labels (the extreme of
    a training set only it knows), a copy trained on its labels of other random images, and an
    independent model trained on those images' own random labels."""
    g = torch.Generator().manual_seed(0)
    xs, ys = torch.rand(160, 1, 8, 8, generator=g), torch.randint(0, 10, (160,), generator=g)
    xp, yp = torch.rand(160, 1, 8, 8, generator=g), torch.randint(0, 10, (160,), generator=g)
    xo, yo = torch.rand(1500, 1, 8, 8, generator=g), torch.randint(0, 10, (1500,), generator=g)
    kw = {"loss_fn": F.cross_entropy, "steps": 400, "batch_size": 64, "device": "cpu"}
    victim = _mlp(0)
    fit(victim, xs, ys, seed=0, **kw)
    copy = _mlp(1)
    fit(copy, xo, predict(victim, xo, device="cpu").argmax(1), seed=1, **kw)
    independent = _mlp(2)
    fit(independent, xo, yo, seed=2, **kw)
    return {"victim": victim, "copy": copy, "independent": independent, "data": (xs, ys, xp, yp)}


def _run(models: dict[str, object], name: str, di: DatasetInference) -> tuple[object, Ledger]:
    xs, ys, xp, yp = models["data"]  # type: ignore[misc]
    victim = LocalOracle(models["victim"], SPEC, output="label")  # type: ignore[arg-type]
    ledger = Ledger()
    suspect = LocalOracle(models[name], SPEC, output="label", ledger=ledger)  # type: ignore[arg-type]
    r = di.run(victim, suspect, private=xs, public=xp, private_labels=ys, public_labels=yp)
    return r, ledger


def test_the_copy_is_caught_and_the_independent_model_is_not(three_models) -> None:
    di = DatasetInference(
        samples=25, train_samples=100, noises=NOISES, max_steps=7, search="bisect", seed=0
    )
    copy, ledger = _run(three_models, "copy", di)
    independent, _ = _run(three_models, "independent", di)
    assert copy.p_value < 1e-3  # type: ignore[attr-defined]
    assert independent.p_value > 0.05  # type: ignore[attr-defined]
    assert copy.suspect_queries == ledger.spent  # type: ignore[attr-defined]
    # 50 first queries, then at most 3 directions x ceil(log2 8) = 9 per point
    assert 50 <= copy.suspect_queries <= 50 * (1 + 9)  # type: ignore[attr-defined]
    assert copy.victim_queries >= 200  # type: ignore[attr-defined]


def test_the_default_catches_the_copy_within_100_queries(three_models) -> None:
    di = DatasetInference(train_samples=100, seed=0)  # m = 15, one gaussian step
    copy, ledger = _run(three_models, "copy", di)
    independent, _ = _run(three_models, "independent", di)
    assert copy.p_value < 0.01 < 0.05 < independent.p_value  # type: ignore[attr-defined]
    assert 30 < ledger.spent == copy.suspect_queries <= 60  # type: ignore[attr-defined]


def test_walks_from_the_suspects_own_labels_catch_the_victim_itself(three_models) -> None:
    di = DatasetInference(
        samples=25,
        train_samples=100,
        noises=NOISES,
        max_steps=7,
        search="bisect",
        reference="suspect",
        seed=0,
    )
    itself, ledger = _run(three_models, "victim", di)
    independent, _ = _run(three_models, "independent", di)
    assert itself.p_value < 0.01 < independent.p_value  # type: ignore[attr-defined]
    assert ledger.spent == 50 * (1 + 9)  # bisection: a fixed cost from the suspect's labels


def test_missing_labels_for_true_reference_say_what_to_do(three_models) -> None:
    xs, _, xp, _ = three_models["data"]
    victim = LocalOracle(three_models["victim"], SPEC, output="label")
    with pytest.raises(ValueError, match="reference='suspect'"):
        DatasetInference(samples=5, train_samples=10).run(victim, victim, private=xs, public=xp)
