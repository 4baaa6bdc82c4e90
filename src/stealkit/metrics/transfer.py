"""Transfer adversarial attacks: craft on the stolen model, measure on the victim.

L-infinity attacks as pure functions, in the manner of torchattacks:

- FGSM (Goodfellow, Shlens and Szegedy, ICLR 2015, https://arxiv.org/abs/1412.6572):
  ``x' = clip(x + eps * sign(grad_x L(f(x), y)))``.
- BIM / I-FGSM (Kurakin, Goodfellow and Bengio, ICLR 2017 workshop,
  https://arxiv.org/abs/1607.02533): ``steps`` FGSM steps of ``step_size``, each projected back
  into the eps-ball around x and into the value range.
- PGD (Madry et al., ICLR 2018, https://arxiv.org/abs/1706.06083): BIM from a uniform random
  start inside the eps-ball.

L is the cross-entropy; untargeted attacks climb it for the true label ``y``, targeted attacks
descend it for the target label (pass the targets as ``y``). Gradients are taken with
``torch.autograd.grad`` on the inputs only, so the model's parameter gradients are untouched; the
model is run in eval mode and put back in its previous mode afterwards. Inputs, labels and model
must be on the same device.

Transfer success is measured on the victim through a callable (in real use, an oracle's labels:
``lambda x: oracle.query(x).labels()``), so every victim evaluation is counted by the ledger.

Example:
    >>> keep = victim_predict(x) == y                    # only images the victim gets right
    >>> x_adv = pgd(stolen, x[keep], y[keep], eps=0.1, steps=20, step_size=0.01)
    >>> transfer_success(victim_predict, x_adv, y[keep], targeted=False)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Clip = tuple[float, float]


def _check(eps: float, steps: int = 1, step_size: float = 1.0) -> None:
    if eps < 0 or steps < 1 or step_size <= 0:
        raise ValueError(
            f"need eps >= 0, steps >= 1, step_size > 0; got {eps}, {steps}, {step_size}"
        )


def _signed_grad(model: nn.Module, x: Tensor, y: Tensor, targeted: bool) -> Tensor:
    """sign of the gradient of the attacker's objective (+CE untargeted, -CE targeted) at x."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(model(x), y, reduction="sum")
        (grad,) = torch.autograd.grad(-loss if targeted else loss, x)
    return grad.sign()


def _project(x_adv: Tensor, x: Tensor, eps: float, clip: Clip) -> Tensor:
    """Into the L-inf ball of radius eps around x, then into the value range."""
    return torch.min(torch.max(x_adv, x - eps), x + eps).clamp(*clip).detach()


def _in_eval(model: nn.Module, attack: Callable[[], Tensor]) -> Tensor:
    was_training = model.training
    model.eval()
    try:
        return attack()
    finally:
        model.train(was_training)


def fgsm(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    *,
    targeted: bool = False,
    clip: Clip = (0.0, 1.0),
) -> Tensor:
    """One signed-gradient step of size eps.

    Args:
        model: maps (N, C, H, W) inputs in ``clip`` to logits (N, K).
        x: clean inputs (N, C, H, W).
        y: (N,) true labels, or target labels when ``targeted``.
        eps: L-inf radius.

    Returns:
        (N, C, H, W) adversarial inputs with ``|x_adv - x|_inf <= eps`` inside ``clip``.
    """
    _check(eps)
    return _in_eval(
        model, lambda: _project(x + eps * _signed_grad(model, x, y, targeted), x, eps, clip)
    )


def pgd(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    steps: int,
    step_size: float,
    *,
    targeted: bool = False,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    clip: Clip = (0.0, 1.0),
) -> Tensor:
    """Projected gradient descent under L-inf: ``steps`` signed steps of ``step_size``.

    ``random_start`` draws the start uniformly from the eps-ball, from ``generator`` (on any
    device) when given; without it this is BIM. Arguments and result as for ``fgsm``.
    """
    _check(eps, steps, step_size)

    def attack() -> Tensor:
        x_adv = x.detach().clone()
        if random_start:
            dev = generator.device if generator is not None else x.device
            noise = torch.rand(x.shape, generator=generator, device=dev, dtype=x.dtype).to(x.device)
            x_adv = _project(x_adv + (2 * noise - 1) * eps, x, eps, clip)
        for _ in range(steps):
            x_adv = _project(
                x_adv + step_size * _signed_grad(model, x_adv, y, targeted), x, eps, clip
            )
        return x_adv

    return _in_eval(model, attack)


def bim(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    eps: float,
    steps: int,
    step_size: float,
    *,
    targeted: bool = False,
    clip: Clip = (0.0, 1.0),
) -> Tensor:
    """The basic iterative method: PGD from the clean input (no random start)."""
    return pgd(model, x, y, eps, steps, step_size, targeted=targeted, random_start=False, clip=clip)


