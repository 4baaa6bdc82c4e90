"""Cont-Steal: contrastive stealing of an image encoder.

Sha, He, Yu, Backes and Zhang, "Can't Steal? Cont-Steal! Contrastive Stealing Attacks Against
Image Encoders", CVPR 2023. https://arxiv.org/abs/2201.07513

Each image x_i gets two augmented views: the victim embeds one (t_i = v(aug_b(x_i))), the surrogate
the other (s_i = g(f(aug_a(x_i)))). The loss (``stealkit.losses.stealing.contsteal_loss``) pulls s_i
towards t_i and pushes it from the victim's embeddings of the other images (D_neg) and from the
surrogate's own embeddings of the other images (D_self), at temperature tau.

Budget: the victim's view of each image is drawn once and bought once (cached per pool index), so
the attack spends exactly one query per transfer image; the surrogate's view is redrawn in every
batch. (The authors' code re-augments and re-queries the victim's view every epoch, which costs
``epochs`` queries per image.)
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from stealkit.attacks.base import EMBEDDING_OUTPUTS, Attack, AttackResult, Monitor, TrainRecipe
from stealkit.attacks.encoder_common import ENCODER_RECIPE, EmbeddingCache, steal_encoder
from stealkit.data.augment import simclr_view
from stealkit.data.pool import QueryPool
from stealkit.losses.stealing import contsteal_loss
from stealkit.oracle.base import Oracle


class ContSteal(Attack):
    """Args:
    temperature: tau of the contrastive loss (the authors' code uses 0.5).
    self_negatives: keep the D_self negatives (False gives plain InfoNCE against the victim).
    crop_scale: area range of the random resized crop in both views (SimCLR-style views:
        crop, flip, colour jitter with probability 0.8, grayscale with probability 0.2).
    jitter: brightness/contrast/saturation strength of the colour jitter (hue: jitter / 4).
    query_batch: images sent per oracle call.
    recipe: training of the surrogate (``recipe.augment`` is unused: the views are the attack's).
    """

    steals = "encoder"
    accepts = EMBEDDING_OUTPUTS

    def __init__(
        self,
        *,
        temperature: float = 0.5,
        self_negatives: bool = True,
        crop_scale: tuple[float, float] = (0.2, 1.0),
        jitter: float = 0.4,
        query_batch: int = 256,
        recipe: TrainRecipe | None = None,
    ) -> None:
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        if not 0 < crop_scale[0] <= crop_scale[1] <= 1 or not 0 <= jitter <= 1:
            raise ValueError(
                f"need 0 < crop_scale <= 1 and 0 <= jitter <= 1, got {crop_scale}, {jitter}"
            )
        if query_batch < 1:
            raise ValueError(f"query_batch must be >= 1, got {query_batch}")
        self.temperature, self.self_negatives = temperature, self_negatives
        self.crop_scale, self.jitter = (float(crop_scale[0]), float(crop_scale[1])), jitter
        self.query_batch = query_batch
        self.recipe = recipe or ENCODER_RECIPE

    def __repr__(self) -> str:
        return (
            f"ContSteal(temperature={self.temperature}, self_negatives={self.self_negatives}, "
            f"crop_scale={self.crop_scale}, jitter={self.jitter}, "
            f"query_batch={self.query_batch}, recipe={self.recipe})"
        )

    def view(self, x: Tensor, g: torch.Generator) -> Tensor:
        """One random view of a batch in [0, 1]."""
        j = self.jitter
        return simclr_view(x, crop_scale=self.crop_scale, jitter=j, hue=j / 4, generator=g)

    def loss(self, s: Tensor, t: Tensor) -> Tensor:
        return contsteal_loss(s, t, self.temperature, self_negatives=self.self_negatives)

    def run(
        self,
        oracle: Oracle,
        *,
        pool: QueryPool | None = None,
        surrogate: nn.Module,
        budget: int,
        seed: int = 0,
        device: torch.device | str | None = None,
        monitor: Monitor | None = None,
        cache: EmbeddingCache | None = None,
    ) -> AttackResult:
        """Buy the victim's embedding of one view of ``budget`` images, then train the surrogate
        on fresh views of the same images against them."""
        if budget < 2:
            raise ValueError(f"Cont-Steal needs at least 2 images for negatives, got {budget}")
        view_name = f"simclr-view(scale={self.crop_scale}, jitter={self.jitter})"
        return steal_encoder(
            self,
            oracle,
            pool,
            surrogate=surrogate,
            monitor=monitor,
            budget=budget,
            seed=seed,
            device=device,
            cache=cache,
            query_batch=self.query_batch,
            recipe=self.recipe,
            loss_fn=self.loss,
            victim_view=self.view,
            view_name=view_name,
            train_augment=self.view,
        )
