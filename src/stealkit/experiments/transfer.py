"""Transfer adversarial attacks in an experiment: crafted on each stolen model (and on an
independent baseline trained on labelled data of its own), scored on the victim over evaluation
images it classifies correctly. The victim's labels come from its unmetered evaluator, never
from the thief's ledger."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from stealkit.data import to_spec
from stealkit.data.dataset import ImageDataset
from stealkit.errors import ConfigError
from stealkit.experiments.config import TransferConfig
from stealkit.metrics import accuracy, transfer_table
from stealkit.models import build_model
from stealkit.oracle import OutputKind
from stealkit.train.loop import fit, predict
from stealkit.victims.base import Victim


class TransferJudge:
    """FGSM/BIM/PGD success on the victim, crafted on any source model.

    Args:
        victim: the victim; judged through ``victim.evaluator(output="label")``.
        images: the images to attack (their labels, or the victim's where they have none); the
            first ``settings.limit`` the victim classifies correctly are kept.
        settings: the config's ``transfer:`` section.
    """

    def __init__(
        self,
        victim: Victim,
        images: ImageDataset,
        settings: TransferConfig,
        *,
        device: torch.device,
    ) -> None:
        self.victim, self.t, self.device = victim, settings, device
        self.labels = victim.evaluator(output=OutputKind.LABEL, device=device)
        x_eval, y_eval = to_spec(images.images(), victim.spec), images.y
        victim_labels = self.labels.query(x_eval).labels()
        if y_eval is None:  # no labels: every image, labelled by the victim
            keep, y = torch.ones(len(x_eval), dtype=torch.bool), victim_labels
        else:
            keep, y = victim_labels == y_eval, y_eval
        idx = keep.nonzero().flatten()[: settings.limit]
        self.x, self.y = x_eval[idx], y[idx]

    def table(self, source: nn.Module) -> list[dict[str, Any]]:
        """One row per (eps, targeted, method); every source is attacked towards the same
        targets (``transfer.seed``), so stolen models and the baseline compare."""
        t, rows = self.t, []
        for eps in t.eps:
            rows += transfer_table(
                source,
                lambda xa: self.labels.query(xa).labels(),
                self.x,
                self.y,
                num_classes=self.labels.num_classes,
                methods=t.methods,
                eps=eps,
                steps=t.steps,
                step_size=t.step_size if t.step_size is not None else 2.5 * eps / t.steps,
                targeted=t.targeted,
                seed=t.seed,
                device=self.device,
            )
        return rows

    def baseline(
        self, data_dir: str | None, evaluate: Callable[[nn.Module], dict[str, Any]]
    ) -> dict[str, Any] | None:
        """Train the independent baseline (its own labelled data, no victim answers), judge it
        like a stolen model (``evaluate``: agreement and accuracy on the evaluation set) and
        attack the victim from it."""
        b = self.t.baseline
        if b is None:
            return None
        from stealkit.experiments.checks import load_part

        ds = load_part(b, data_dir)
        if ds.y is None:
            raise ConfigError(f"transfer.baseline.dataset {b.dataset!r} has no labels to train on")
        c, h, _ = self.victim.spec.shape
        k = self.labels.num_classes
        if int(ds.y.max()) >= k:
            raise ConfigError(
                f"transfer.baseline.dataset {b.dataset!r} has labels up to {int(ds.y.max())}, "
                f"but the victim has {k} classes; pick a data set with the victim's classes"
            )
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = build_model(b.arch, in_channels=c, num_classes=k, image_size=h)
        t0 = time.time()
        fit(
            model,
            to_spec(ds.images(), self.victim.spec),
            ds.y,
            loss_fn=torch.nn.functional.cross_entropy,
            epochs=b.epochs,
            seed=0,
            device=self.device,
            progress="transfer baseline training",
        )
        acc = accuracy(predict(model, self.x, device=self.device).argmax(1), self.y)
        return {
            "dataset": ds.name,
            "size": len(ds),
            "arch": b.arch,
            "epochs": b.epochs,
            "accuracy_on_transfer_set": acc,
            "metrics": evaluate(model),
            "train_seconds": time.time() - t0,
            "transfer": self.table(model),
        }
