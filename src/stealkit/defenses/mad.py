"""MAD: prediction poisoning by maximising the angular deviation of the thief's gradient.

Orekondy, Schiele and Fritz, "Prediction Poisoning: Towards Defenses Against DNN Model Stealing
Attacks", ICLR 2020, https://arxiv.org/abs/1906.10908.

A thief trains its copy F_A(x; w) on the answers y, following the gradient of its loss
-sum_k y_k log F_A(x; w)_k, i.e. -G^T y with G = d log F_A(x; w) / d w (K x D, one row per class).
The defender, who cannot see w, takes a surrogate F_A of its own and answers y~ instead of the
victim's posterior y* = p(x), chosen to turn that gradient as far as possible:

    a       = G^T y* / ||G^T y*||
    maximise  || G^T y~ / ||G^T y~|| - a ||^2
    s.t.      ||y~ - y*||_p <= epsilon  (p = 1 or 2),   y~ in the probability simplex

The objective is convex in y~, so the paper's heuristic solver looks at the simplex's vertices:
it takes the best vertex e_k and moves towards it as far as the budget allows,

    k       = argmax_j || G^T e_j / ||G^T e_j|| - a ||^2
    y~      = (1 - alpha) y* + alpha e_k,   alpha = min(1, epsilon / ||e_k - y*||_p)

(closed form: ||e_k - y*||_1 = 2 (1 - y*_k)). MAD-argmax keeps the top-1 class c = argmax y*:
a move towards e_k != e_c keeps it while (1 - alpha)(y*_c - y*_k) > alpha, i.e.
alpha < d / (1 + d) with d = y*_c - y*_k; here alpha is capped at (d - margin) / (1 + d). Each
vertex's move is capped so, and the move whose answer reaches the largest objective is taken
(a move towards e_c never changes top-1 and is never capped).

G is the Jacobian of the surrogate's last linear layer only: for logits z = W h + b and
p = softmax(z), d log p_k / d W = (e_k - p) h^T and d log p_k / d b = e_k - p. That departs
from the paper's G over all of w (too costly per query on a CPU); the authors' repository README
says its MAD, too, uses "jacobians (from the FC-layer)" of the surrogate. Their surrogate is "a
randomly-initialized model exhibiting chance-level performance" (the repository's README), and so
is this one: ``surrogate_arch`` built with weights drawn from ``seed``, never trained; a
defender may pass a trained ``surrogate`` of its own instead.

Every term of the objective is an inner product of gradients G^T y, so it depends on G only
through the Gram matrix M = G G^T (K x K): ||G^T y||^2 = y^T M y. For the last layer
M = (||h||^2 + 1) (I - 1 p^T)(I - p 1^T); its scale cancels in the angle, so the objective then
depends on the surrogate only through its posterior p. The defence forms M in closed form
(K^2 numbers per query) and never G (K^2 (H + 1)); ``mad_perturb`` takes an explicit G.

Not verified from the paper's text (the PDF was not available here): the exact MAD-argmax
solver (the capped-vertex choice above is this module's), the margin and the handling of a
budget larger than the simplex (alpha <= 1 gives the vertex itself).
"""

from __future__ import annotations

import logging
import math

import torch
from torch import Tensor, nn

from stealkit.defenses.perturbation import Defense
from stealkit.oracle.response import OutputKind, Response

logger = logging.getLogger(__name__)

NORMS = ("l1", "l2")
ARGMAX_MARGIN = 1e-5  # how far above every other class the kept top-1 class stays
_CHUNK = 1024  # rows per surrogate forward pass
_EPS = 1e-12


def last_layer_jacobian(h: Tensor, probs: Tensor) -> Tensor:
    """G (N, K, K * (H + 1)): d log p_k / d (W, b) of a last layer z = W h + b, p = softmax(z).

    Row k is (e_k - p) h^T flattened row by row (W's K * H entries), then e_k - p (b's K).
    """
    n, k = probs.shape
    jac = torch.eye(k, dtype=probs.dtype, device=probs.device) - probs[:, None, :]  # (N, K, K)
    g_w = (jac[..., None] * h[:, None, None, :]).reshape(n, k, -1)
    return torch.cat([g_w, jac], dim=2)


