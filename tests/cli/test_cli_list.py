"""`stealkit list [KIND] --details|--json` and `stealkit config-schema`: what a config can name,
told in full for every registered name, and where the config keys are documented."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path
from typing import Any

import pytest

from stealkit.attacks import attack_names, build_attack
from stealkit.cli import main
from stealkit.data import dataset_info, dataset_names
from stealkit.data import registry as data_registry
from stealkit.data.registry import describe_dataset
from stealkit.errors import DataNotFound
from stealkit.victims.registry import victim_names


def _json(capsys, *argv: str) -> dict[str, Any]:
    assert main(["list", *argv, "--json"]) == 0
    out: dict[str, Any] = json.loads(capsys.readouterr().out)
    return out


def _text(capsys, *argv: str) -> str:
    assert main(["list", *argv]) == 0
    return str(capsys.readouterr().out)


def _as_outside_pytest(monkeypatch) -> None:
    """Load data sets as `stealkit list` does outside pytest: scikit-image calls ``pytest.skip``
    when one of its photos would need a download and PYTEST_CURRENT_TEST is set, which would
    skip the test instead of leaving those photos out of skimage-crops. Pytest sets the variable
    afresh for each phase, so a test drops it in its own body."""
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)


def _entry(out: str, name: str) -> str:
    """The lines of ``name``'s entry in a --details listing: its own and the indented ones after."""
    found = re.search(rf"^  {re.escape(name)} .*\n(?: {{5,}}.*\n)*", out, re.M)
    assert found is not None, f"no entry for {name!r}"
    return found[0]


def test_datasets_json_tells_shape_counts_labels_and_availability_of_every_data_set(
    monkeypatch, capsys
) -> None:
    _as_outside_pytest(monkeypatch)
    records = {r["name"]: r for r in _json(capsys, "datasets")["datasets"]}
    assert sorted(records) == dataset_names()
    for name, r in records.items():
        splits, how = dataset_info(name)
        assert r["how_to_get"] == how and tuple(r["splits"]) == splits
        assert isinstance(r["available"], bool), name
        if not r["available"]:
            assert r["problem"], name  # why, beside how to get it
        if name == "imagefolder":  # the user's folder: nothing known before it is given
            assert not r["available"] and "path" in r["problem"]
            continue
        assert r["channels"] in (1, 3), name
        assert r["height"] >= 8 and r["width"] >= 8, name
        assert set(r["images"]) == set(splits) and min(r["images"].values()) > 0, name
        assert isinstance(r["labelled"], bool), name
        if r["labelled"]:
            assert r["classes"] >= 2, name
        else:
            assert r["classes"] is None, name
    assert records["cifar10"]["available"] is False  # never bundled: needs --data-dir
    assert "--data-dir" in records["cifar10"]["how_to_get"]
    assert (records["cifar10"]["channels"], records["cifar10"]["height"]) == (3, 32)
    assert records["digits"]["available"] is True  # scikit-learn is a dependency
    assert records["digits"]["images"] == {"all": 1797, "train": 1438, "test": 359}


def test_declared_metadata_matches_what_loads(monkeypatch) -> None:
    """What the registry declares (shown for sets that are not here) is what the files hold."""
    _as_outside_pytest(monkeypatch)
    for name in dataset_names():
        loaded = describe_dataset(name)  # cached in memory by the previous test
        if not loaded.available:
            continue
        declared = describe_dataset(name, load=False)
        assert declared.available is None
        for key in ("channels", "height", "width", "images", "labelled", "classes"):
            assert getattr(declared, key) == getattr(loaded, key), (name, key)


def test_datasets_details_prints_one_entry_per_data_set(monkeypatch, capsys) -> None:
    _as_outside_pytest(monkeypatch)
    out = _text(capsys, "datasets", "--details")
    for name in dataset_names():
        r = describe_dataset(name)
        block = _entry(out, name)
        if r.channels is not None:
            assert f"{r.channels}x{r.height}x{r.width}" in block, name
        if r.images:
            split, n = next(iter(r.images.items()))
            assert f"{split} {n:,}" in block, name
        assert ("unlabelled" in block) == (r.labelled is False), name
        if r.available:
            assert "available here" in block and "NOT" not in block, name
        else:
            assert "NOT available here" in block and r.how_to_get in block, name


def test_a_data_set_that_fails_to_load_is_reported_not_raised(monkeypatch, capsys) -> None:
    _as_outside_pytest(monkeypatch)

    def broken(split: str, root: Path | None) -> Any:
        raise RuntimeError("the disk is on fire")

    entry = (broken, ("all",), "Ask the admin.")
    monkeypatch.setitem(data_registry._DATASETS, "test-broken", entry)
    r = describe_dataset("test-broken")
    assert r.available is False and "the disk is on fire" in r.problem
    assert r.channels is None and r.images == {}
    out = _text(capsys, "datasets", "--details")
    assert "test-broken" in out and "Ask the admin." in out


