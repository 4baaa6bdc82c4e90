"""Self-supervised pre-training of encoders: SimCLR, MoCo v2, BYOL and SimSiam.

Every method is a small module around a backbone (any registry network; its ``features`` are the
representation) that takes a batch of both views [v1; v2] (2B images) and returns what its loss
needs; ``method.loss(out, _)`` is that loss, built from ``stealkit.losses.ssl``. All four train
through the shared ``stealkit.train.fit``: its ``augment`` hook turns each batch into two random
views, so no method has a loop of its own. Momentum encoders (MoCo, BYOL) are updated and MoCo's
queue is filled at the start of the next forward pass, which is the same as after each step.

    method = build_method("byol", backbone)
    pretrain(method, images, epochs=50)
    encoder = FeatureEncoder(method.backbone)   # what a victim serves
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stealkit.data.augment import simclr_view
from stealkit.losses.ssl import byol_loss, moco_infonce, nt_xent, simsiam_loss
from stealkit.models.encoder import embed, output_dim
from stealkit.train.averaging import ema_
from stealkit.train.loop import Augment, FitHistory, fit


def mlp_head(
    d_in: int, hidden: int, d_out: int, *, layers: int = 2, last_bn: bool = False
) -> nn.Sequential:
    """Linear-BN-ReLU blocks then a Linear: the projection/prediction heads of all four papers."""
    mods: list[nn.Module] = []
    d = d_in
    for _ in range(layers - 1):
        mods += [nn.Linear(d, hidden, bias=False), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
        d = hidden
    mods.append(nn.Linear(d, d_out))
    if last_bn:
        mods.append(nn.BatchNorm1d(d_out, affine=False))
    return nn.Sequential(*mods)


def _frozen_copy(m: nn.Module) -> nn.Module:
    twin = copy.deepcopy(m)
    for p in twin.parameters():
        p.requires_grad_(False)
    return twin


class SSLMethod(nn.Module):
    """A backbone, what the method adds to it, and its loss. ``forward`` takes [v1; v2]."""

    name = "ssl"

    def __init__(self, backbone: nn.Module, input_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.backbone = backbone
        self.feature_dim = output_dim(backbone, input_shape)

    def features(self, x: Tensor) -> Tensor:
        return embed(self.backbone, x)

    def loss(self, out: Tensor, target: Tensor) -> Tensor:  # target: fit's unused placeholder
        raise NotImplementedError


class SimCLR(SSLMethod):
    """Chen, Kornblith, Norouzi and Hinton, "A Simple Framework for Contrastive Learning of Visual
    Representations", ICML 2020: projections of both views, NT-Xent at ``temperature``."""

    name = "simclr"

    def __init__(
        self,
        backbone: nn.Module,
        input_shape: tuple[int, ...],
        *,
        proj_dim: int = 64,
        hidden: int = 256,
        temperature: float = 0.5,
    ) -> None:
        super().__init__(backbone, input_shape)
        self.projector = mlp_head(self.feature_dim, hidden, proj_dim)
        self.temperature = temperature

    def forward(self, views: Tensor) -> Tensor:
        return self.projector(self.features(views))

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        z1, z2 = out.chunk(2)
        return nt_xent(z1, z2, self.temperature)


class MoCoV2(SSLMethod):
    """Chen, Fan, Girshick and He, "Improved Baselines with Momentum Contrastive Learning", 2020
    (MoCo v2: MLP head, t = 0.2): queries from v1, keys from v2 through a momentum encoder,
    negatives from a queue of ``queue_size`` earlier keys. No shuffled BN (one device)."""

    name = "moco"
    queue: Tensor

    def __init__(
        self,
        backbone: nn.Module,
        input_shape: tuple[int, ...],
        *,
        proj_dim: int = 64,
        hidden: int = 256,
        queue_size: int = 4096,
        momentum: float = 0.99,
        temperature: float = 0.2,
    ) -> None:
        super().__init__(backbone, input_shape)
        self.projector = mlp_head(self.feature_dim, hidden, proj_dim)
        self.key_backbone = _frozen_copy(backbone)
        self.key_projector = _frozen_copy(self.projector)
        self.momentum, self.temperature = momentum, temperature
        g = torch.Generator().manual_seed(0)
        self.register_buffer(
            "queue", F.normalize(torch.randn(queue_size, proj_dim, generator=g), dim=1)
        )
        self._ptr = 0
        self._pending: Tensor | None = None

    def _enqueue(self, keys: Tensor) -> None:
        k = min(len(keys), len(self.queue))
        idx = (torch.arange(k, device=keys.device) + self._ptr) % len(self.queue)
        self.queue[idx] = keys[:k]
        self._ptr = int((self._ptr + k) % len(self.queue))

    def forward(self, views: Tensor) -> Tensor:
        if self.training:  # finish the previous step: momentum update, then enqueue its keys
            ema_(self.key_backbone, self.backbone, self.momentum, buffers="copy")
            ema_(self.key_projector, self.projector, self.momentum, buffers="copy")
            if self._pending is not None:
                self._enqueue(self._pending)
        v1, v2 = views.chunk(2)
        q = F.normalize(self.projector(self.features(v1)), dim=1)
        with torch.no_grad():
            k = F.normalize(self.key_projector(embed(self.key_backbone, v2)), dim=1)
        if self.training:
            self._pending = k
        return torch.cat([q, k])

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        q, k = out.chunk(2)
        return moco_infonce(q, k, self.queue.clone(), self.temperature)