def last_layer_gram(h: Tensor, probs: Tensor) -> Tensor:
    """G G^T (N, K, K) of ``last_layer_jacobian(h, probs)`` without forming G:
    (||h||^2 + 1) (delta_kj - p_k - p_j + ||p||^2)."""
    k = probs.shape[1]
    eye = torch.eye(k, dtype=probs.dtype, device=probs.device)
    pp = probs.pow(2).sum(dim=1)[:, None, None]
    inner = eye - probs[:, :, None] - probs[:, None, :] + pp
    return (h.pow(2).sum(dim=1) + 1)[:, None, None] * inner


def jacobian_gram(G: Tensor) -> Tensor:
    """G G^T (N, K, K): every inner product of the gradients G^T y depends on G only through it."""
    return G @ G.transpose(1, 2)


def _unit(v: Tensor, eps: float = _EPS) -> Tensor:
    return v / v.norm(dim=-1, keepdim=True).clamp_min(eps)


def angular_deviation(G: Tensor, y_star: Tensor, y_tilde: Tensor) -> Tensor:
    """|| G^T y~ / ||G^T y~|| - G^T y* / ||G^T y*|| ||^2 per row (N,), in [0, 4]."""
    a = _unit(torch.einsum("nkd,nk->nd", G, y_star))
    b = _unit(torch.einsum("nkd,nk->nd", G, y_tilde))
    return (b - a).pow(2).sum(dim=1)


def _deviation(qa: Tensor, qb: Tensor, cross: Tensor) -> Tensor:
    """||a / |a| - b / |b| ||^2 from |a|^2, |b|^2 and a.b (a zero vector's unit is zero)."""
    na, nb = qa.clamp_min(0).sqrt().clamp_min(_EPS), qb.clamp_min(0).sqrt().clamp_min(_EPS)
    return (qa / na**2 + qb / nb**2 - 2 * cross / (na * nb)).clamp_min(0)


def vertex_objectives(gram: Tensor, y_star: Tensor) -> Tensor:
    """The objective at every vertex e_k of the simplex (N, K), from ``gram`` = G G^T:
    || g_k / ||g_k|| - a ||^2 with g_k = G^T e_k."""
    s = torch.einsum("nkj,nj->nk", gram, y_star)  # g_k . G^T y*
    q_star = (s * y_star).sum(dim=1, keepdim=True)
    return _deviation(torch.diagonal(gram, dim1=1, dim2=2), q_star.expand_as(s), s)


