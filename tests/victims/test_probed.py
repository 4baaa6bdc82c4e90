"""The probed encoder: an encoder victim plus the linear probe a judge would train, served as a
classifier (a tiny supervised MLP encoder on sklearn's 8x8 digits, cached per module)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

from stealkit.data import load_dataset, to_spec
from stealkit.errors import ConfigError
from stealkit.experiments.config import parse_config
from stealkit.experiments.judges import ClassifierJudge, ProbeJudge
from stealkit.victims import load_victim
from stealkit.victims.probed import probe_images
from stealkit.victims.registry import describe_victim

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def encoder_params(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    cache = tmp_path_factory.mktemp("victims")
    return {
        "dataset": "digits",
        "arch": "mlp",
        "epochs": 1,
        "cache_dir": str(cache),
        "device": "cpu",
    }


def test_answers_are_the_encoder_and_the_judges_probe(encoder_params: dict[str, Any]) -> None:
    victim = load_victim(
        "probed-encoder",
        encoder="supervised-encoder",
        encoder_params=encoder_params,
        dataset="digits",
        limit=300,
        epochs=3,
        device="cpu",
    )
    assert victim.kind == "classifier" and victim.spec.shape == (1, 8, 8)
    assert victim.meta["probe_size"] == 300 and victim.meta["num_classes"] == 10
    encoder = load_victim("supervised-encoder", **encoder_params)  # the cached encoder
    probe_set, test_set = load_dataset("digits", "train").limit(300), load_dataset("digits", "test")
    judge = ProbeJudge(encoder, eval_set=test_set, probe_set=probe_set, probe_epochs=3, device=CPU)
    by_hand = nn.Sequential(encoder.model, judge.victim_probe.head).eval()
    x = to_spec(test_set.images(), victim.spec)
    with torch.no_grad():
        torch.testing.assert_close(victim.model(x), by_hand(x))
    clf = ClassifierJudge(victim, eval_set=test_set, device=CPU)
    assert torch.equal(clf.victim_labels, judge.victim_probe.predictions)
    assert clf.victim_accuracy == pytest.approx(judge.victim_accuracy)
    assert clf.victim_accuracy is not None and clf.victim_accuracy > 0.5  # a head that learned


def test_describe_neither_pretrains_nor_trains_a_head(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import stealkit.victims.encoders as encoders
    import stealkit.victims.probed as probed

    def refuse(*_: Any, **__: Any) -> Any:
        raise AssertionError("describe must not train")

    monkeypatch.setattr(encoders, "pretrain", refuse)
    monkeypatch.setattr(probed, "linear_probe", refuse)
    ssl = {
        "method": "simclr",
        "dataset": "digits",
        "arch": "cnn2-small",
        "cache_dir": str(tmp_path),
    }
    params = {"encoder": "ssl", "encoder_params": ssl, "dataset": "digits", "limit": 100}
    info = describe_victim("probed-encoder", **params)
    assert info.kind == "classifier" and info.output_dim == 10
    assert info.spec is not None and info.spec.shape == (1, 8, 8)
    cfg = {
        "name": "t",
        "victim": {"name": "probed-encoder", "params": params, "output": "label"},
        "pool": {"dataset": "digits"},
        "eval": {"dataset": "digits", "split": "test"},
        "grid": [{"attacks": ["knockoff-random"], "budgets": [100]}],
    }
    parse_config(cfg)  # a classifier victim, checked without training anything
    with pytest.raises(ConfigError, match="victim.output: 'embedding'"):
        parse_config({**cfg, "victim": {**cfg["victim"], "output": "embedding"}})
    assert not list(tmp_path.iterdir())  # no checkpoint was written


def test_bad_settings_are_config_errors(encoder_params: dict[str, Any]) -> None:
    trained = {k: v for k, v in encoder_params.items() if k != "device"}
    with pytest.raises(ConfigError, match="needs an encoder"):
        describe_victim(
            "probed-encoder", encoder="trained", encoder_params=trained, dataset="digits"
        )
    with pytest.raises(ConfigError, match="epochs"):
        describe_victim("probed-encoder", encoder="ssl", dataset="digits", epochs=0)
    with pytest.raises(ConfigError, match="start"):
        probe_images("digits", "train", 50, 10, None, None)


def test_probe_images_select_like_a_config_section() -> None:
    full = load_dataset("digits", "train")
    part = probe_images("digits", "train", 10, 60, None, None)
    assert torch.equal(part.x, full.x[10:60])
    assert torch.equal(probe_images("digits", "train", 0, None, 40, None).x, full.limit(40).x)
