"""The config checks that follow from what is registered, run before any query is bought.

Nothing here knows an attack or a family by name: each rule reads a declaration. An attack says
what it steals, whether it needs a pool and which answers it accepts (``Attack``); a defence says
which answers it takes and gives (``Defense``); a victim says its kind, spec and output size
(``describe_victim``); a family says which answers its victims give and what its judge needs
(``Family``). ``check_config`` returns every problem found, each naming the key and the fix.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from stealkit.attacks import Attack, attack_factory, build_attack
from stealkit.data import dataset_info, load_dataset
from stealkit.data.dataset import ImageDataset
from stealkit.defenses import Defense, build_defense, defense_factory
from stealkit.errors import StealkitError
from stealkit.experiments.config import DataConfig, ExperimentConfig, VictimConfig
from stealkit.experiments.judges import Family, get_family
from stealkit.oracle import OutputKind
from stealkit.victims.registry import VictimInfo, describe_victim


def victim_params(victim: VictimConfig, data_dir: str | None) -> dict[str, Any]:
    """The victim's parameters, with the config's ``data_dir`` for victims trained here (an
    experiment's or a served API's)."""
    params = dict(victim.params)
    if data_dir is not None and victim.name in ("trained", "ssl", "supervised-encoder"):
        params.setdefault("data_dir", data_dir)
    return params


def load_part(part: DataConfig, data_dir: str | None) -> ImageDataset:
    """The images a config section names: split, then ``[start:stop]``, then ``limit``."""
    ds = load_dataset(part.dataset, part.split, data_dir=data_dir, **part.params)
    if part.start or part.stop is not None:
        ds = ds.subset(torch.arange(len(ds))[part.start : part.stop])
    return ds.limit(part.limit, part.seed)


def _takes(factory: Any) -> str:
    try:
        ps = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return "see its docstring"
    return ", ".join(p.name for p in ps if p.kind is p.KEYWORD_ONLY) or "no parameters"


def build_checked(kind: str, key: str, type_: str, params: dict[str, Any]) -> Any:
    """``build_attack``/``build_defense``; a bad parameter raises ValueError naming ``key``."""
    factory: Any = attack_factory(type_) if kind == "attack" else defense_factory(type_)
    try:
        inspect.signature(factory).bind(**params)
    except TypeError as e:
        raise ValueError(f"{key}: {e} ({type_} takes: {_takes(factory)})") from None
    except ValueError:  # no signature to check; let the call decide
        pass
    try:
        return build_attack(type_, **params) if kind == "attack" else build_defense(type_, **params)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{key}: {e}") from None


def _device(cfg: ExperimentConfig) -> list[str]:
    name = cfg.device
    if name == "auto":
        return []
    try:
        dev = torch.device(name)
    except (RuntimeError, ValueError) as e:
        return [f"device: {name!r} is not a device ({e}); use auto, cpu or cuda"]
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            return [
                f"device: {name!r}, but this torch ({torch.__version__}) sees no CUDA GPU; use "
                "device: auto (CUDA when present, else the CPU) or cpu"
            ]
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            return [f"device: {name!r}, but there are {torch.cuda.device_count()} CUDA devices"]
    elif dev.type not in ("cpu", "mps"):
        return [f"device: {name!r} is not supported; use auto, cpu or cuda"]
    return []


def _data(cfg: ExperimentConfig) -> tuple[list[str], int | None]:
    """Problems with the data sets' splits and availability, and the pool's size."""
    problems, pool_size = [], None
    for key, part in cfg.data_parts():
        splits, _ = dataset_info(part.dataset)
        if part.split not in splits:
            problems.append(
                f"{key}.split: {part.split!r} is not a split of {part.dataset!r} "
                f"(its splits: {', '.join(splits)})"
            )
            continue
        try:
            ds = load_part(part, cfg.data_dir)
        except StealkitError as e:
            problems.append(f"{key}: {e}")
            continue
        except (TypeError, ValueError) as e:
            problems.append(f"{key}.params: {e}")
            continue
        if len(ds) == 0:
            problems.append(f"{key}: start {part.start} / stop {part.stop} select no images")
        if key == "pool":
            pool_size = len(ds)
        if key in ("probe", "transfer.baseline") and ds.y is None:
            problems.append(f"{key}.dataset: {part.dataset!r} has no labels to train on")
    return problems, pool_size


def _victim(cfg: ExperimentConfig) -> tuple[list[str], VictimInfo | None, Family | None]:
    try:
        info = describe_victim(cfg.victim.name, **victim_params(cfg.victim, cfg.data_dir))
    except StealkitError as e:
        return [f"victim.params: {e}"], None, None
    family = get_family(info.kind)
    out = OutputKind(cfg.victim.output)
    problems = []
    if out not in family.outputs:
        gives = ", ".join(sorted(k.value for k in family.outputs))
        problems.append(
            f"victim.output: {out.value!r}, but {cfg.victim.name!r} is a {info.kind}, which "
            f"answers {gives}"
        )
    elif info.outputs is not None and out not in info.outputs:
        gives = ", ".join(sorted(k.value for k in info.outputs))
        problems.append(
            f"victim.output: {out.value!r}, but {cfg.victim.name!r} can only answer {gives}"
        )
    if out is OutputKind.TOPK and info.output_dim is not None and cfg.victim.k > info.output_dim:
        problems.append(
            f"victim.k: {cfg.victim.k} for top-k answers, but the victim has only "
            f"{info.output_dim} classes; give k <= {info.output_dim}"
        )
    if family.needs_probe and cfg.probe is None:
        problems.append(
            f"probe: a {family.name} victim is judged by linear probes; add 'probe: {{dataset: "
            "..., split: train}' with the downstream training images"
        )
    if not family.transfer and (cfg.transfer is not None or cfg.curve_every is not None):
        problems.append(
            f"transfer / curve_every: they judge stolen classifiers; remove them for a "
            f"{family.name} victim"
        )
    return problems, info, family


def _run_problems(cfg: ExperimentConfig, family: Family | None, pool_size: int | None) -> list[str]:
    problems: list[str] = []
    attacks: dict[str, Attack | None] = {}
    defenses: dict[str, Defense | None] = {}
    out = OutputKind(cfg.victim.output)
    for i, g in enumerate(cfg.grid):
        for a in g.attacks:
            if a not in attacks:
                t, p = cfg.attack_spec(a)
                key = f"attacks.{a}.params" if a in cfg.attacks else f"grid.{i}.attacks ({a})"
                try:
                    attacks[a] = build_checked("attack", key, t, p)
                except ValueError as e:
                    problems.append(str(e))
                    attacks[a] = None
        for d in g.defenses:
            if d not in defenses:
                t, p = cfg.defense_spec(d)
                key = f"defenses.{d}.params" if d in cfg.defenses else f"grid.{i}.defenses ({d})"
                try:
                    defenses[d] = None if t == "none" else build_checked("defense", key, t, p)
                except ValueError as e:
                    problems.append(str(e))
                    defenses[d] = None
                defense = defenses[d]
                if defense is not None and not defense.accepts(out):
                    takes = ", ".join(k.value for k in OutputKind if defense.accepts(k))
                    problems.append(
                        f"grid.{i}.defenses: {d} ({defense!r}) perturbs {takes} answers, but "
                        f"victim.output is {out.value!r}; set victim.output to one of them or "
                        "use defenses: [none]"
                    )
        for a in g.attacks:
            attack = attacks[a]
            if attack is None:
                continue
            if family is not None and attack.steals != family.name:
                problems.append(
                    f"grid.{i}.attacks: {a} steals {attack.steals}s, but the victim is a "
                    f"{family.name} (victim.output {out.value!r}); pick attacks that steal "
                    f"{family.name}s (`stealkit list`)"
                )
                continue
            if attack.needs_pool and cfg.pool is None:
                problems.append(
                    f"pool: {a} queries the thief's own images; add a 'pool:' section (e.g. "
                    "pool: {dataset: fashion-mnist}) or use only data-free attacks"
                )
            if attack.needs_pool and attack.buys_pool_images and pool_size is not None:
                over = [b for b in g.budgets if b > pool_size]
                if over:
                    problems.append(
                        f"grid.{i}.budgets: {over} exceed the {pool_size} images of the pool "
                        f"({cfg.pool.dataset if cfg.pool else '?'}); {a} buys each pool image "
                        "once: lower the budget or use a larger pool"
                    )
            for d in g.defenses:
                defense = defenses.get(d)
                seen = defense.output_kind(out) if defense is not None else out
                if seen not in attack.accepts:
                    via = f" through {d}" if defense is not None else ""
                    takes = ", ".join(sorted(k.value for k in attack.accepts))
                    problems.append(
                        f"grid.{i}: {a} learns from {takes} answers, but the victim answers "
                        f"{seen.value}{via} (victim.output {out.value!r}); pick an attack that "
                        "takes these answers or change victim.output"
                    )
    return problems


def check_config(cfg: ExperimentConfig) -> list[str]:
    """Every problem of ``cfg`` that its schema cannot see, each naming the key and the fix."""
    problems = _device(cfg)
    data_problems, pool_size = _data(cfg)
    problems += data_problems
    victim_problems, _, family = _victim(cfg)
    problems += victim_problems
    problems += _run_problems(cfg, family, pool_size)
    return list(dict.fromkeys(problems))


def evaluation_warnings(cfg: ExperimentConfig) -> list[str]:
    """What makes a run's numbers weak without making it wrong, said before anything is bought:
    an evaluation set too small for agreement to mean much (its resolution is 1/n), and
    evaluation images the thief also queries (the same images, or crops of the same source
    photos), on which agreement measures memory rather than fidelity."""
    try:
        ev = load_part(cfg.eval, cfg.data_dir)
        pool = load_part(cfg.pool, cfg.data_dir) if cfg.pool is not None else None
    except (StealkitError, TypeError, ValueError):
        return []  # check_config names these
    out = []
    n = len(ev)
    if 0 < n < 100:
        out.append(
            f"eval: {n} images, so agreement and accuracy move in steps of {1 / n:.3f}; use at "
            "least 100 (steps of 0.01) for differences between runs to mean something"
        )
    if ev.y is None:
        out.append(
            f"eval: {ev.name} has no labels, so runs report agreement with the victim but no "
            "accuracy"
        )
    if pool is None:
        return out
    if pool.x.shape[1:] == ev.x.shape[1:]:
        seen = {bytes(row.numpy().tobytes()) for row in pool.x.reshape(len(pool), -1)}
        shared = sum(bytes(row.numpy().tobytes()) in seen for row in ev.x.reshape(n, -1))
        if shared:
            out.append(
                f"eval: {shared} of its {n} images are also in the pool the thief queries; "
                "agreement on them measures what the thief bought, not what it learned. Take "
                "eval from another split or slice (start/stop)"
            )
    source = ev.meta.get("source")
    if source and source == pool.meta.get("source"):
        out.append(
            f"eval and pool are both cut from {source}: the thief queries crops of the very "
            "images it is judged on; judge on another data set"
        )
    return out