def max_alpha(y_star: Tensor, target: Tensor, epsilon: float, norm: str) -> Tensor:
    """The largest alpha in [0, 1] with ||alpha (target - y*)||_p <= epsilon, per row (N,).

    A target equal to y* gets alpha = 1 (the move changes nothing)."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if epsilon < 0:
        raise ValueError(f"epsilon must be >= 0, got {epsilon}")
    dist = (target - y_star).norm(p=1 if norm == "l1" else 2, dim=-1)
    return torch.where(dist > 0, (epsilon / dist.clamp_min(1e-30)).clamp(max=1.0), 1.0)


def argmax_alpha_cap(y_star: Tensor, k: Tensor, margin: float = ARGMAX_MARGIN) -> Tensor:
    """The largest alpha for which (1 - alpha) y* + alpha e_k keeps argmax y* on top by at least
    ``margin``: 1 where k is the top class c, else max(0, (d - margin) / (1 + d)) with
    d = y*_c - y*_k. ``k`` is (N,) or (N, M) (M vertices per row); the cap has its shape."""
    kk = k if k.dim() == 2 else k[:, None]
    c = y_star.argmax(dim=1, keepdim=True)
    d = y_star.gather(1, c) - y_star.gather(1, kk)
    cap = ((d - margin) / (1 + d)).clamp(min=0.0)
    cap = torch.where(kk == c, torch.ones_like(cap), cap)
    return cap if k.dim() == 2 else cap.squeeze(1)


def mad_perturb_gram(
    probs: Tensor, gram: Tensor, *, epsilon: float, norm: str = "l1", argmax: bool = False
) -> Tensor:
    """``mad_perturb`` from the Gram matrix G G^T (N, K, K) instead of G itself."""
    if probs.dim() != 2 or gram.shape != (*probs.shape, probs.shape[1]):
        raise ValueError(f"need probs (N, K) and gram (N, K, K), got {probs.shape}, {gram.shape}")
    y, gram = probs.double(), gram.double()
    n, k = y.shape
    eye = torch.eye(k, dtype=y.dtype, device=y.device)
    if not argmax:
        target = eye[vertex_objectives(gram, y).argmax(dim=1)]
        alpha = max_alpha(y, target, epsilon, norm)[:, None]
        return ((1 - alpha) * y + alpha * target).to(probs.dtype)
    vertices = eye.expand(n, k, k)  # (N, K candidates, K)
    alpha = max_alpha(y[:, None, :], vertices, epsilon, norm)  # (N, K)
    alpha = torch.minimum(alpha, argmax_alpha_cap(y, torch.arange(k, device=y.device).expand(n, k)))
    # G^T y~ = (1 - alpha) s + alpha g_k with s = G^T y*: its norm and its product with s
    s = torch.einsum("nkj,nj->nk", gram, y)
    q_star = (s * y).sum(dim=1, keepdim=True)
    diag = torch.diagonal(gram, dim1=1, dim2=2)
    q = (1 - alpha) ** 2 * q_star + 2 * alpha * (1 - alpha) * s + alpha**2 * diag
    cross = (1 - alpha) * q_star + alpha * s
    best = _deviation(q, q_star.expand_as(q), cross).argmax(dim=1)
    a = alpha.gather(1, best[:, None])
    return ((1 - a) * y + a * eye[best]).to(probs.dtype)


def mad_perturb(
    probs: Tensor, G: Tensor, *, epsilon: float, norm: str = "l1", argmax: bool = False
) -> Tensor:
    """MAD's answer y~ (N, K) for posteriors ``probs`` (N, K) and Jacobians ``G`` (N, K, D).

    Without ``argmax``: move towards the best vertex by the largest alpha within ``epsilon``.
    With it: cap every vertex's move so that top-1 stays, and take the best capped move.
    """
    if G.dim() != 3 or G.shape[:2] != probs.shape:
        raise ValueError(f"need probs (N, K) and G (N, K, D), got {probs.shape} and {G.shape}")
    return mad_perturb_gram(
        probs, jacobian_gram(G.double()), epsilon=epsilon, norm=norm, argmax=argmax
    )


def last_linear(model: nn.Module) -> nn.Linear:
    """The last ``nn.Linear`` registered in ``model`` (ValueError when it has none)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ValueError(
            f"MAD's surrogate {type(model).__name__} has no nn.Linear; pass a model whose "
            "logits come out of a final linear layer"
        )
    return linears[-1]


