"""The YAML experiment schema: valid configs parse, every mistake is a ConfigError naming it."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from stealkit.errors import ConfigError
from stealkit.experiments import config as config_module
from stealkit.experiments.config import ExperimentConfig, load_config, parse_config

MINIMAL: dict[str, Any] = {
    "name": "tiny",
    "pool": {"dataset": "digits"},
    "eval": {"dataset": "digits", "split": "test"},
    "grid": [{"attacks": ["copycat"], "budgets": [100]}],
}
DEFAULT_YAML = Path(config_module.__file__).parent / "default.yaml"


def minimal() -> dict[str, Any]:
    return copy.deepcopy(MINIMAL)


def test_minimal_dict_parses_with_defaults() -> None:
    cfg = parse_config(minimal())
    assert isinstance(cfg, ExperimentConfig)
    assert cfg.victim.output == "probabilities"
    assert cfg.grid[0].defenses == ["none"] and cfg.grid[0].seeds == [0]
    assert cfg.grid[0].budgets == [100]
    assert cfg.attack_spec("copycat") == ("copycat", {})
    assert cfg.defense_spec("top1") == ("topk", {"k": 1})


def test_named_attacks_and_defences_resolve() -> None:
    data = minimal()
    data["attacks"] = {"kn": {"type": "knockoff", "params": {"strategy": "random"}}}
    data["defenses"] = {"r3": {"type": "rounding", "params": {"decimals": 3}}}
    data["grid"] = [{"attacks": ["kn", "copycat"], "defenses": ["r3", "none"], "budgets": [5]}]
    cfg = parse_config(data)
    assert cfg.attack_spec("kn") == ("knockoff", {"strategy": "random"})
    assert cfg.defense_spec("r3") == ("rounding", {"decimals": 3})


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(d: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node: Any = d
        for p in parents:
            node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
        node[last] = value

    return edit


BAD_CASES = [
    ("unknown top-level key", _set("budgte", 100), ["budgte", "unknown key"]),
    ("unknown nested key", _set("victim.outptu", "label"), ["victim.outptu", "unknown key"]),
    ("unknown grid key", _set("grid.0.attack", ["copycat"]), ["grid.0.attack", "unknown key"]),
    ("negative budget", _set("grid.0.budgets", [100, -5]), ["grid.0.budgets", "-5"]),
    ("zero budget", _set("grid.0.budgets", [0]), ["grid.0.budgets", "[0]"]),
    ("unknown attack in grid", _set("grid.0.attacks", ["knockof"]), ["grid.0.attacks", "knockof"]),
    (
        "unknown defence in grid",
        _set("grid.0.defenses", ["top9"]),
        ["grid.0.defenses", "top9"],
    ),
    ("unknown attack type", _set("attacks", {"x": {"type": "pgd"}}), ["attacks.x.type", "pgd"]),
    (
        "unknown defence type",
        _set("defenses", {"y": {"type": "blur"}}),
        ["defenses.y.type", "blur"],
    ),
    ("unknown pool dataset", _set("pool.dataset", "imagenet-xyz"), ["imagenet-xyz"]),
    ("unknown eval dataset", _set("eval.dataset", "svhn-xyz"), ["svhn-xyz"]),
    ("unknown arch", _set("surrogate.arch", "vgg99"), ["surrogate.arch", "vgg99"]),
    ("bad output kind", _set("victim.output", "embedding"), ["victim.output"]),
    ("negative price", _set("price_per_1k", -1.0), ["price_per_1k"]),
    ("bad name", _set("name", "has spaces"), ["name"]),
    ("empty grid", _set("grid", []), ["grid"]),
    ("zero limit", _set("pool.limit", 0), ["pool.limit"]),
    ("unknown victim", _set("victim.name", "no-such-victim"), ["victim.name", "no-such-victim"]),
    ("pool-based attack without a pool", _set("pool", None), ["copycat", "pool:"]),
    ("zero curve_every", _set("curve_every", 0), ["curve_every"]),
    ("unknown transfer method", _set("transfer", {"methods": ["cw"]}), ["transfer.methods"]),
    ("eps above 1", _set("transfer", {"eps": 2.0}), ["transfer.eps"]),
    (
        "unknown baseline arch",
        _set("transfer", {"baseline": {"arch": "vgg99"}}),
        ["transfer.baseline.arch", "vgg99"],
    ),
]


def test_data_free_grids_need_no_pool() -> None:
    data = minimal()
    del data["pool"]
    data["grid"] = [{"attacks": ["mega", "dast-l", "dfme"], "budgets": [1000]}]
    data["transfer"] = {"eps": 0.1}
    cfg = parse_config(data)
    assert cfg.pool is None and cfg.transfer is not None
    assert cfg.transfer.methods == ["fgsm", "bim", "pgd"] and cfg.transfer.targeted == [False, True]
    assert cfg.attack_spec("dast-l") == ("dast", {"variant": "label"})


@pytest.mark.parametrize(("case", "edit", "says"), BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_mistakes_raise_config_error_naming_them(case: str, edit, says: list[str]) -> None:
    data = minimal()
    edit(data)
    with pytest.raises(ConfigError) as info:
        parse_config(data, "exp.yaml")
    msg = str(info.value)
    assert "exp.yaml" in msg
    for part in says:
        assert part in msg, f"{case}: {part!r} not in {msg!r}"


@pytest.mark.parametrize("output", ["label", "topk"])
def test_defences_need_a_victim_that_answers_scores(output: str) -> None:
    data = minimal()
    data["victim"] = {"output": output}
    data["grid"][0]["defenses"] = ["none", "top1"]
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    msg = str(info.value)
    assert "victim.output" in msg and repr(output) in msg and "grid.0" in msg
    data["grid"][0]["defenses"] = ["none"]
    assert parse_config(data).victim.output == output  # no defence: fine


def test_logit_victims_may_be_defended() -> None:
    data = minimal()
    data["victim"] = {"output": "logits"}
    data["grid"][0]["defenses"] = ["noise"]
    assert parse_config(data).grid[0].defenses == ["noise"]


@pytest.mark.parametrize("top", [[1, 2], "name: x", None])
def test_top_level_must_be_a_mapping(top: Any) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        parse_config(top)


@pytest.mark.skipif(not DEFAULT_YAML.exists(), reason="experiments/default.yaml not written yet")
def test_load_config_none_is_the_builtin_default() -> None:
    cfg = load_config(None)
    assert isinstance(cfg, ExperimentConfig)
    assert cfg == parse_config(yaml.safe_load(DEFAULT_YAML.read_text()))


def test_load_config_reads_a_yaml_file(tmp_path: Path) -> None:
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(minimal()))
    assert load_config(path) == parse_config(minimal())
    assert load_config(str(path)).name == "tiny"


def test_load_config_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(missing)
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n  grid: {")
    with pytest.raises(ConfigError, match="not valid YAML") as info:
        load_config(broken)
    assert "broken.yaml" in str(info.value)
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**minimal(), "budgte": 1}))
    with pytest.raises(ConfigError, match="budgte") as info:
        load_config(bad)
    assert "bad.yaml" in str(info.value)
