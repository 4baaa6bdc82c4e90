"""Attacks, one file each, built by type name from plain keyword arguments.

build_attack("knockoff", strategy="adaptive", reward="all", recipe={"epochs": 20})
build_attack("encoder", loss="cosine", recipe={"epochs": 20})   # encoder victims (embeddings)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stealkit.attacks.base import AttackResult, TrainRecipe
from stealkit.attacks.contsteal import ContSteal
from stealkit.attacks.copycat import CopyCat
from stealkit.attacks.dast import DaST
from stealkit.attacks.dfme import DFME
from stealkit.attacks.encoder import EncoderStealing
from stealkit.attacks.encoder_common import EmbeddingCache
from stealkit.attacks.knockoff import KnockoffNets
from stealkit.attacks.mega import MEGA
from stealkit.attacks.stolenencoder import StolenEncoder

_ATTACKS: dict[str, Callable[..., Any]] = {}

# Named presets usable directly in a config's grid: name -> (type, params).
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "knockoff-random": ("knockoff", {"strategy": "random", "online_steps": 0}),
    "knockoff-adaptive": ("knockoff", {"strategy": "adaptive", "reward": "all"}),
    "copycat": ("copycat", {}),
    # encoder victims (the oracle answers embeddings)
    "encoder-mse": ("encoder", {"loss": "mse"}),
    "encoder-cosine": ("encoder", {"loss": "cosine"}),
    "encoder-infonce": ("encoder", {"loss": "infonce"}),
    "encoder-soft-nn": ("encoder", {"loss": "soft-nn"}),
    "encoder-wasserstein": ("encoder", {"loss": "wasserstein"}),
    "contsteal": ("contsteal", {}),
    "stolenencoder": ("stolenencoder", {}),
    # data-free (no pool): the generator makes every query
    "mega": ("mega", {"variant": "label"}),
    "mega-p": ("mega", {"variant": "probability"}),
    "dast-l": ("dast", {"variant": "label"}),
    "dast-p": ("dast", {"variant": "probability"}),
    "dfme": ("dfme", {}),
}

# Attack types that take no pool: ``run(oracle, *, surrogate, budget, seed, device, monitor)``.
DATA_FREE: set[str] = set()
# Attack types that steal encoders (the oracle answers embeddings).
ENCODER: set[str] = set()


def is_data_free(type_: str) -> bool:
    """Whether attacks of this type make their own queries (no pool)."""
    return type_ in DATA_FREE


def steals_encoders(type_: str) -> bool:
    """Whether attacks of this type steal an encoder (need an embedding oracle)."""
    return type_ in ENCODER


def register_attack(
    name: str, factory: Callable[..., Any], *, data_free: bool = False, encoder: bool = False
) -> None:
    """Register an attack type; ``factory(**params)`` returns an object with ``run``.

    ``data_free`` attacks are run without a pool (``run(oracle, *, surrogate, budget, seed,
    device, monitor)``); the others get the pool as their second argument. ``encoder`` attacks
    steal encoders: they need an oracle that answers embeddings.
    """
    if name in _ATTACKS:
        raise ValueError(f"attack {name!r} is already registered")
    _ATTACKS[name] = factory
    if data_free:
        DATA_FREE.add(name)
    if encoder:
        ENCODER.add(name)


def attack_names() -> list[str]:
    return sorted(_ATTACKS)


def build_attack(type_: str, **params: Any) -> Any:
    if type_ not in _ATTACKS:
        raise ValueError(f"unknown attack type {type_!r}; registered: {', '.join(attack_names())}")
    recipe = params.pop("recipe", None)
    if isinstance(recipe, dict):
        params["recipe"] = TrainRecipe(**recipe)
    elif recipe is not None:
        params["recipe"] = recipe
    return _ATTACKS[type_](**params)


register_attack("knockoff", KnockoffNets)
register_attack("copycat", CopyCat)
register_attack("encoder", EncoderStealing, encoder=True)
register_attack("contsteal", ContSteal, encoder=True)
register_attack("stolenencoder", StolenEncoder, encoder=True)
register_attack("mega", MEGA, data_free=True)
register_attack("dast", DaST, data_free=True)
register_attack("dfme", DFME, data_free=True)

__all__ = [
    "DATA_FREE",
    "ENCODER",
    "PRESETS",
    "AttackResult",
    "ContSteal",
    "CopyCat",
    "DFME",
    "DaST",
    "EmbeddingCache",
    "EncoderStealing",
    "KnockoffNets",
    "MEGA",
    "StolenEncoder",
    "TrainRecipe",
    "attack_names",
    "build_attack",
    "is_data_free",
    "register_attack",
    "steals_encoders",
]