def penultimate_and_logits(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """h (the input to the last nn.Linear) and the logits of ``model`` on ``x``."""
    layer = last_linear(model)
    seen: dict[str, Tensor] = {}

    def keep(_: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        seen["h"], seen["z"] = inputs[0], output

    handle = layer.register_forward_hook(keep)
    try:
        with torch.no_grad():
            z = model(x)
    finally:
        handle.remove()
    if "h" not in seen or seen["h"].dim() != 2 or not torch.equal(seen["z"], z):
        raise ValueError(
            f"the last nn.Linear of {type(model).__name__} must take (N, H) features and give "
            "the model's logits; pass a surrogate whose output is that layer's output"
        )
    return seen["h"], z


class Mad(Defense):
    """MAD in front of a classifier API: answers poisoned within an L1 or L2 budget.

    Args:
        epsilon: the utility budget ||y~ - y*||_p (L1 answers move at most 2, L2 at most sqrt 2).
        norm: "l1" or "l2".
        argmax: keep every answer's top-1 class (MAD-argmax).
        surrogate_arch: a registered architecture (stealkit.models) for the defender's own
            randomly initialised surrogate, built on the first answer from the queries' shape.
        seed: seeds the surrogate's weights.
        surrogate: a model of the defender's own (inputs as the oracle receives them, logits
            out of a final nn.Linear) instead of ``surrogate_arch``.
    """

    needs = OutputKind.PROBABILITIES
    gives = OutputKind.PROBABILITIES

    def __init__(
        self,
        *,
        epsilon: float = 0.5,
        norm: str = "l1",
        argmax: bool = False,
        surrogate_arch: str = "cnn3",
        seed: int = 0,
        surrogate: nn.Module | None = None,
    ) -> None:
        from stealkit.models.registry import model_names

        if not (epsilon > 0 and math.isfinite(epsilon)):
            raise ValueError(f"epsilon must be a positive number, got {epsilon}")
        if norm not in NORMS:
            raise ValueError(f"norm must be 'l1' or 'l2', got {norm!r}")
        if surrogate is None and surrogate_arch not in model_names():
            raise ValueError(
                f"unknown surrogate_arch {surrogate_arch!r}; registered: {', '.join(model_names())}"
            )
        if surrogate is not None:
            last_linear(surrogate)  # fail now, not on the first query
        self.epsilon, self.norm, self.argmax = float(epsilon), norm, bool(argmax)
        self.surrogate_arch, self.seed = surrogate_arch, int(seed)
        self._own = surrogate
        self._surrogate: nn.Module | None = surrogate

    def _model_for(self, x: Tensor, num_classes: int) -> nn.Module:
        if self._surrogate is None:
            from stealkit.models.registry import build_model

            _, c, height, width = x.shape
            if height != width:
                raise ValueError(
                    f"surrogate_arch {self.surrogate_arch!r} needs square images, got "
                    f"{height}x{width}; pass a surrogate of your own"
                )
            with torch.random.fork_rng(devices=[]):  # seeded weights, global RNG untouched
                torch.manual_seed(self.seed)
                net = build_model(
                    self.surrogate_arch, in_channels=c, num_classes=num_classes, image_size=height
                )
            self._surrogate = net
            logger.debug("MAD surrogate %s built for %s inputs", self.surrogate_arch, x.shape[1:])
        return self._surrogate.to(x.device).eval()

    def answer(self, x: Tensor, response: Response, client: str) -> Response:
        y_star = response.probs().float()
        c = int(y_star.shape[1])
        model = self._model_for(x, c)
        out = []
        for i in range(0, len(x), _CHUNK):
            h, z = penultimate_and_logits(model, x[i : i + _CHUNK])
            if z.shape[1] != c:
                raise ValueError(f"MAD's surrogate gives {z.shape[1]} classes, the victim {c}")
            gram = last_layer_gram(h.double().cpu(), z.double().cpu().softmax(dim=1))
            y = y_star[i : i + _CHUNK]
            out.append(
                mad_perturb_gram(y, gram, epsilon=self.epsilon, norm=self.norm, argmax=self.argmax)
            )
        return Response(OutputKind.PROBABILITIES, torch.cat(out), response.num_classes or c)

    def apply(self, response: Response) -> Response:
        raise TypeError("MAD needs the queried inputs: call answer(x, response, client)")

    def reset(self) -> None:
        self._surrogate = self._own  # a built surrogate is rebuilt from the seed

    def __repr__(self) -> str:
        own = f", surrogate={type(self._own).__name__}" if self._own is not None else ""
        arch = "" if own else f", surrogate_arch={self.surrogate_arch!r}, seed={self.seed}"
        return f"Mad(epsilon={self.epsilon}, norm={self.norm!r}, argmax={self.argmax}{arch}{own})"
