"""The YAML experiment schema, validated at the edge (library classes never see it)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from stealkit.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class VictimConfig(_Strict):
    name: str = "digit-recognizer"
    params: dict[str, Any] = Field(default_factory=dict)
    output: Literal["label", "topk", "probabilities", "logits", "embedding"] = "probabilities"
    k: int = Field(default=1, ge=1)


class DataConfig(_Strict):
    """Images of a registered data set: ``split``, then the contiguous slice ``[start:stop]``,
    then a random subset of at most ``limit`` of them, drawn with ``seed``."""

    dataset: str
    split: str = "train"
    start: int = Field(default=0, ge=0)
    stop: int | None = Field(default=None, ge=1)
    limit: int | None = Field(default=None, ge=1)
    seed: int = 0
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _slice(self) -> DataConfig:
        if self.stop is not None and self.stop <= self.start:
            raise ValueError(f"stop ({self.stop}) must be above start ({self.start})")
        return self


class ProbeConfig(DataConfig):
    """The downstream task of encoder experiments: a linear head is trained on frozen features of
    these labelled images and tested on ``eval`` (same protocol for victim and stolen encoders)."""

    epochs: int = Field(default=30, ge=1)


class SurrogateConfig(_Strict):
    arch: str = "cnn3"


class NamedThing(_Strict):
    type: str
    params: dict[str, Any] = Field(default_factory=dict)


class GridConfig(_Strict):
    attacks: list[str] = Field(min_length=1)
    defenses: list[str] = Field(default_factory=lambda: ["none"], min_length=1)
    budgets: list[int] = Field(min_length=1)
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)

    @field_validator("budgets")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        bad = [b for b in v if b < 1]
        if bad:
            raise ValueError(f"budgets must be positive query counts, got {bad}")
        return v


class BaselineConfig(DataConfig):
    """An independent model for the transfer-attack comparison: trained on its own labelled data,
    never on the victim's answers."""

    dataset: str = "mnist-5k"
    arch: str = "cnn3"
    epochs: int = Field(default=10, ge=1)


TransferMethod = Literal["fgsm", "bim", "pgd"]


def _all_methods() -> list[TransferMethod]:
    return ["fgsm", "bim", "pgd"]


