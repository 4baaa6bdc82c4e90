"""Defences as oracle wrappers, built by type name.

oracle = DefendedOracle(victim_oracle, build_defense("topk", k=1))
oracle = DefendedOracle(encoder_oracle, build_defense("embedding_noise", sigma=0.1))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from stealkit.defenses.b4b import B4B
from stealkit.defenses.dawn import Dawn
from stealkit.defenses.embedding import (
    EmbeddingNoise,
    EmbeddingRounding,
    EmbeddingTopK,
)
from stealkit.defenses.mad import Mad
from stealkit.defenses.misinformation import AdaptiveMisinformation
from stealkit.defenses.perturbation import (
    Argmax,
    DefendedOracle,
    Defense,
    GaussianNoise,
    NoDefense,
    ReverseSigmoid,
    Rounding,
    TopK,
    defense_repr,
)
from stealkit.defenses.prada import Prada

_DEFENSES: dict[str, Callable[..., Defense]] = {}

# Named presets usable directly in a config's grid: name -> (type, params).
PRESETS: dict[str, tuple[str, dict[str, Any]]] = {
    "none": ("none", {}),
    "top1": ("topk", {"k": 1}),
    "top2": ("topk", {"k": 2}),
    "round1": ("rounding", {"decimals": 1}),
    "round2": ("rounding", {"decimals": 2}),
    "argmax": ("argmax", {}),
    "noise": ("gaussian_noise", {"sigma": 0.1}),
    "reverse-sigmoid": ("reverse_sigmoid", {"beta": 0.7, "gamma": 0.4}),
    "adaptive-misinformation": ("adaptive_misinformation", {"tau": 0.5, "nu": 100.0}),
    "mad-0.5": ("mad", {"epsilon": 0.5, "norm": "l1"}),
    "mad-1.0": ("mad", {"epsilon": 1.0, "norm": "l1"}),
    "mad-argmax-0.5": ("mad", {"epsilon": 0.5, "norm": "l1", "argmax": True}),
    "mad-argmax-1.0": ("mad", {"epsilon": 1.0, "norm": "l1", "argmax": True}),
    # encoder victims (embeddings)
    "emb-noise": ("embedding_noise", {"sigma": 0.1, "relative": True}),
    "emb-top64": ("embedding_topk", {"k": 64}),
    "emb-round1": ("embedding_rounding", {"decimals": 1}),
    "b4b": ("b4b", {"hyperplanes": 10, "beta": 0.4}),
}


def register_defense(name: str, factory: Callable[..., Defense]) -> None:
    if name in _DEFENSES:
        raise ValueError(f"defence {name!r} is already registered")
    _DEFENSES[name] = factory


def defense_names() -> list[str]:
    return sorted(_DEFENSES)


def defense_factory(type_: str) -> Callable[..., Defense]:
    """The registered factory of ``type_`` (ValueError naming the registered ones otherwise)."""
    if type_ not in _DEFENSES:
        raise ValueError(
            f"unknown defence type {type_!r}; registered: {', '.join(defense_names())}"
        )
    return _DEFENSES[type_]


def build_defense(type_: str, **params: Any) -> Defense:
    return defense_factory(type_)(**params)


register_defense("none", NoDefense)
register_defense("topk", TopK)
register_defense("rounding", Rounding)
register_defense("argmax", Argmax)
register_defense("gaussian_noise", GaussianNoise)
register_defense("reverse_sigmoid", ReverseSigmoid)
register_defense("embedding_noise", EmbeddingNoise)
register_defense("embedding_topk", EmbeddingTopK)
register_defense("embedding_rounding", EmbeddingRounding)
register_defense("prada", Prada)
register_defense("adaptive_misinformation", AdaptiveMisinformation)
register_defense("dawn", Dawn)
register_defense("mad", Mad)
register_defense("b4b", B4B)

__all__ = [
    "PRESETS",
    "AdaptiveMisinformation",
    "B4B",
    "Argmax",
    "Dawn",
    "DefendedOracle",
    "Defense",
    "EmbeddingNoise",
    "EmbeddingRounding",
    "EmbeddingTopK",
    "GaussianNoise",
    "Mad",
    "NoDefense",
    "defense_repr",
    "Prada",
    "ReverseSigmoid",
    "Rounding",
    "TopK",
    "build_defense",
    "defense_factory",
    "defense_names",
    "register_defense",
]
