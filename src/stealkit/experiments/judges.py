"""Judges compare a stolen model with its victim; a family says which judge and surrogate fit.

A *family* is what an attack steals (``Attack.steals``) and what a victim is (``Victim.kind``):
"classifier" or "encoder". Each family names the answers its victims give, how a surrogate of it
is built from a registry architecture, and its judge. The runner asks the family, never branches
on its name, so a new family (text encoders) is one ``register_family`` call with a judge.

- ``ClassifierJudge``: agreement with the victim (fidelity), accuracy, and accuracy relative to
  the victim's, on evaluation images the thief never queries.
- ``ProbeJudge``: linear probes on a downstream task, one protocol for the victim and every
  stolen encoder (``stealkit.metrics.linear_probe``): the run's ``accuracy`` is the stolen
  encoder's downstream accuracy, its ``agreement`` how often stolen encoder + its head and victim
  encoder + its head predict the same class, so reports read the same for both families.

Every victim answer a judge needs comes from ``victim.evaluator`` (clean) or from a defended
oracle on a ledger of its own: never from the thief's ledger.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import Tensor, nn

from stealkit.data import to_spec
from stealkit.data.dataset import ImageDataset
from stealkit.defenses import Defense, defense_repr
from stealkit.errors import ConfigError, QueryRefused
from stealkit.metrics import ConvergenceCurve, accuracy, evaluate_stolen
from stealkit.metrics.probe import (
    ProbeResult,
    embedding_similarity,
    extract_features,
    probe_agreement,
    probe_features,
)
from stealkit.models import build_model
from stealkit.models.encoder import SurrogateEncoder
from stealkit.oracle import Ledger, Oracle, OutputKind
from stealkit.oracle.spec import InputSpec
from stealkit.train.loop import predict
from stealkit.victims.base import Victim

Metrics = dict[str, float | None]


class Judge(Protocol):
    victim_accuracy: float | None
    victim_labels: Tensor  # the victim's (or its probe's) label per evaluation image

    def evaluate(self, surrogate: nn.Module) -> Metrics: ...

    def defense_utility(self, name: str, defense: Defense | None) -> dict[str, Any]: ...

    def curve(self, at: list[int]) -> ConvergenceCurve | None: ...


class ClassifierJudge:
    """Agreement, accuracy and relative accuracy of stolen classifiers on ``eval_set``."""

    def __init__(
        self,
        victim: Victim,
        *,
        eval_set: ImageDataset,
        probe_set: ImageDataset | None = None,
        probe_epochs: int = 30,
        device: torch.device,
    ) -> None:
        self.victim, self.device = victim, device
        self.x = to_spec(eval_set.images(), victim.spec)
        self.y = eval_set.y
        self.clean = victim.evaluator(output=OutputKind.PROBABILITIES, device=device).query(self.x)
        self.victim_labels = self.clean.labels()
        self.victim_accuracy = accuracy(self.victim_labels, self.y) if self.y is not None else None

    def evaluate(self, surrogate: nn.Module) -> Metrics:
        return evaluate_stolen(
            surrogate, self.x, self.y, self.victim_labels, self.victim_accuracy, device=self.device
        )

    def defense_utility(self, name: str, defense: Defense | None) -> dict[str, Any]:
        """What a defence costs honest users: the victim's accuracy through it on the evaluation
        set, how often top-1 survives, and the mean L1 change of the answers."""
        oracle = _honest_user(self.victim, OutputKind.PROBABILITIES, defense, self.device)
        try:
            resp = oracle.query(self.x)
        except QueryRefused as e:  # a query monitor blocked the honest user: that is its cost
            return _refused_honest_user(name, defense, e)
        labels = resp.labels()
        return {
            "name": name,
            "repr": defense_repr(defense),
            "victim_accuracy": accuracy(labels, self.y) if self.y is not None else None,
            "top1_kept": accuracy(labels, self.victim_labels),
            "mean_l1_change": float((resp.probs() - self.clean.probs()).abs().sum(1).mean()),
        }

    def curve(self, at: list[int]) -> ConvergenceCurve | None:
        return ConvergenceCurve(self.x, self.y, self.victim_labels, at=at, device=self.device)


class ProbeJudge:
    """Linear-probe evaluation of stolen encoders: heads trained on ``probe_set``'s frozen
    features, tested on ``eval_set`` (both labelled)."""

    def __init__(
        self,
        victim: Victim,
        *,
        eval_set: ImageDataset,
        probe_set: ImageDataset | None,
        probe_epochs: int = 30,
        device: torch.device,
    ) -> None:
        if probe_set is None or probe_set.y is None or eval_set.y is None:
            raise ConfigError(
                "linear probes need labels: pick labelled data sets for 'probe:' and 'eval:'"
            )
        self.victim, self.device, self.epochs = victim, device, probe_epochs
        self.train_x, self.train_y = to_spec(probe_set.images(), victim.spec), probe_set.y
        self.test_x, self.test_y = to_spec(eval_set.images(), victim.spec), eval_set.y
        self.num_classes = int(max(self.train_y.max(), self.test_y.max())) + 1
        clean = victim.evaluator(output=OutputKind.EMBEDDING, device=device)
        # the victim embeds each probe and eval image once: its probe and the embedding
        # comparisons share the features (a large victim answers some 40 images/s on one core)
        f_train = extract_features(lambda x: clean.query(x).values, self.train_x, device=device)
        self.victim_embeddings = extract_features(
            lambda x: clean.query(x).values, self.test_x, device=device
        )
        self.victim_probe = self.probe_features(f_train, self.victim_embeddings)
        self.victim_accuracy: float | None = self.victim_probe.accuracy
        self.victim_labels = self.victim_probe.predictions

    def probe(self, encoder_fn: Callable[[Tensor], Tensor]) -> ProbeResult:
        return self.probe_features(
            extract_features(encoder_fn, self.train_x, device=self.device),
            extract_features(encoder_fn, self.test_x, device=self.device),
        )

    def probe_features(self, f_train: Tensor, f_test: Tensor) -> ProbeResult:
        """The judge's probe protocol on features of its probe-train and eval images."""
        return probe_features(
            f_train,
            self.train_y,
            f_test,
            self.test_y,
            num_classes=self.num_classes,
            epochs=self.epochs,
            device=self.device,
        )

    def evaluate(self, surrogate: nn.Module) -> Metrics:
        """Downstream accuracy and probe agreement of a stolen encoder, plus how close its
        embeddings are to the victim's on the evaluation set."""

        def fn(x: Tensor) -> Tensor:
            return predict(surrogate, x, device=self.device)

        stolen = self.probe(fn)
        acc = self.victim_probe.accuracy
        return {
            "agreement": probe_agreement(self.victim_probe, stolen),
            "accuracy": stolen.accuracy,
            "victim_accuracy": acc,
            "relative_accuracy": stolen.accuracy / acc if acc else None,
            "embedding_cosine": embedding_similarity(fn(self.test_x), self.victim_embeddings)[
                "cosine"
            ],
        }

    def defense_utility(self, name: str, defense: Defense | None) -> dict[str, Any]:
        """What an embedding defence costs honest users: the victim's downstream accuracy when
        the users' own linear head is trained and tested on defended embeddings, how often its
        prediction matches the undefended pipeline's, and the mean relative L2 change of the
        embeddings (|defended - clean| / |clean|)."""
        if defense is None:  # the undefended API: its figures are the victim probe's own
            return {
                "name": name,
                "repr": defense_repr(None),
                "victim_accuracy": self.victim_probe.accuracy,
                "top1_kept": 1.0,
                "mean_l1_change": None,
                "mean_relative_l2_change": 0.0,
            }
        oracle = _honest_user(self.victim, OutputKind.EMBEDDING, defense, self.device)
        try:
            res = self.probe(lambda x: oracle.query(x).values)
            changed = oracle.query(self.test_x).values
        except QueryRefused as e:  # a query monitor blocked the honest user: that is its cost
            return _refused_honest_user(name, defense, e)
        return {
            "name": name,
            "repr": defense_repr(defense),
            "victim_accuracy": res.accuracy,
            "top1_kept": probe_agreement(self.victim_probe, res),
            "mean_l1_change": None,  # a classifier's measure; embeddings get the one below
            "mean_relative_l2_change": embedding_similarity(changed, self.victim_embeddings)[
                "relative_l2"
            ],
        }

    def curve(self, at: list[int]) -> ConvergenceCurve | None:
        return None  # a probe per checkpoint is a benchmark's job, not a run's