def transfer_success(
    victim_predict: Callable[[Tensor], Tensor],
    x_adv: Tensor,
    y: Tensor,
    *,
    targeted: bool,
    target: Tensor | None = None,
) -> float:
    """Fraction of adversarial inputs that fool the victim.

    Untargeted: the victim's label differs from the true label ``y``. Targeted: the victim's label
    equals ``target``. The rate is meant over images the victim classifies correctly when clean;
    this function cannot check that (it never sees the clean images), so the caller passes only
    those, and otherwise clean errors count as untargeted successes.

    Args:
        victim_predict: (N, C, H, W) -> (N,) labels; in real use it queries an oracle.
        x_adv: adversarial inputs (N, C, H, W).
        y: (N,) true labels.
        targeted: whether to score hits on ``target`` instead of misses of ``y``.
        target: (N,) target labels, required when ``targeted``.
    """
    if len(x_adv) != len(y):
        raise ValueError(f"{len(x_adv)} inputs but {len(y)} labels")
    if targeted and (target is None or len(target) != len(y)):
        raise ValueError("a targeted success rate needs one target label per input")
    if len(y) == 0:
        return float("nan")
    pred = victim_predict(x_adv).to(y.device)
    if targeted:
        assert target is not None
        return float((pred == target.to(y.device)).float().mean())
    return float((pred != y).float().mean())


def random_targets(y: Tensor, num_classes: int, generator: torch.Generator) -> Tensor:
    """One target label per input, uniform over the classes other than its true label."""
    if num_classes < 2:
        raise ValueError("targeted attacks need at least two classes")
    shift = torch.randint(1, num_classes, y.shape, generator=generator)
    return (y.cpu() + shift) % num_classes


def transfer_table(
    source: nn.Module,
    victim_predict: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    *,
    num_classes: int,
    methods: Sequence[str] = ("fgsm", "bim", "pgd"),
    eps: float,
    steps: int,
    step_size: float,
    targeted: Sequence[bool] = (False, True),
    seed: int = 0,
    device: torch.device | str = "cpu",
    batch_size: int = 256,
) -> list[dict[str, float | str | bool | int]]:
    """Craft each (method, targeted) attack on ``source`` and score it on the victim.

    ``x`` and ``y`` should be images the victim classifies correctly (see ``transfer_success``).
    Targets of targeted attacks come from ``random_targets`` with ``seed``, so two source models
    attacked with the same seed are compared on the same targets. Each row also gives the
    attack's success on the source model itself (white-box), which tells a weak transfer from a
    weak attack.
    """
    unknown = sorted(set(methods) - {"fgsm", "bim", "pgd"})
    if unknown:
        raise ValueError(f"unknown transfer attack(s) {unknown}; use fgsm, bim or pgd")
    dev = torch.device(device)
    source = source.to(dev)
    rows: list[dict[str, float | str | bool | int]] = []
    for is_targeted in targeted:
        gen = torch.Generator().manual_seed(seed)
        target = random_targets(y, num_classes, gen) if is_targeted else None
        for method in methods:
            adv = []
            for i in range(0, len(x), batch_size):
                xb = x[i : i + batch_size].to(dev)
                yb = (target if target is not None else y)[i : i + batch_size].to(dev)
                if method == "fgsm":
                    a = fgsm(source, xb, yb, eps, targeted=is_targeted)
                elif method == "bim":
                    a = bim(source, xb, yb, eps, steps, step_size, targeted=is_targeted)
                else:
                    a = pgd(
                        source, xb, yb, eps, steps, step_size, targeted=is_targeted, generator=gen
                    )
                adv.append(a.cpu())
            x_adv = torch.cat(adv) if adv else x[:0]
            with torch.no_grad():
                source.eval()
                src_pred = (
                    torch.cat(
                        [
                            source(x_adv[i : i + batch_size].to(dev)).argmax(1).cpu()
                            for i in range(0, len(x_adv), batch_size)
                        ]
                    )
                    if len(x_adv)
                    else y[:0]
                )
            white_box = (
                (
                    float((src_pred == target).float().mean())
                    if target is not None
                    else float((src_pred != y.cpu()).float().mean())
                )
                if len(y)
                else float("nan")
            )
            rows.append(
                {
                    "method": method,
                    "targeted": is_targeted,
                    "eps": eps,
                    "n": len(y),
                    "success": transfer_success(
                        victim_predict, x_adv, y.cpu(), targeted=is_targeted, target=target
                    ),
                    "white_box_success": white_box,
                }
            )
    return rows
