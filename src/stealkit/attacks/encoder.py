"""Conventional encoder stealing: query each image once, regress the victim's embeddings.

The baseline of the encoder-stealing literature. Dziedzic, Dhawan, Kaleem, Guan and Papernot, "On
the Difficulty of Defending Self-Supervised Learning against Model Extraction", ICML 2022
(https://arxiv.org/abs/2205.07890), train a stolen encoder directly on the victim's representations
of the attacker's images with MSE, InfoNCE, soft nearest neighbour or Wasserstein losses; Sha et
al. (CVPR 2023) call the MSE version the "conventional" attack. Here the loss is any of
``stealkit.losses.stealing.STEALING_LOSSES`` by name:

    min_theta  sum_i  L( g(f_theta(x_i)), v(x_i) )

with f_theta the surrogate (any architecture), g a linear map to the victim's embedding size when
the two differ, v the victim encoder reached only through the oracle, each v(x_i) bought once.
"""

from __future__ import annotations

import torch
from torch import nn

from stealkit.attacks.base import EMBEDDING_OUTPUTS, Attack, AttackResult, Monitor, TrainRecipe
from stealkit.attacks.encoder_common import ENCODER_RECIPE, EmbeddingCache, steal_encoder
from stealkit.data.augment import random_affine
from stealkit.data.pool import QueryPool
from stealkit.losses.stealing import CONTRASTIVE, get_stealing_loss
from stealkit.oracle.base import Oracle


class EncoderStealing(Attack):
    """Steal an encoder by regressing its embeddings of a random transfer set.

    Args:
        loss: a name in ``STEALING_LOSSES``: "mse", "cosine", "infonce", "nt-xent", "soft-nn",
            "wasserstein" or "contsteal".
        temperature: for the contrastive losses; ``None`` keeps each loss's default.
        query_batch: images sent per oracle call.
        recipe: training of the surrogate (``epochs``, ``min_steps``, ``batch_size``, ``lr``,
            ``weight_decay``); ``recipe.augment`` applies a small random affine warp to the
            surrogate's input while keeping the bought embedding as its target.

    Example:
        >>> attack = EncoderStealing(loss="cosine")
        >>> result = attack.run(oracle, pool=pool, surrogate=build_model("resnet8", ...), budget=5000)
        >>> result.surrogate(x)  # (N, victim embedding size)
    """

    steals = "encoder"
    accepts = EMBEDDING_OUTPUTS

    def __init__(
        self,
        *,
        loss: str = "mse",
        temperature: float | None = None,
        query_batch: int = 256,
        recipe: TrainRecipe | None = None,
    ) -> None:
        if query_batch < 1:
            raise ValueError(f"query_batch must be >= 1, got {query_batch}")
        params = {} if temperature is None else {"temperature": temperature}
        self.loss_fn = get_stealing_loss(loss, **params)  # validates name and temperature
        self.loss, self.temperature = loss, temperature
        self.query_batch = query_batch
        self.recipe = recipe or ENCODER_RECIPE

    def __repr__(self) -> str:
        return (
            f"EncoderStealing(loss={self.loss!r}, temperature={self.temperature}, "
            f"query_batch={self.query_batch}, recipe={self.recipe})"
        )

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
        """Buy ``budget`` embeddings (none for images already in ``cache``) and fit the surrogate."""
        if self.loss in CONTRASTIVE and budget < 2:
            raise ValueError(f"the {self.loss} loss needs at least 2 images, got budget {budget}")
        warp = None
        if self.recipe.augment:
            warp = lambda x, g: random_affine(  # noqa: E731
                x, max_shift=0.08, max_rotate=12.0, scale=(0.9, 1.1), generator=g
            )
        result = steal_encoder(
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
            loss_fn=self.loss_fn,
            train_augment=warp,
        )
        result.info["loss"] = self.loss
        return result
