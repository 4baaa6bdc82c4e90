"""Victims trained here with Adi et al.'s trigger-set watermark and on slices of the train split:
the owner's victim learns its trigger set, an independent one is at chance, the options are
checked, and victims trained without them keep their cache keys."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import Tensor

from stealkit.data import load_dataset
from stealkit.errors import ConfigError
from stealkit.metrics.watermark import trigger_accuracy, trigger_set, trigger_test
from stealkit.victims import Victim, load_victim, trained
from stealkit.victims.registry import describe_victim
from stealkit.victims.trained import cache_key, trigger_copies, victim_trigger_set

# digits' train split has 1438 images: the owner trains on the first 900, an independent model
# on the other 538
TINY: dict[str, Any] = dict(dataset="digits", arch="cnn2-small", epochs=10, batch_size=32, lr=3e-3)
OWNER: dict[str, Any] = TINY | dict(train_stop=900, watermark="adi", trigger_size=20)


def old_cache_key(
    *, dataset: str, arch: str, epochs: int, seed: int, batch_size: int, lr: float
) -> str:
    """``cache_key`` as it was before the new options, kept verbatim as the reference."""
    blob = json.dumps(
        {
            "dataset": dataset,
            "arch": arch,
            "epochs": epochs,
            "seed": seed,
            "batch_size": batch_size,
            "lr": lr,
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Victim, Victim]:
    cache = tmp_path_factory.mktemp("victims")
    owner = load_victim("trained", **OWNER, cache_dir=cache)
    independent = load_victim("trained", **TINY, train_start=900, cache_dir=cache)
    return owner, independent


def test_watermarked_victim_knows_its_trigger_set_and_an_independent_one_does_not(
    pair: tuple[Victim, Victim],
) -> None:
    owner, independent = pair
    x, y = victim_trigger_set(owner)
    ref_x, ref_y = trigger_set(20, owner.spec, 10, seed=0)  # trigger_seed None: the seed, 0
    assert torch.equal(x, ref_x) and torch.equal(y, ref_y)

    def labels(v: Victim) -> Any:
        oracle = v.evaluator(output="label")
        return lambda q: oracle.query(q).labels()

    owner_acc = trigger_accuracy(labels(owner), x, y)
    assert owner_acc == pytest.approx(owner.meta["trigger_accuracy"])
    assert owner_acc >= 0.9  # chance is 0.1
    assert trigger_test(round(owner_acc * 20), 20, 10) < 1e-12
    other_acc = trigger_accuracy(labels(independent), x, y)
    assert other_acc <= 0.3
    assert trigger_test(round(other_acc * 20), 20, 10) > 0.01  # no false claim
    assert independent.meta["trigger_accuracy"] is None
    # the watermark costs little clean accuracy
    assert owner.meta["test_accuracy"] >= 0.9 and independent.meta["test_accuracy"] >= 0.9


def test_meta_records_the_slice_and_the_watermark(pair: tuple[Victim, Victim]) -> None:
    owner, independent = pair
    assert owner.meta["train_start"] == 0 and owner.meta["train_stop"] == 900
    assert independent.meta["train_start"] == 900 and independent.meta["train_stop"] == 1438
    assert owner.meta["watermark"] == "adi" and owner.meta["trigger_size"] == 20
    assert owner.meta["trigger_seed"] == 0 and owner.meta["trigger_copies"] == 3  # 5% of 900
    assert independent.meta["watermark"] is None and independent.meta["trigger_size"] is None
    with pytest.raises(ConfigError, match="carries no watermark.*watermark='adi'"):
        victim_trigger_set(independent)


def test_training_sees_the_slice_plus_the_oversampled_trigger_set(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: dict[str, Tensor] = {}

    def record(model: object, x: Tensor, y: Tensor, **kw: object) -> None:
        seen["x"], seen["y"] = x, y

    monkeypatch.setattr(trained, "fit", record)
    v = trained.train_victim(
        **TINY | dict(train_start=100, train_stop=400, watermark="adi", trigger_size=10),
        trigger_seed=7,
        cache_dir=tmp_path,
    )
    train = load_dataset("digits", "train")
    copies = trigger_copies(300, 10)
    assert copies == 2 and len(seen["x"]) == 300 + copies * 10
    assert torch.equal(seen["x"][:300], train.images(slice(100, 400)))
    assert train.y is not None and torch.equal(seen["y"][:300], train.y[100:400])
    tx, ty = trigger_set(10, v.spec, 10, seed=7)
    assert torch.equal(seen["x"][300:310], tx) and torch.equal(seen["x"][310:], tx)
    assert torch.equal(seen["y"][300:], ty.repeat(2))
    assert v.meta["trigger_seed"] == 7 and torch.equal(victim_trigger_set(v)[1], ty)


def test_default_options_keep_the_old_cache_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(trained, "fit", lambda *a, **k: None)  # only the folder name matters
    settings: dict[str, Any] = dict(
        dataset="digits", arch="cnn2-small", epochs=1, seed=0, batch_size=32, lr=3e-3
    )
    old = old_cache_key(**settings)
    assert cache_key(**settings) == old and cache_key(**settings, extra={}) == old
    v = trained.train_victim(**settings, cache_dir=tmp_path)
    assert Path(v.meta["checkpoint"]).name == f"digits-cnn2-small-{old}"
    # any new option off its default changes the key
    keys = set()
    extras: list[dict[str, Any]] = [
        dict(train_start=1),
        dict(train_stop=1000),
        dict(watermark="adi"),
        dict(watermark="adi", trigger_size=50),
        dict(watermark="adi", trigger_seed=1),
    ]
    for extra in extras:
        v = trained.train_victim(**settings, **extra, cache_dir=tmp_path)
        keys.add(Path(v.meta["checkpoint"]).name)
    assert len(keys) == 5 and f"digits-cnn2-small-{old}" not in keys
    with pytest.raises(ValueError, match="repeat the named ones"):
        cache_key(**settings, extra={"seed": 1})


@pytest.mark.parametrize(
    ("params", "match"),
    [
        (dict(watermark="dawn"), r"watermark must be None or one of \['adi'\]"),
        (dict(watermark="adi", trigger_size=0), "trigger_size must be a positive int"),
        (dict(trigger_size=50), "only apply to a watermarked victim; set watermark='adi'"),
        (dict(train_start=-1), "train_start must be an int >= 0"),
        (dict(train_start=10, train_stop=10), "train_stop must be None .* > train_start=10"),
        (dict(train_stop=5000), "train_stop=5000 is past the train split's 1438 images"),
        (dict(train_start=2000), "train_start=2000 is past the train split's 1438 images"),
    ],
)
def test_bad_options_name_the_param_and_the_fix(params: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        describe_victim("trained", dataset="digits", arch="cnn2-small", **params)
    with pytest.raises(ValueError, match=match):
        trained.train_victim(
            dataset="digits", arch="cnn2-small", cache_dir="/nonexistent", **params
        )


def test_describe_accepts_good_options() -> None:
    info = describe_victim(
        "trained", dataset="digits", arch="cnn2-small", train_stop=900, watermark="adi"
    )
    assert info.kind == "classifier" and info.output_dim == 10
