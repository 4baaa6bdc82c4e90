"""Every way the README shows to bring your own victim, data or surrogate runs to a report: the
torch module of examples/byo/, an ONNX file (configs/byo-onnx.yaml), your own ImageFolder, your
own surrogate architecture, and the README's library snippet. (The HTTP victim of
configs/remote.yaml runs in tests/serve/test_remote_runs.py.)"""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest
import yaml

from stealkit.cli import main

ROOT = Path(__file__).resolve().parents[1]
# The same attack as the examples' presets, trained for a few steps: the tests check the path
# from a user's files to a report, not the copy's quality (the examples' own settings take ~1 min)
QUICK = {
    "type": "knockoff",
    "params": {"strategy": "random", "online_steps": 0, "recipe": {"epochs": 1, "min_steps": 10}},
}
BYO = ROOT / "examples" / "byo"

if (
    importlib.util.find_spec("digit_recognizer") is None
    or importlib.util.find_spec("mlxtend") is None
):
    pytest.skip(
        "the examples use digit-recognizer-py and mlxtend (scripts/setup.sh)",
        allow_module_level=True,
    )


def _run(config: Path, out: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    monkeypatch.chdir(ROOT)  # examples name their files relative to the repository, as documented
    assert main(["run", str(config), "--out", str(out), "--no-progress"]) == 0
    name = yaml.safe_load(config.read_text())["name"]
    assert (out / name / "report.html").is_file()
    return json.loads((out / name / "results.json").read_text())


def test_the_torch_module_example_steals_its_victim(tmp_path: Path, monkeypatch) -> None:
    results = _run(BYO / "torch-victim.yaml", tmp_path, monkeypatch)
    run = results["runs"][0]
    assert run["status"] == "ok" and run["ledger"]["spent"] == 2000
    assert results["victim"]["test_accuracy"] > 0.98  # the shipped weights, rebuilt by the user
    assert run["metrics"]["agreement"] > 0.3


def test_a_module_that_ends_in_softmax_is_caught_before_any_query(tmp_path: Path) -> None:
    from stealkit.errors import ConfigError
    from stealkit.victims.registry import load_victim

    (tmp_path / "soft.py").write_text(
        "from torch import nn\n"
        "def build():\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(784, 10), nn.Softmax(dim=1))\n"
    )
    spec = {"channels": 1, "height": 28, "width": 28}
    target = f"{tmp_path / 'soft.py'}:build"
    with pytest.raises(ConfigError, match="softmax to them a second time.*returns: probabilities"):
        load_victim("python", target=target, spec=spec)
    import torch

    torch.manual_seed(0)
    v = load_victim("python", target=target, spec=spec, returns="probabilities")
    torch.manual_seed(0)
    own = _module(tmp_path / "soft.py").build()  # the same weights, as the user's code gives them
    x = torch.rand(3, 1, 28, 28)
    probs = v.evaluator(output="probabilities").query(x).values
    with torch.inference_mode():
        assert torch.allclose(probs, own(x), atol=1e-6)  # softmaxed once, not twice
    with pytest.raises(ConfigError, match="no file"):
        load_victim("python", target="nowhere/net.py:build", spec=spec)


def test_the_onnx_example_runs(tmp_path: Path, monkeypatch) -> None:
    from victim_files import digit_recognizer_onnx

    raw = yaml.safe_load((ROOT / "configs/byo-onnx.yaml").read_text())
    raw["victim"]["params"]["path"] = str(digit_recognizer_onnx(tmp_path))
    raw["attacks"] = {"knockoff-random": QUICK}
    raw["grid"] = [{"attacks": ["knockoff-random"], "defenses": ["none", "top1"], "budgets": [300]}]
    raw["eval"]["limit"] = 500
    config = tmp_path / "byo-onnx.yaml"
    config.write_text(yaml.safe_dump(raw))
    results = _run(config, tmp_path / "runs", monkeypatch)
    assert [r["status"] for r in results["runs"]] == ["ok", "ok"]


def test_your_own_image_folder_is_the_pool(tmp_path: Path, monkeypatch) -> None:
    from PIL import Image

    from stealkit.data import load_dataset

    fm = load_dataset("fashion-mnist", "test")
    for i in range(600):  # 60 images in each of 10 class folders
        d = tmp_path / "my-photos" / "train" / f"class{int(fm.y[i])}"
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(fm.x[i, 0].numpy()).save(d / f"{i}.png")
    raw = yaml.safe_load((BYO / "own-data.yaml").read_text())
    raw["pool"]["params"]["path"] = str(tmp_path / "my-photos")
    raw["attacks"] = {"knockoff-random": QUICK}
    config = tmp_path / "own-data.yaml"
    config.write_text(yaml.safe_dump(raw))
    results = _run(config, tmp_path / "runs", monkeypatch)
    assert results["runs"][0]["status"] == "ok" and results["runs"][0]["ledger"]["spent"] == 500


def _module(path: Path):  # noqa: ANN202 - a module object
    spec = importlib.util.spec_from_file_location(path.stem, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_your_own_surrogate_architecture(tmp_path: Path, monkeypatch) -> None:
    module = _module(BYO / "own_surrogate.py")
    results = module.main(["--budget", "300", "--eval-limit", "300", "--out", str(tmp_path)])
    run = results["runs"][0]
    assert run["status"] == "ok" and run["config"]["surrogate"]["arch"] == "tiny-mlp"


def test_the_readme_library_snippet_runs(monkeypatch) -> None:
    text = (ROOT / "README.md").read_text()
    code = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "load_victim" in b)
    code = code.replace("budget=5000", "budget=300")
    code = code.replace(
        'reward="all")', 'reward="all", recipe=TrainRecipe(epochs=1, min_steps=10))'
    )
    code = code.replace(
        'load_dataset("fashion-mnist", "train")',
        'load_dataset("fashion-mnist", "train").limit(3000, 0)',
    )
    assert "TrainRecipe(" in code and ".limit(3000" in code  # the snippet reads as expected
    from stealkit.attacks.base import TrainRecipe

    scope: dict = {"TrainRecipe": TrainRecipe}
    exec(compile(code, "README.md", "exec"), scope)  # noqa: S102 - the README's own example
    assert scope["api"].ledger.spent == 300