def test_a_data_dir_without_the_files_says_how_to_get_them(
    tmp_path: Path, monkeypatch, capsys
) -> None:
    only = {k: data_registry._DATASETS[k] for k in ("mnist", "cifar10")}
    monkeypatch.setattr(data_registry, "_DATASETS", only)  # the others load in other tests
    records = _json(capsys, "datasets", "--data-dir", str(tmp_path))["datasets"]
    assert [r["name"] for r in records] == ["cifar10", "mnist"]
    for r in records:
        assert r["available"] is False and str(tmp_path) in r["problem"]
        with pytest.raises(DataNotFound):  # the same verdict as loading it
            data_registry.load_dataset(r["name"], "train", data_dir=tmp_path)
    out = _text(capsys, "datasets", "--details", "--data-dir", str(tmp_path))
    assert "NOT available here" in _entry(out, "mnist") and "--data-dir" in _entry(out, "mnist")


def test_attacks_details_tell_family_answers_and_pool_of_every_attack(capsys) -> None:
    records = {r["name"]: r for r in _json(capsys, "attacks")["attacks"]}
    assert sorted(records) == attack_names()
    out = _text(capsys, "attacks", "--details")
    for name, r in records.items():
        a = build_attack(name)
        assert r["steals"] == a.steals and r["needs_pool"] == a.needs_pool
        assert r["accepts"] == sorted(k.value for k in a.accepts)
        line = _entry(out, name).splitlines()[0]
        assert f"steals: {a.steals}" in line and ", ".join(r["accepts"]) in line
        assert ("needs a pool" if a.needs_pool else "data-free") in line
    assert records["mega"]["presets"]["mega-p"]["accepts"] == ["logits", "probabilities", "topk"]
    assert "label" in records["mega"]["presets"]["mega"]["accepts"]
    assert "preset mega-p: variant='probability' (learns from logits" in out


@pytest.mark.skipif(
    importlib.util.find_spec("digit_recognizer") is None, reason="digit-recognizer-py missing"
)
def test_victims_details_tell_spec_and_classes_or_the_params_they_need(capsys) -> None:
    records = {r["name"]: r for r in _json(capsys, "victims")["victims"]}
    assert sorted(records) == victim_names()
    digits = records["digit-recognizer"]
    assert digits["kind"] == "classifier" and digits["output_dim"] == 10
    spec = digits["spec"]
    assert (spec["channels"], spec["height"], spec["width"]) == (1, 28, 28)
    assert records["efficientnet-lite0"]["output_dim"] == 1280  # known without loading
    assert records["trained"]["needs_params"] == ["dataset", "arch"]
    assert "spec" in records["onnx"]["needs_params"]
    for r in records.values():
        assert "kind" in r or "needs_params" in r or "problem" in r, r["name"]
    out = _text(capsys, "victims", "--details")
    line = _entry(out, "digit-recognizer").splitlines()[0]
    assert "classifier" in line and "1x28x28" in line and "10 classes" in line
    assert re.search(r"^  trained +needs params: dataset, arch \(takes ", out, re.M)


def test_defenses_and_models_details(capsys) -> None:
    records = {r["name"]: r for r in _json(capsys, "defenses")["defenses"]}
    assert records["topk"]["answers"] == "topk" and "probabilities" in records["topk"]["wraps"]
    assert records["topk"]["presets"] == {"top1": {"k": 1}, "top2": {"k": 2}}
    assert records["embedding_noise"]["wraps"] == ["embedding"]
    models = _json(capsys, "models")["models"]
    assert all(m["parameters_1x28x28_10_classes"] > 0 for m in models)


def test_the_overview_stays_and_a_kind_alone_lists_only_itself(capsys) -> None:
    out = _text(capsys)
    for head in ("victims:", "attacks (", "defences:", "models:", "data sets:"):
        assert head in out
    assert "  fashion-mnist          splits: train, test" in out
    only = _text(capsys, "defenses")
    assert only.startswith("defences: ") and "data sets" not in only


def test_config_schema_is_json_of_every_config_key(capsys) -> None:
    assert main(["config-schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"victim", "grid", "pool", "attacks", "eval"} <= set(schema["properties"])
    assert main(["config-schema", "--serve"]) == 0
    serve = json.loads(capsys.readouterr().out)
    assert {"victim", "db", "defenses"} <= set(serve["properties"])


def test_run_help_says_where_the_config_keys_are(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["run", "--help"])
    assert e.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # undo the help's line wrapping
    assert "stealkit config-schema" in out and "configs/" in out and "README.md" in out
