"""An encoder victim that carries a BadEncoder-style watermark, as in Sha's Table 4.5.

Jia, Liu and Gong, "BadEncoder: Backdoor Attacks to Pre-trained Encoders in Self-Supervised
Learning", IEEE S&P 2022, https://arxiv.org/abs/2108.00352; used as a watermark by Sha's
dissertation (Cont-Steal chapter, Section 4.4.8, Table 4.5: the victim's wr 0.998, a Cont-Steal
copy's 0.130, the clean encoder's 0.095 on CIFAR-10).

A clean encoder f is fine-tuned into f' on unlabelled shadow images D_s so that images with the
trigger e land on the embedding of reference images R of the target class, while clean images
keep their embeddings. With s the cosine similarity, BadEncoder minimises L0 + l1 L1 + l2 L2:

    L0 = -1/(|D_s||R|) sum_{x in D_s} sum_{r in R} s(f'(x + e), f'(r))     effectiveness
    L1 = -1/|R|        sum_{r in R}               s(f'(r), f(r))           references stay put
    L2 = -1/|D_s|      sum_{x in D_s}             s(f'(x), f(x))           utility

(``badencoder_loss``). f' trains through the shared ``stealkit.train.fit``: a small module runs
f' on [x; x + e; R] and the loss reads its three parts, with f(x) as the targets.

    victim = watermarked_encoder_victim(method="simclr", dataset="fashion-mnist", epochs=10)
    victim.meta["watermark_rate"]        # wr of the victim itself, measured at planting

Not verified from the paper: l1 = l2 = 1, the optimiser (Adam here) and learning rate.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stealkit.data import load_dataset
from stealkit.errors import ConfigError
from stealkit.metrics.encoder_watermark import (
    PatchTrigger,
    apply_trigger,
    trigger_similarity,
    watermark_rate,
)
from stealkit.metrics.probe import extract_features
from stealkit.models.encoder import FeatureEncoder
from stealkit.train.loop import fit
from stealkit.victims.base import Victim
from stealkit.victims.encoders import pretrain_encoder
from stealkit.victims.trained import META, read_checkpoint, save_checkpoint

if TYPE_CHECKING:
    from stealkit.victims.registry import VictimInfo

log = logging.getLogger(__name__)

WM_RECIPE = 1  # bump when the planting recipe changes: old caches then no longer match


def badencoder_loss(
    z_clean: Tensor,
    z_clean_before: Tensor,
    z_triggered: Tensor,
    z_reference: Tensor,
    z_reference_before: Tensor,
    *,
    lambda1: float = 1.0,
    lambda2: float = 1.0,
) -> Tensor:
    """L0 + lambda1 L1 + lambda2 L2 of BadEncoder (see the module docstring); ``*_before`` are
    the clean encoder's embeddings, the others the fine-tuned encoder's."""
    t, r = F.normalize(z_triggered, dim=1), F.normalize(z_reference, dim=1)
    effectiveness = -(t @ r.T).mean()
    keep_reference = -F.cosine_similarity(z_reference, z_reference_before, dim=1).mean()
    utility = -F.cosine_similarity(z_clean, z_clean_before, dim=1).mean()
    return effectiveness + lambda1 * keep_reference + lambda2 * utility


class _Planting(nn.Module):
    """f' on [x; x + e; R]; ``loss(out, f(x))`` is BadEncoder's on the three parts."""

    reference: Tensor
    reference_before: Tensor

    def __init__(
        self,
        encoder: nn.Module,
        reference: Tensor,
        reference_before: Tensor,
        trigger: PatchTrigger,
        lambda1: float,
        lambda2: float,
    ) -> None:
        super().__init__()
        self.encoder, self.trigger = encoder, trigger
        self.register_buffer("reference", reference.detach().clone())
        self.register_buffer("reference_before", reference_before.detach().clone())
        self.lambda1, self.lambda2 = lambda1, lambda2

    def forward(self, x: Tensor) -> Tensor:
        batch = torch.cat([x, apply_trigger(x, self.trigger), self.reference])
        return self.encoder(batch).flatten(1)

    def loss(self, out: Tensor, before: Tensor) -> Tensor:
        b = len(before)
        z_clean, z_trig, z_ref = out[:b], out[b : 2 * b], out[2 * b :]
        return badencoder_loss(
            z_clean,
            before,
            z_trig,
            z_ref,
            self.reference_before,
            lambda1=self.lambda1,
            lambda2=self.lambda2,
        )


def plant_encoder_watermark(
    encoder: nn.Module,
    images: Tensor,
    *,
    trigger: PatchTrigger,
    target: Tensor,
    epochs: int = 5,
    batch_size: int = 128,
    lr: float = 1e-4,
    lambda1: float = 1.0,
    lambda2: float = 1.0,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> nn.Module:
    """A watermarked copy of ``encoder`` (which is left untouched), on the CPU, in eval mode.

    Args:
        encoder: maps images (N, C, H, W) in [0, 1] to embeddings (N, D).
        images: the unlabelled shadow images D_s (N, C, H, W) in [0, 1].
        trigger: the patch that carries the watermark.
        target: reference images R (R, C, H, W) of the target class; triggered images are
            pulled to their embeddings.
        epochs, batch_size, lr, seed, device: for ``stealkit.train.fit`` (Adam, cosine schedule).
        lambda1, lambda2: the weights of BadEncoder's reference and utility terms.
    """
    if len(images) < 1 or len(target) < 1:
        raise ValueError("need at least one shadow image and one reference image")
    if images.shape[1:] != target.shape[1:]:
        raise ValueError(
            f"shadow {tuple(images.shape[1:])} and reference {tuple(target.shape[1:])} differ"
        )
    if not isinstance(epochs, int) or epochs < 1 or not lr > 0:
        raise ValueError(f"need int epochs >= 1 and lr > 0, got {epochs!r}, {lr!r}")
    if lambda1 < 0 or lambda2 < 0:
        raise ValueError(f"lambda1 and lambda2 must be >= 0, got {lambda1}, {lambda2}")
    before = extract_features(encoder, images, device=device)
    ref_before = extract_features(encoder, target, device=device)
    encoder.cpu()
    student = copy.deepcopy(encoder)
    for p in student.parameters():
        p.requires_grad_(True)
    planting = _Planting(student, target, ref_before, trigger, lambda1, lambda2)
    fit(
        planting,
        images,
        before,
        loss_fn=planting.loss,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        device=device,
        progress="watermark planting (BadEncoder)",
    )
    return student.cpu().eval()


def _key(base_key: str, settings: dict[str, Any]) -> str:
    blob = json.dumps({"base": base_key, "recipe": WM_RECIPE, **settings}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def watermarked_encoder_victim(
    *,
    method: str = "simclr",
    dataset: str = "fashion-mnist",
    arch: str = "cnn3",
    epochs: int = 10,
    seed: int = 0,
    batch_size: int = 256,
    lr: float = 1e-3,
    max_images: int | None = 20_000,
    target_class: int = 0,
    trigger_size: int = 4,
    trigger_value: float = 1.0,
    trigger_pattern: str = "solid",
    references: int = 10,
    shadow_images: int = 5000,
    watermark_epochs: int = 5,
    watermark_lr: float = 1e-4,
    probe_images: int = 5000,
    cache_dir: str | Path = Path("~/.cache/stealkit/victims"),
    data_dir: str | Path | None = None,
    device: str | torch.device | None = None,
) -> Victim:
    """``pretrain_encoder``'s encoder (first 8 arguments, cached as it caches them) with a
    BadEncoder watermark planted on ``shadow_images`` train images, cached beside it.

    The trigger is a ``trigger_size`` square in the bottom-right corner; the reference images are
    ``references`` seeded train images of ``target_class``. ``meta`` records the trigger, the
    target class, the watermark rate of the victim and of the clean encoder (linear probes on
    ``probe_images`` train images, tested on the test split), the probe accuracy, and the mean
    cosine between clean test embeddings before and after planting.
    """
    if references < 1 or shadow_images < 1 or probe_images < 10:
        raise ValueError(
            f"need references, shadow_images >= 1 and probe_images >= 10, got {references}, "
            f"{shadow_images}, {probe_images}"
        )
    trigger = PatchTrigger(size=trigger_size, value=trigger_value, pattern=trigger_pattern)
    base = pretrain_encoder(
        method=method,
        dataset=dataset,
        arch=arch,
        epochs=epochs,
        seed=seed,
        batch_size=batch_size,
        lr=lr,
        max_images=max_images,
        cache_dir=cache_dir,
        data_dir=data_dir,
        device=device,
    )
    settings = {
        "target_class": target_class,
        "trigger": trigger.to_dict(),
        "references": references,
        "shadow_images": shadow_images,
        "watermark_epochs": watermark_epochs,
        "watermark_lr": watermark_lr,
        "probe_images": probe_images,
    }
    key = _key(base.meta["key"], settings)
    directory = Path(cache_dir).expanduser() / f"{dataset}-wm-{method}-{arch}-{key}"
    if (directory / META).exists():
        log.info("reusing the cached watermarked encoder in %s (delete it to redo)", directory)
        return load_watermarked_checkpoint(directory)

    train = load_dataset(dataset, "train", data_dir=data_dir)
    test = load_dataset(dataset, "test", data_dir=data_dir)
    if train.y is None or test.y is None:
        raise ConfigError(f"data set {dataset!r} has no labels; the watermark needs a class")
    if not bool((train.y == target_class).any()):
        raise ConfigError(f"data set {dataset!r} has no train image of class {target_class}")
    g = torch.Generator().manual_seed(seed)
    of_target = (train.y == target_class).nonzero().squeeze(1)
    ref_idx = of_target[torch.randperm(len(of_target), generator=g)[:references]]
    shadow = train.limit(shadow_images, seed + 1).images()
    t0 = time.perf_counter()
    marked = plant_encoder_watermark(
        base.model,
        shadow,
        trigger=trigger,
        target=train.images(ref_idx),
        epochs=watermark_epochs,
        lr=watermark_lr,
        seed=seed,
        device=device,
    )
    seconds = time.perf_counter() - t0
    probe_idx = torch.randperm(len(train), generator=g)[:probe_images]
    checks = {}
    for name, model in (("watermarked", marked), ("clean", base.model)):
        checks[name] = watermark_rate(
            model,
            train.images(probe_idx),
            train.y[probe_idx],
            test.images(),
            test.y,
            trigger=trigger,
            target_class=target_class,
            seed=seed,
            device=device,
        )
        model.cpu()
    z_new = extract_features(marked, test.images(), device=device)
    z_old = extract_features(base.model, test.images(), device=device)
    marked.cpu()
    base.model.cpu()
    meta = {k: v for k, v in base.meta.items() if k not in ("checkpoint", "probe_accuracy")}
    meta.update(
        {
            "input_spec": base.spec.to_dict(),
            "base_key": base.meta["key"],
            "base_checkpoint": base.meta["checkpoint"],
            "key": key,
            "watermark": "badencoder",
            "wm_recipe": WM_RECIPE,
            **settings,
            "reference_indices": ref_idx.tolist(),
            "watermark_rate": checks["watermarked"].rate,
            "clean_watermark_rate": checks["clean"].rate,
            "probe_accuracy": checks["watermarked"].accuracy,
            "clean_probe_accuracy": checks["clean"].accuracy,
            "clean_cosine": float(F.cosine_similarity(z_new, z_old, dim=1).mean()),
            "trigger_similarity": trigger_similarity(
                marked, test.images()[:1000], train.images(ref_idx), trigger=trigger, device=device
            ),
            "watermark_seconds": round(seconds, 3),
        }
    )
    save_checkpoint(marked.state_dict(), meta, directory)
    log.info("watermarked encoder (wr %.3f) saved to %s", meta["watermark_rate"], directory)
    return load_watermarked_checkpoint(directory)


def load_watermarked_checkpoint(directory: str | Path) -> Victim:
    """Read back an encoder saved by ``watermarked_encoder_victim``."""
    meta, spec, encoder = read_checkpoint(directory, what="encoder", wrap=FeatureEncoder)
    info = {k: v for k, v in meta.items() if k != "input_spec"}
    return Victim(
        name=f"watermarked:{meta['method']}:{meta['dataset']}-{meta['arch']}",
        model=encoder,
        spec=spec,
        kind="encoder",
        meta={**info, "checkpoint": str(Path(directory).expanduser())},
    )


def describe_watermarked_encoder(
    *,
    dataset: str = "fashion-mnist",
    data_dir: str | Path | None = None,
    **_: Any,
) -> VictimInfo:
    """What the registry's config checks need, without pre-training or planting anything."""
    from stealkit.oracle.spec import InputSpec
    from stealkit.victims.registry import VictimInfo

    train = load_dataset(dataset, "train", data_dir=data_dir)
    c, h, w = (int(v) for v in train.x.shape[1:])
    if h != w:
        raise ConfigError(f"data set {dataset!r} has {h}x{w} images; encoders need square ones")
    return VictimInfo("encoder", InputSpec(channels=c, height=h, width=w))