class BYOL(SSLMethod):
    """Grill et al., "Bootstrap Your Own Latent", NeurIPS 2020: an online projector and predictor
    regress a momentum target network's projection of the other view (symmetrised)."""

    name = "byol"

    def __init__(
        self,
        backbone: nn.Module,
        input_shape: tuple[int, ...],
        *,
        proj_dim: int = 64,
        hidden: int = 256,
        momentum: float = 0.99,
    ) -> None:
        super().__init__(backbone, input_shape)
        self.projector = mlp_head(self.feature_dim, hidden, proj_dim)
        self.predictor = mlp_head(proj_dim, hidden, proj_dim)
        self.target_backbone = _frozen_copy(backbone)
        self.target_projector = _frozen_copy(self.projector)
        self.momentum = momentum

    def forward(self, views: Tensor) -> Tensor:
        if self.training:
            ema_(self.target_backbone, self.backbone, self.momentum, buffers="copy")
            ema_(self.target_projector, self.projector, self.momentum, buffers="copy")
        p = self.predictor(self.projector(self.features(views)))
        with torch.no_grad():
            z = self.target_projector(embed(self.target_backbone, views))
        return torch.cat([p, z], dim=1)

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        p, z = out.chunk(2, dim=1)
        (p1, p2), (z1, z2) = p.chunk(2), z.chunk(2)
        return byol_loss(p1, z2) + byol_loss(p2, z1)


class SimSiam(SSLMethod):
    """Chen and He, "Exploring Simple Siamese Representation Learning", CVPR 2021: a projector
    with BN on its output, a bottleneck predictor, symmetric negative cosine with stop-gradient."""

    name = "simsiam"

    def __init__(
        self,
        backbone: nn.Module,
        input_shape: tuple[int, ...],
        *,
        proj_dim: int = 128,
        hidden: int = 256,
        pred_hidden: int = 32,
    ) -> None:
        super().__init__(backbone, input_shape)
        self.projector = mlp_head(self.feature_dim, hidden, proj_dim, layers=3, last_bn=True)
        self.predictor = mlp_head(proj_dim, pred_hidden, proj_dim)

    def forward(self, views: Tensor) -> Tensor:
        z = self.projector(self.features(views))
        return torch.cat([self.predictor(z), z], dim=1)

    def loss(self, out: Tensor, target: Tensor) -> Tensor:
        p, z = out.chunk(2, dim=1)
        (p1, p2), (z1, z2) = p.chunk(2), z.chunk(2)
        return 0.5 * (simsiam_loss(p1, z2) + simsiam_loss(p2, z1))


METHODS: dict[str, Callable[..., SSLMethod]] = {
    "simclr": SimCLR,
    "moco": MoCoV2,
    "byol": BYOL,
    "simsiam": SimSiam,
}


def build_method(
    name: str, backbone: nn.Module, input_shape: tuple[int, ...], **params: Any
) -> SSLMethod:
    """``METHODS[name](backbone, input_shape, **params)``, naming the choices when unknown."""
    if name not in METHODS:
        raise ValueError(f"unknown self-supervised method {name!r}; choose from {sorted(METHODS)}")
    return METHODS[name](backbone, input_shape, **params)


def two_views(view: Callable[[Tensor, torch.Generator], Tensor] | None = None) -> Augment:
    """fit's augment hook: a batch x (B, ...) becomes [view(x); view(x)] (2B, ...)."""
    v = view or (lambda x, g: simclr_view(x, generator=g))
    return lambda x, g: torch.cat([v(x, g), v(x, g)])


def pretrain(
    method: SSLMethod,
    images: Tensor,
    *,
    epochs: int = 20,
    steps: int | None = None,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-6,
    view: Callable[[Tensor, torch.Generator], Tensor] | None = None,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> FitHistory:
    """Train ``method`` on unlabelled ``images`` (N, C, H, W) in [0, 1] with the shared loop (Adam,
    cosine schedule); ``view`` draws one random view (default ``simclr_view``)."""
    if len(images) < 2:
        raise ValueError("self-supervised pre-training needs at least 2 images")
    placeholder = torch.zeros(len(images))
    return fit(
        method,
        images,
        placeholder,
        loss_fn=method.loss,
        epochs=epochs,
        steps=steps,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        augment=two_views(view),
        seed=seed,
        device=device,
        progress=f"victim pre-training ({type(method).__name__})",
    )
