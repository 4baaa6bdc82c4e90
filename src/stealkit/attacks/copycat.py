"""Copycat CNN: stealing knowledge by persuading confession with random non-labeled data.

Correia-Silva, Berriel, Badue, de Souza and Oliveira-Santos, IJCNN 2018.
https://arxiv.org/abs/1806.05476

Label-only stealing: random natural images from outside the problem domain are sent to the
victim, only its top-1 label is kept (whatever else the API reveals), and the copycat is trained
on these hard labels with cross-entropy. Because it ignores scores, CopyCat is unaffected by any
defence that keeps the top-1 class.
"""

from __future__ import annotations

import torch
from torch import nn

from stealkit.attacks.base import (
    Attack,
    AttackResult,
    Monitor,
    TrainRecipe,
    pool_spend_limit,
    train_surrogate,
)
from stealkit.data.pool import QueryPool
from stealkit.oracle.base import Oracle
from stealkit.train.loop import default_device


class CopyCat(Attack):
    """Args:
    query_batch: inputs sent per oracle call.
    recipe: training of the copycat on the labelled transfer set.
    """

    def __init__(self, *, query_batch: int = 128, recipe: TrainRecipe | None = None) -> None:
        if query_batch < 1:
            raise ValueError(f"query_batch must be >= 1, got {query_batch}")
        self.query_batch = query_batch
        self.recipe = recipe or TrainRecipe()

    def __repr__(self) -> str:
        return f"CopyCat(query_batch={self.query_batch}, recipe={self.recipe})"

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
    ) -> AttackResult:
        pool = self.require_pool(pool)
        self.check_oracle(oracle)
        budget = pool_spend_limit(oracle, pool, budget)
        gen = torch.Generator().manual_seed(seed)
        order = torch.randperm(len(pool), generator=gen)[:budget]
        start = oracle.ledger.spent
        xs, labels = [], []
        for i in range(0, budget, self.query_batch):
            x = pool.images(order[i : i + self.query_batch])
            xs.append(x)
            labels.append(oracle.query(x).labels())
        y = torch.cat(labels)
        dev = torch.device(device) if device is not None else default_device()
        losses = train_surrogate(
            surrogate, torch.cat(xs), y, self.recipe, hard=True, seed=seed, device=dev
        )
        if monitor is not None:
            monitor(surrogate, oracle.ledger.spent - start)
        return AttackResult(
            surrogate=surrogate.eval(),
            queries=oracle.ledger.spent - start,
            info={
                "transfer_set": len(y),
                "label_histogram": torch.bincount(y).tolist(),
                "final_train_loss": losses[-1],
            },
        )