class TransferConfig(_Strict):
    """Transfer adversarial attacks crafted on each stolen model (and on the baseline), scored on
    the victim over images it classifies correctly: the first ``limit`` of ``data`` (default: the
    evaluation set), at each L-inf radius of ``eps``."""

    methods: list[TransferMethod] = Field(default_factory=_all_methods, min_length=1)
    eps: list[Annotated[float, Field(gt=0, le=1)]] = Field(default_factory=lambda: [0.2])
    steps: int = Field(default=20, ge=1)
    step_size: float | None = Field(default=None, gt=0)  # None: 2.5 * eps / steps
    targeted: list[bool] = Field(default_factory=lambda: [False, True], min_length=1)
    limit: int = Field(default=500, ge=1)
    seed: int = 0  # the targets of targeted attacks and PGD's starts: the same for every source
    data: DataConfig | None = None
    baseline: BaselineConfig | None = Field(default_factory=BaselineConfig)

    @field_validator("eps", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        return [v] if isinstance(v, int | float) else v


class RayExecutorConfig(_Strict):
    """Each run as a Ray task; a local Ray instance when ``address`` is None."""

    kind: Literal["ray"]
    address: str | None = None
    cpus_per_run: float = Field(default=1, gt=0)
    gpus_per_run: float = Field(default=0, ge=0)


class LocalExecutorConfig(_Strict):
    """The runs one after another in this process (the default)."""

    kind: Literal["local"] = "local"


def _executor(v: Any) -> Any:
    return {"kind": v} if isinstance(v, str) else v


class ExperimentConfig(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    victim: VictimConfig = Field(default_factory=VictimConfig)
    pool: DataConfig | None = None  # the thief's images; data-free attacks need none
    eval: DataConfig
    probe: ProbeConfig | None = None  # encoder victims (output: embedding) need one
    curve_every: int | None = Field(default=None, ge=1)
    transfer: TransferConfig | None = None
    surrogate: SurrogateConfig = Field(default_factory=SurrogateConfig)
    price_per_1k: float = Field(default=1.0, ge=0)
    # each stolen model as <out>/models/<attack>__<defence>__<budget>__<seed>.safetensors, for
    # `stealkit verify` and the owner's checks (not part of the results' hash)
    save_models: bool = True
    device: str = "auto"
    data_dir: str | None = None
    attacks: dict[str, NamedThing] = Field(default_factory=dict)
    defenses: dict[str, NamedThing] = Field(default_factory=dict)
    grid: list[GridConfig] = Field(min_length=1)
    executor: LocalExecutorConfig | RayExecutorConfig = Field(
        default_factory=LocalExecutorConfig, discriminator="kind"
    )

    @field_validator("executor", mode="before")
    @classmethod
    def _executor_name(cls, v: Any) -> Any:
        return _executor(v)

    @model_validator(mode="after")
    def _names_resolve(self) -> ExperimentConfig:
        from stealkit.attacks import PRESETS as ATTACK_PRESETS
        from stealkit.attacks import attack_names
        from stealkit.data import dataset_names
        from stealkit.defenses import PRESETS as DEFENSE_PRESETS
        from stealkit.defenses import defense_names
        from stealkit.models import model_names
        from stealkit.victims.registry import victim_names

        if self.victim.name not in victim_names():
            raise ValueError(f"victim.name {self.victim.name!r} is not one of {victim_names()}")
        for key, thing in self.attacks.items():
            if thing.type not in attack_names():
                raise ValueError(
                    f"attacks.{key}.type {thing.type!r} is not one of {attack_names()}"
                )
        for key, thing in self.defenses.items():
            if thing.type not in defense_names():
                raise ValueError(
                    f"defenses.{key}.type {thing.type!r} is not one of {defense_names()}"
                )
        known_a = sorted(set(ATTACK_PRESETS) | set(self.attacks))
        known_d = sorted(set(DEFENSE_PRESETS) | set(self.defenses))
        for i, g in enumerate(self.grid):
            for a in g.attacks:
                if a not in known_a:
                    raise ValueError(
                        f"grid.{i}.attacks: {a!r} is neither a preset nor defined under 'attacks:' ({known_a})"
                    )
            for d in g.defenses:
                if d not in known_d:
                    raise ValueError(
                        f"grid.{i}.defenses: {d!r} is neither a preset nor defined under 'defenses:' ({known_d})"
                    )
        for key, part in self.data_parts():
            if part.dataset not in dataset_names():
                raise ValueError(
                    f"{key}.dataset {part.dataset!r} is not registered; known: {dataset_names()}"
                )
        if self.transfer is not None and self.transfer.baseline is not None:
            if self.transfer.baseline.arch not in model_names():
                raise ValueError(
                    f"transfer.baseline.arch {self.transfer.baseline.arch!r} is not one of {model_names()}"
                )
        if self.surrogate.arch not in model_names():
            raise ValueError(
                f"surrogate.arch {self.surrogate.arch!r} is not one of {model_names()}"
            )
        return self

    def data_parts(self) -> list[tuple[str, DataConfig]]:
        """Every data set the config names, with its key."""
        parts: list[tuple[str, DataConfig]] = [("eval", self.eval)]
        if self.pool is not None:
            parts.append(("pool", self.pool))
        if self.probe is not None:
            parts.append(("probe", self.probe))
        if self.transfer is not None and self.transfer.data is not None:
            parts.append(("transfer.data", self.transfer.data))
        if self.transfer is not None and self.transfer.baseline is not None:
            parts.append(("transfer.baseline", self.transfer.baseline))
        return parts

    def attack_spec(self, name: str) -> tuple[str, dict[str, Any]]:
        from stealkit.attacks import PRESETS

        if name in self.attacks:
            return self.attacks[name].type, dict(self.attacks[name].params)
        t, p = PRESETS[name]
        return t, dict(p)

    def defense_spec(self, name: str) -> tuple[str, dict[str, Any]]:
        from stealkit.defenses import PRESETS

        if name in self.defenses:
            return self.defenses[name].type, dict(self.defenses[name].params)
        t, p = PRESETS[name]
        return t, dict(p)


def _format(e: ValidationError, source: str) -> str:
    lines = [f"invalid config {source}:"]
    for err in e.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(top level)"
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (check its spelling; see `stealkit run --help` and configs/)"
        lines.append(f"  - {loc}: {msg}")
    return "\n".join(lines)


def parse_config(
    data: Any,
    source: str = "<dict>",
    *,
    check: bool = True,
    overrides: dict[str, Any] | None = None,
) -> ExperimentConfig:
    """Validate a config mapping: its schema, then (``check``) every rule that follows from the
    registered attacks, defences, victims and data sets (``stealkit.experiments.checks``), so a
    mistake is named before any query is bought. ``overrides`` replace top-level keys first."""
    if not isinstance(data, dict):
        raise ConfigError(
            f"invalid config {source}: the top level must be a mapping, got {type(data).__name__}"
        )
    data = {**data, **(overrides or {})}
    try:
        cfg = ExperimentConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(_format(e, source)) from None
    if check:
        from stealkit.experiments.checks import check_config

        problems = check_config(cfg)
        if problems:
            raise ConfigError(
                "\n".join([f"invalid config {source}:"] + [f"  - {p}" for p in problems])
            )
    return cfg


def load_config(
    path: str | Path | None = None,
    *,
    check: bool = True,
    overrides: dict[str, Any] | None = None,
) -> ExperimentConfig:
    """Read a YAML config; ``None`` gives the built-in default experiment. See ``parse_config``."""
    if path is None:
        text = (Path(__file__).parent / "default.yaml").read_text()
        return parse_config(
            yaml.safe_load(text), "<built-in default>", check=check, overrides=overrides
        )
    p = Path(path)
    if p.is_dir():
        raise ConfigError(
            f"{p} is a directory; give a YAML config file (e.g. configs/tiny.yaml), or no "
            "argument for the built-in default"
        )
    if not p.is_file():
        raise ConfigError(
            f"config file {p} does not exist; give a YAML file or no argument for the default"
        )
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{p} is not valid YAML: {e}") from None
    return parse_config(data, str(p), check=check, overrides=overrides)
