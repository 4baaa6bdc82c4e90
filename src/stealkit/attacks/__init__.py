"""Attacks, one file each, built by type name from plain keyword arguments.

build_attack("knockoff", strategy="adaptive", reward="all", recipe={"epochs": 20})
build_attack("encoder", loss="cosine", recipe={"epochs": 20})   # encoder victims (embeddings)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stealkit.attacks.activethief import ActiveThief
from stealkit.attacks.base import Attack, AttackResult, Monitor, TrainRecipe
from stealkit.attacks.contsteal import ContSteal
from stealkit.attacks.copycat import CopyCat
from stealkit.attacks.dast import DaST
from stealkit.attacks.dfme import DFME
from stealkit.attacks.dfms import DFMSHL
from stealkit.attacks.encoder import EncoderStealing
from stealkit.attacks.encoder_common import EmbeddingCache
from stealkit.attacks.jbda import JBDA
from stealkit.attacks.knockoff import KnockoffNets
from stealkit.attacks.maze import MAZE
from stealkit.attacks.mega import MEGA
from stealkit.attacks.ripper import BlackBoxRipper
from stealkit.attacks.stolenencoder import StolenEncoder

_ATTACKS: dict[str, Callable[..., Attack]] = {}

# Named presets usable directly in a config's grid: name -> (type, params).
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "knockoff-random": ("knockoff", {"strategy": "random", "online_steps": 0}),
    "knockoff-adaptive": ("knockoff", {"strategy": "adaptive", "reward": "all"}),
    "copycat": ("copycat", {}),
    # synthetic queries grown from a small seed set (Jacobian-based augmentation)
    "jbda": ("jbda", {"variant": "jbda"}),
    "jbda-tr": ("jbda", {"variant": "jbda-tr", "tau": None}),
    # pool-based active learning
    "activethief-entropy": ("activethief", {"strategy": "entropy"}),
    "activethief-kcenter": ("activethief", {"strategy": "kcenter"}),
    "activethief-dfal": ("activethief", {"strategy": "dfal", "candidates": 5000}),
    "activethief-dfal-kcenter": ("activethief", {"strategy": "dfal-kcenter", "candidates": 5000}),
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
    "maze": ("maze", {}),
    "dfms-hl": ("dfms", {"variant": "proxy"}),
    "dfms-hl-synthetic": ("dfms", {"variant": "synthetic"}),
    "ripper": ("ripper", {}),
}


def register_attack(name: str, factory: Callable[..., Attack]) -> None:
    """Register an attack type: ``factory(**params)`` returns an ``Attack``, whose declarations
    (``steals``, ``needs_pool``, ``accepts``) tell the runner and the config checks everything
    else. Duplicates are refused."""
    if name in _ATTACKS:
        raise ValueError(f"attack {name!r} is already registered")
    _ATTACKS[name] = factory


def unregister_attack(name: str) -> None:
    """Remove a registered attack type (a plugin's, or a test's)."""
    _ATTACKS.pop(name, None)


def attack_factory(type_: str) -> Callable[..., Attack]:
    """The registered factory of ``type_`` (ValueError naming the registered ones otherwise)."""
    if type_ not in _ATTACKS:
        raise ValueError(f"unknown attack type {type_!r}; registered: {', '.join(attack_names())}")
    return _ATTACKS[type_]


def attack_names() -> list[str]:
    return sorted(_ATTACKS)


def build_attack(type_: str, **params: Any) -> Attack:
    """``factory(**params)`` of the registered ``type_``; a ``recipe`` dict becomes a
    ``TrainRecipe``."""
    factory = attack_factory(type_)
    recipe = params.pop("recipe", None)
    if isinstance(recipe, dict):
        params["recipe"] = TrainRecipe(**recipe)
    elif recipe is not None:
        params["recipe"] = recipe
    return factory(**params)


register_attack("knockoff", KnockoffNets)
register_attack("copycat", CopyCat)
register_attack("jbda", JBDA)
register_attack("activethief", ActiveThief)
register_attack("encoder", EncoderStealing)
register_attack("contsteal", ContSteal)
register_attack("stolenencoder", StolenEncoder)
register_attack("mega", MEGA)
register_attack("dast", DaST)
register_attack("dfme", DFME)
register_attack("maze", MAZE)
register_attack("dfms", DFMSHL)
register_attack("ripper", BlackBoxRipper)

__all__ = [
    "PRESETS",
    "ActiveThief",
    "Attack",
    "AttackResult",
    "BlackBoxRipper",
    "ContSteal",
    "CopyCat",
    "DFME",
    "DFMSHL",
    "DaST",
    "EmbeddingCache",
    "EncoderStealing",
    "JBDA",
    "KnockoffNets",
    "MAZE",
    "MEGA",
    "StolenEncoder",
    "Monitor",
    "TrainRecipe",
    "attack_factory",
    "attack_names",
    "build_attack",
    "register_attack",
    "unregister_attack",
]
