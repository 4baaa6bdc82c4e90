"""``stealkit serve``'s settings, validated at the edge (YAML or flags), and what they build."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from stealkit.errors import ConfigError
from stealkit.experiments.config import NamedThing, VictimConfig

DEFAULT_DB = "sqlite:///stealkit-ledger.sqlite"


def default_db() -> str:
    """``$STEALKIT_DB`` or an SQLite file in the current folder."""
    return os.environ.get("STEALKIT_DB", DEFAULT_DB)


class ServeConfig(BaseModel):
    """One served API: a victim, the defences in front of it, the ledger and the limits."""

    model_config = ConfigDict(extra="forbid")
    victim: VictimConfig = Field(default_factory=VictimConfig)
    defenses: list[str | NamedThing] = Field(
        default_factory=list, description="presets (reverse-sigmoid) or {type, params}, in order"
    )
    db: str = Field(default_factory=default_db)
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    workers: int = Field(default=1, ge=1, le=64)
    max_batch: int = Field(default=256, ge=1)
    max_body_mb: float = Field(default=16.0, gt=0)
    device: str = "cpu"
    data_dir: str | None = None


def load_serve_config(path: str | Path) -> ServeConfig:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"serve config {p} does not exist; give a YAML file, or use the flags")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"serve config {p} is not valid YAML: {e}") from None
    return parse_serve_config(data or {}, str(p))


def parse_serve_config(data: Any, source: str = "<flags>") -> ServeConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"serve config {source}: the top level must be a mapping")
    try:
        return ServeConfig.model_validate(data)
    except ValidationError as e:
        lines = [f"invalid serve config {source}:"]
        for err in e.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"]
            lines.append(f"  - {loc}: {msg}")
        raise ConfigError("\n".join(lines)) from None


def build_defenses(cfg: ServeConfig) -> list[Any]:
    from stealkit.defenses import PRESETS
    from stealkit.experiments.checks import build_checked

    out = []
    for i, d in enumerate(cfg.defenses):
        if isinstance(d, str):
            if d not in PRESETS:
                raise ConfigError(
                    f"defenses.{i}: {d!r} is not a preset ({', '.join(PRESETS)}); or give "
                    "{type: ..., params: {...}}"
                )
            type_, params = PRESETS[d]
        else:
            type_, params = d.type, dict(d.params)
        if type_ == "none":
            continue
        try:
            out.append(build_checked("defense", f"defenses.{i}", type_, params))
        except ValueError as e:
            raise ConfigError(str(e)) from None
    return out


def build(cfg: ServeConfig) -> tuple[Any, Any]:
    """The Service and SqlLedger that ``cfg`` describes; ConfigError before anything is served."""
    from stealkit.experiments.checks import victim_params
    from stealkit.serve.ledger import SqlLedger
    from stealkit.serve.service import Limits, Service
    from stealkit.victims.registry import load_victim

    params = victim_params(cfg.victim, cfg.data_dir)
    if cfg.victim.name == "http":
        raise ConfigError("victim.name: 'http' is a served victim already; serve a local one")
    defenses = build_defenses(cfg)
    victim = load_victim(cfg.victim.name, **params)
    limits = Limits(max_batch=cfg.max_batch, max_body_bytes=int(cfg.max_body_mb * 2**20))
    service = Service(
        victim,
        output=cfg.victim.output,
        k=cfg.victim.k,
        defenses=defenses,
        limits=limits,
        device=cfg.device,
    )
    return service, SqlLedger(cfg.db)
