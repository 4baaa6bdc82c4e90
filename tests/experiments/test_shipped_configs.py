"""Every config the project ships parses, and names only registered things."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pytest
import yaml

from stealkit.errors import ConfigError
from stealkit.experiments.config import load_config
from stealkit.experiments.runner import expand_grid
from victim_files import digit_recognizer_onnx

CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs").glob("*.yaml"))
SERVE_CONFIGS = sorted((Path(__file__).resolve().parents[2] / "configs" / "serve").glob("*.yaml"))


@contextmanager
def _served(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The shipped serve config's victim, served for real, with the keys a user would export."""
    from stealkit.serve.app import asgi
    from stealkit.serve.config import build, load_serve_config
    from stealkit.serve.live import serving

    cfg = load_serve_config(SERVE_CONFIGS[0]).model_copy(
        update={"db": f"sqlite:///{tmp_path / 'ledger.sqlite'}"}
    )
    service, ledger = build(cfg)
    monkeypatch.setenv("STEALKIT_API_KEY", ledger.create_key(budget=5000)[0])
    monkeypatch.setenv("STEALKIT_JUDGE_KEY", ledger.create_key(trusted=True)[0])
    with serving(asgi(service, ledger)) as url:
        yield url


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_shipped_config_is_valid(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    overrides = None
    raw = yaml.safe_load(path.read_text())
    if raw["victim"]["name"] == "onnx":  # a template: it names the user's file
        with pytest.raises(ConfigError, match="my_model.onnx does not exist"):
            load_config(path)
        params = {**raw["victim"]["params"], "path": str(digit_recognizer_onnx(tmp_path))}
        overrides = {"victim": {**raw["victim"], "params": params}}
    if raw["victim"]["name"] == "http":  # it names a server: serve one where it says
        with ExitStack() as stack:
            url = stack.enter_context(_served(tmp_path, monkeypatch))
            params = {**raw["victim"]["params"], "url": url, "cache": None}
            cfg = load_config(path, overrides={"victim": {**raw["victim"], "params": params}})
        assert cfg.name == path.stem and expand_grid(cfg)
        return
    cfg = load_config(path, overrides=overrides)
    assert cfg.name == path.stem
    assert expand_grid(cfg)


def test_default_grid_covers_what_the_readme_promises() -> None:
    runs = expand_grid(load_config(None))
    assert {r.attack for r in runs} == {"knockoff-random", "knockoff-adaptive", "copycat"}
    assert {r.budget for r in runs} == {1000, 5000, 20000}
    assert {r.defense for r in runs} == {"none", "reverse-sigmoid"}
    one_k = {
        r.seed for r in runs if (r.attack, r.defense, r.budget) == ("knockoff-random", "none", 1000)
    }
    assert one_k == {0, 1, 2}  # the README quotes the 1k figure as a mean over three seeds
    assert any(
        r.attack == "knockoff-random" and r.defense == "none" and r.budget == 20000 for r in runs
    )


@pytest.mark.parametrize("path", SERVE_CONFIGS, ids=[p.stem for p in SERVE_CONFIGS])
def test_shipped_serve_config_builds(path: Path, tmp_path: Path) -> None:
    from stealkit.serve.config import build, load_serve_config

    cfg = load_serve_config(path)
    assert cfg.host == "127.0.0.1"  # loopback unless the user says otherwise
    service, ledger = build(cfg.model_copy(update={"db": f"sqlite:///{tmp_path / 'l.sqlite'}"}))
    assert service.defenses and service.output.value == cfg.victim.output
    ledger.close()
