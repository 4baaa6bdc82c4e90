"""Adaptive Misinformation: wrong answers for queries that look out of distribution.

Kariyappa and Qureshi, "Defending Against Model Stealing Attacks with Adaptive Misinformation",
CVPR 2020, https://arxiv.org/abs/1911.07100.

Extraction attacks without the victim's data query out-of-distribution images; honest users
mostly do not. The victim's maximum softmax probability (MSP) scores how in-distribution a query
is, and the answer moves, smoothly, from the victim's posterior p to a misinformation posterior
p_mis as the MSP falls below a threshold tau:

    alpha(x) = 1 / (1 + exp(nu * (max_i p_i(x) - tau)))
    answer   = (1 - alpha) * p + alpha * p_mis

The paper's p_mis is a second network trained to put its mass away from the correct class. Here
p_mis is a pure function of p, ``normalize(1 / p)``: the victim's own ranking reversed, so the
least likely class becomes the most likely one (what softmax of the negated logits gives). That
is a stated departure: no misinformation network is trained.
"""

from __future__ import annotations

import torch
from torch import Tensor

from stealkit.defenses.perturbation import Defense
from stealkit.oracle.probs import normalize_rows
from stealkit.oracle.response import OutputKind, Response


def misinformation_weight(probs: Tensor, tau: float, nu: float) -> Tensor:
    """alpha per row (N,): near 1 for a maximum softmax probability below ``tau``, near 0
    above it, with steepness ``nu``."""
    return torch.sigmoid(-nu * (probs.max(dim=1).values - tau))


def reversed_posterior(probs: Tensor, eps: float = 1e-6) -> Tensor:
    """normalize(1 / p): the victim's ranking of classes turned upside down."""
    return normalize_rows(1.0 / probs.clamp_min(eps))


def adaptive_misinformation(probs: Tensor, tau: float, nu: float) -> Tensor:
    """(1 - alpha) p + alpha p_mis, row by row."""
    alpha = misinformation_weight(probs, tau, nu)[:, None]
    return (1 - alpha) * probs + alpha * reversed_posterior(probs)


class AdaptiveMisinformation(Defense):
    """Answers that turn into misinformation as queries look out of distribution.

    Args:
        tau: the maximum softmax probability below which a query counts as out of distribution.
        nu: how sharply the answer switches around ``tau`` (the paper uses a steep sigmoid).
    """

    needs = OutputKind.PROBABILITIES
    gives = OutputKind.PROBABILITIES

    def __init__(self, *, tau: float = 0.5, nu: float = 100.0) -> None:
        if not 0.0 < tau < 1.0:
            raise ValueError(f"tau must lie in (0, 1), got {tau}")
        if nu <= 0:
            raise ValueError(f"nu must be positive, got {nu}")
        self.tau, self.nu = tau, nu

    def apply(self, response: Response) -> Response:
        probs = response.probs().float()
        out = adaptive_misinformation(probs, self.tau, self.nu)
        return Response(OutputKind.PROBABILITIES, out, response.num_classes)

    def __repr__(self) -> str:
        return f"AdaptiveMisinformation(tau={self.tau}, nu={self.nu})"