def _honest_user(
    victim: Victim, output: OutputKind, defense: Defense | None, device: torch.device
) -> Oracle:
    """The API as an honest user sees it, on a ledger of its own (never the thief's)."""
    return victim.oracle(
        output=output, defense=defense, ledger=Ledger(), device=device, client="honest-user"
    )


def _refused_honest_user(name: str, defense: Defense | None, e: Exception) -> dict[str, Any]:
    """A defence's utility row when it refused the honest user's evaluation queries."""
    return {
        "name": name,
        "repr": defense_repr(defense),
        "victim_accuracy": None,
        "top1_kept": None,
        "mean_l1_change": None,
        "refused_honest_user": str(e),
    }


# --- families ------------------------------------------------------------------------------------
def classifier_surrogate(arch: str, spec: InputSpec, output_dim: int) -> nn.Module:
    c, h, _ = spec.shape
    return build_model(arch, in_channels=c, num_classes=output_dim, image_size=h)


def encoder_surrogate(arch: str, spec: InputSpec, output_dim: int) -> nn.Module:
    """A registry backbone (its head unused) with a linear map to the victim's embedding size."""
    c, h, _ = spec.shape
    backbone = build_model(arch, in_channels=c, num_classes=2, image_size=h)
    return SurrogateEncoder(backbone, spec.shape, output_dim)


@dataclass(frozen=True)
class Family:
    """What is stolen: the answers its victims give, its surrogate, its judge.

    ``needs_probe``: the judge trains heads on a ``probe:`` data set. ``transfer``: transfer
    adversarial attacks (and convergence curves) apply to its stolen models.
    """

    name: str
    outputs: frozenset[OutputKind]
    surrogate: Callable[[str, InputSpec, int], nn.Module]
    judge: Callable[..., Judge]
    needs_probe: bool = False
    transfer: bool = False


_FAMILIES: dict[str, Family] = {}


def register_family(family: Family) -> None:
    if family.name in _FAMILIES:
        raise ValueError(f"family {family.name!r} is already registered")
    _FAMILIES[family.name] = family


def family_names() -> list[str]:
    return sorted(_FAMILIES)


def get_family(name: str) -> Family:
    if name not in _FAMILIES:
        raise ConfigError(f"no family {name!r}; registered: {', '.join(family_names())}")
    return _FAMILIES[name]


register_family(
    Family(
        "classifier",
        outputs=frozenset(
            {OutputKind.LABEL, OutputKind.TOPK, OutputKind.PROBABILITIES, OutputKind.LOGITS}
        ),
        surrogate=classifier_surrogate,
        judge=ClassifierJudge,
        transfer=True,
    )
)
register_family(
    Family(
        "encoder",
        outputs=frozenset({OutputKind.EMBEDDING}),
        surrogate=encoder_surrogate,
        judge=ProbeJudge,
        needs_probe=True,
    )
)
