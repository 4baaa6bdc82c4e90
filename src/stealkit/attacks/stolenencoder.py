"""StolenEncoder: stealing a pre-trained encoder with one query per image.

Liu, Jia, Liu and Gong, "StolenEncoder: Stealing Pre-trained Encoders in Self-supervised
Learning", ACM CCS 2022. https://arxiv.org/abs/2201.05889

The victim's embedding v(x) of each original image is bought once and is the target both for the
surrogate's embedding of x and for its embeddings of k augmented views of x, because a
self-supervised encoder maps an image and its augmentations close together:

    min_theta  sum_x  d(f(x), v(x)) + (lambda / k) sum_{j=1..k} d(f(aug_j(x)), v(x))

with d = -cos (the paper) or the L2 distance between L2-normalised embeddings (the authors' code).
The views follow the authors' code: horizontal flip, colour jitter, grayscale, no crop.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stealkit.attacks.base import EMBEDDING_OUTPUTS, Attack, AttackResult, Monitor, TrainRecipe
from stealkit.attacks.encoder_common import ENCODER_RECIPE, EmbeddingCache, steal_encoder
from stealkit.data.augment import stolenencoder_view
from stealkit.data.pool import QueryPool
from stealkit.oracle.base import Oracle

DISTANCES = ("cosine", "l2")


def stolenencoder_loss(
    s: Tensor, s_views: list[Tensor], t: Tensor, lam: float = 1.0, distance: str = "cosine"
) -> Tensor:
    """d(s, t) + lam / k * sum_j d(s_views[j], t), each term a mean over the batch.

    ``s`` (N, D): the surrogate's embeddings of the originals; ``s_views``: k tensors (N, D) of
    its embeddings of augmented views; ``t`` (N, D): the victim's embeddings of the originals.
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    t = F.normalize(t.detach(), dim=1)

    def d(a: Tensor) -> Tensor:
        a = F.normalize(a, dim=1)
        if distance == "cosine":
            return -(a * t).sum(1).mean()
        return (a - t).norm(dim=1).mean()

    if not s_views:
        return d(s)
    return d(s) + lam * torch.stack([d(v) for v in s_views]).mean()


class StolenEncoder(Attack):
    """Args:
    lam: weight lambda of the augmented views' term (0: only the originals).
    views: k, augmented views per image and step.
    distance: "cosine" (the paper) or "l2" (between normalised embeddings, the authors' code).
    query_batch: images sent per oracle call.
    recipe: training of the surrogate (``recipe.augment`` is unused: the views are the attack's).
    """

    steals = "encoder"
    accepts = EMBEDDING_OUTPUTS

    def __init__(
        self,
        *,
        lam: float = 1.0,
        views: int = 1,
        distance: str = "cosine",
        query_batch: int = 256,
        recipe: TrainRecipe | None = None,
    ) -> None:
        if lam < 0 or views < 0 or query_batch < 1:
            raise ValueError(
                f"need lam >= 0, views >= 0, query_batch >= 1, got {lam}, {views}, {query_batch}"
            )
        if distance not in DISTANCES:
            raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
        self.lam, self.views, self.distance = lam, views, distance
        self.query_batch = query_batch
        self.recipe = recipe or ENCODER_RECIPE

    def __repr__(self) -> str:
        return (
            f"StolenEncoder(lam={self.lam}, views={self.views}, distance={self.distance!r}, "
            f"query_batch={self.query_batch}, recipe={self.recipe})"
        )

    def _with_views(self, x: Tensor, g: torch.Generator) -> Tensor:
        """[x; aug_1(x); ...; aug_k(x)]: the surrogate embeds all k + 1 in one batch."""
        return torch.cat([x] + [stolenencoder_view(x, generator=g) for _ in range(self.views)])

    def loss(self, out: Tensor, t: Tensor) -> Tensor:
        parts = list(out.split(len(t)))
        return stolenencoder_loss(parts[0], parts[1:], t, self.lam, self.distance)

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
        """Buy the victim's embedding of ``budget`` original images (none already in ``cache``),
        then train the surrogate on the originals and their augmented views against them."""
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
            train_augment=self._with_views,
        )
