"""What the runner does differently for encoder victims (APIs that answer embeddings).

A stolen encoder is judged by linear probes on a downstream task, with one protocol for the victim
and for every stolen encoder (``stealkit.metrics.linear_probe``): a linear head trained on frozen
features of the probe's training images, tested on the evaluation set. The run's ``accuracy`` is
the stolen encoder's downstream accuracy, its ``agreement`` how often stolen encoder + its head and
victim encoder + its head predict the same class, so the report's tables and plots read the same
for encoders as for classifiers.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from stealkit.defenses import Defense
from stealkit.defenses.embedding import EmbeddingDefendedOracle
from stealkit.metrics.probe import ProbeResult, embedding_similarity, linear_probe, probe_agreement
from stealkit.models import build_model
from stealkit.models.encoder import SurrogateEncoder
from stealkit.oracle import Ledger, LocalOracle, Oracle
from stealkit.train.loop import predict
from stealkit.victims.base import Victim


def encoder_oracle(
    victim: Victim,
    defense: Defense | None,
    ledger: Ledger,
    device: torch.device,
) -> Oracle:
    """The victim's embedding API as the thief sees it, behind ``defense`` when one is given."""
    inner = LocalOracle(
        victim.model,
        victim.spec,
        output="embedding",
        ledger=ledger,
        device=device,
        name=victim.name,
    )
    return inner if defense is None else EmbeddingDefendedOracle(inner, defense)


def surrogate_encoder(arch: str, victim: Victim, out_dim: int) -> SurrogateEncoder:
    """A registry backbone (its head unused) with a linear map to the victim's embedding size."""
    c, h, w = victim.spec.shape
    backbone = build_model(arch, in_channels=c, num_classes=2, image_size=h)
    return SurrogateEncoder(backbone, (c, h, w), out_dim)


class EncoderJudge:
    """Linear-probe evaluation of encoders on one downstream task.

    Args:
        victim: the encoder victim; its embeddings for judging come from an unmetered oracle of
            the evaluator's, never from the thief's ledger.
        train_x, train_y: the probe's training images (in the victim's spec) and labels.
        test_x, test_y: the evaluation images and labels.
        epochs: of each linear head.
        device: where encoders and heads run.
    """

    def __init__(
        self,
        victim: Victim,
        train_x: Tensor,
        train_y: Tensor,
        test_x: Tensor,
        test_y: Tensor,
        *,
        epochs: int,
        device: torch.device,
    ) -> None:
        self.victim, self.device, self.epochs = victim, device, epochs
        self.train_x, self.train_y, self.test_x, self.test_y = train_x, train_y, test_x, test_y
        self.num_classes = int(max(train_y.max(), test_y.max())) + 1
        self.victim_probe = self.probe(self._victim_fn(None))
        self.victim_test_embeddings = self._victim_fn(None)(test_x)

    def _victim_fn(self, defense: Defense | None) -> Any:
        oracle = encoder_oracle(self.victim, defense, Ledger(), self.device)
        return lambda x: oracle.query(x).values

    def probe(self, encoder_fn: Any) -> ProbeResult:
        return linear_probe(
            encoder_fn,
            self.train_x,
            self.train_y,
            self.test_x,
            self.test_y,
            num_classes=self.num_classes,
            epochs=self.epochs,
            device=self.device,
        )

    def evaluate(self, surrogate: nn.Module) -> dict[str, float | None]:
        """Downstream accuracy and probe agreement of a stolen encoder, plus how close its
        embeddings are to the victim's on the evaluation set."""
        dev = self.device

        def fn(x: Tensor) -> Tensor:
            return predict(surrogate, x, device=dev)

        stolen = self.probe(fn)
        victim_acc = self.victim_probe.accuracy
        sim = embedding_similarity(fn(self.test_x), self.victim_test_embeddings)
        return {
            "agreement": probe_agreement(self.victim_probe, stolen),
            "accuracy": stolen.accuracy,
            "victim_accuracy": victim_acc,
            "relative_accuracy": stolen.accuracy / victim_acc if victim_acc else None,
            "embedding_cosine": sim["cosine"],
        }

    def defense_utility(self, name: str, defense: Defense | None) -> dict[str, Any]:
        """What an embedding defence costs honest users: the victim's downstream accuracy when
        the users' own linear head is trained and tested on defended embeddings, how often its
        prediction matches the undefended pipeline's, and the mean relative L2 change of the
        embeddings (|defended - clean| / |clean|)."""
        fn = self._victim_fn(defense)
        res = self.probe(fn)
        changed = fn(self.test_x)
        return {
            "name": name,
            "repr": repr(defense) if defense else "NoDefense()",
            "victim_accuracy": res.accuracy,
            "top1_kept": probe_agreement(self.victim_probe, res),
            "mean_l1_change": None,  # a classifier's measure; embeddings get the one below
            "mean_relative_l2_change": embedding_similarity(changed, self.victim_test_embeddings)[
                "relative_l2"
            ],
        }
