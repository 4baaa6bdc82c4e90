"""Small image generators for data-free stealing: noise (and a class) in, images in [0, 1] out.

The layout is the DCGAN-style generator of DFAD and DFME (Fang et al. 2019; Truong et al.,
CVPR 2021, https://arxiv.org/abs/2011.14779): a linear projection of the noise to a
(2 ngf, s/4, s/4) map, then two nearest-neighbour x2 upsamplings each followed by 3x3
convolutions with batch norm and leaky ReLU, then one of three tails from the output convolution
to images in [0, 1], the value range of every stealkit query (``tail``):

- ``"bn-tanh"`` (the default, DFAD/DFME's form): a batch norm without affine parameters on the
  output channels, then ``(tanh(t) + 1) / 2``. The batch norm makes every output channel's batch
  mean pre-activation 0, i.e. the batch's mean pixel about 0.5: backgrounds are pinned near grey.
- ``"sigmoid"`` (DaST's form, Zhou et al., CVPR 2020): no final batch norm, ``sigmoid(t)``, so a
  batch can be mostly black (MNIST's backgrounds) or mostly white.
- ``"tanh"``: no final batch norm, ``(tanh(t) + 1) / 2`` (the former ``final_bn=False``).

``pre_activation`` exposes ``t`` (after the batch norm, where there is one) for attacks (DFME,
MAZE) that perturb there, and ``activation`` maps it to [0, 1]. The tails hold no parameters, so
generators built with the same seed and different tails share every weight, and the parameter
names are the same (the "bn-tanh" tail adds the batch norm's running statistics as buffers).

Three conditionings share that trunk and differ only in how the noise is projected:

- ``Generator`` ("dcgan"): unconditional, ``G(z)``.
- ``ConditionalGenerator`` ("conditional"): a learned class embedding is concatenated to ``z``.
- ``MultiBranchGenerator`` ("multibranch"): one projection branch per class (DaST's
  label-controllable generator, Zhou et al., CVPR 2020), ``G(z, n)`` uses branch ``n``.

Works for any square size divisible by 4 (28 and 32 included; 8 and 12 for tests). These are
not classifiers and are not in the model registry; build them with ``build_generator``.
"""

from __future__ import annotations

from typing import cast

import torch
import torch.nn.functional as F
from torch import Tensor, nn

GENERATOR_KINDS = ("dcgan", "conditional", "multibranch")
TAILS = ("bn-tanh", "sigmoid", "tanh")


def to_unit_range(t: Tensor) -> Tensor:
    """The tanh tails' output activation: (tanh(t) + 1) / 2, from pre-activations to [0, 1]."""
    return 0.5 * (torch.tanh(t) + 1.0)


def check_tail(tail: object) -> str:
    """``tail`` if it names a generator tail, else a ValueError saying which ones exist."""
    if tail not in TAILS:
        raise ValueError(
            f"tail must be one of {TAILS} ('bn-tanh': final batch norm then tanh, as DFME; "
            f"'sigmoid': no final batch norm, sigmoid, as DaST), got {tail!r}"
        )
    return str(tail)


def dcgan_init_(module: nn.Module, generator: torch.Generator | None = None) -> None:
    """DCGAN initialisation: conv and linear weights ~ N(0, 0.02), batch-norm scales ~ N(1, 0.02),
    biases 0, drawn from ``generator`` (never the global RNG when one is given)."""
    for m in module.modules():
        if isinstance(m, nn.Conv2d | nn.Linear | nn.Embedding):
            nn.init.normal_(m.weight, 0.0, 0.02, generator=generator)
        if isinstance(m, nn.Conv2d | nn.Linear) and m.bias is not None:
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d) and m.affine:
            nn.init.normal_(m.weight, 1.0, 0.02, generator=generator)
            nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """Unconditional generator: (N, nz) noise -> (N, channels, size, size) images in [0, 1].

    Args:
        nz: noise dimension.
        channels: 1 or 3 output channels.
        image_size: output height and width, divisible by 4.
        num_classes: classes of a class-conditional generator (required there, unused here).
        ngf: trunk width (the projection has ``2 * ngf`` channels).
        tail: "bn-tanh", "sigmoid" or "tanh" (see the module docstring).
        rng: generator for the DCGAN initialisation; the global RNG when ``None``.
    """

    def __init__(
        self,
        nz: int,
        channels: int,
        image_size: int,
        *,
        num_classes: int | None = None,
        ngf: int = 64,
        tail: str = "bn-tanh",
        rng: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        self.tail = check_tail(tail)
        if self.conditional and (num_classes is None or num_classes < 2):
            raise ValueError(f"{type(self).__name__} needs num_classes >= 2, got {num_classes}")
        if nz < 1 or ngf < 1 or channels not in (1, 3):
            raise ValueError(
                f"need nz >= 1, ngf >= 1, channels in (1, 3); got {nz}, {ngf}, {channels}"
            )
        if image_size < 4 or image_size % 4:
            raise ValueError(f"image_size must be a positive multiple of 4, got {image_size}")
        self.nz, self.channels, self.image_size, self.ngf = nz, channels, image_size, ngf
        self.num_classes = num_classes or 0
        self.init_size = image_size // 4
        self.project = self._make_projection()
        self.bn0 = nn.BatchNorm2d(2 * ngf)
        self.block1 = nn.Sequential(
            nn.Conv2d(2 * ngf, 2 * ngf, 3, 1, 1), nn.BatchNorm2d(2 * ngf), nn.LeakyReLU(0.2)
        )
        self.block2 = nn.Sequential(
            nn.Conv2d(2 * ngf, ngf, 3, 1, 1),
            nn.BatchNorm2d(ngf),
            nn.LeakyReLU(0.2),
            nn.Conv2d(ngf, channels, 3, 1, 1),
            self._tail_norm(),
        )
        dcgan_init_(self, rng)

    conditional = False  # whether forward needs one class label per noise vector

    # --- the hooks subclasses override -------------------------------------------------------
    def _make_projection(self) -> nn.Module:
        return nn.Linear(self.nz, self._proj_dim)

    def _project(self, z: Tensor, labels: Tensor | None) -> Tensor:
        """(N, nz) noise (and labels) -> (N, 2 ngf * s/4 * s/4)."""
        return self.project(z)

    # --- the tail ----------------------------------------------------------------------------
    def _tail_norm(self) -> nn.Module:
        """The last module of ``block2``: the affine-free batch norm of "bn-tanh", else nothing."""
        return (
            nn.BatchNorm2d(self.channels, affine=False) if self.tail == "bn-tanh" else nn.Identity()
        )

    def set_tail(self, tail: str) -> Generator:
        """Switch to another tail in place (weights untouched; a final batch norm is added fresh
        or dropped) and return ``self``: ``build_generator(..., tail=t, seed=s)`` equals
        ``build_generator(..., seed=s).set_tail(t)``, parameter for parameter."""
        self.tail = check_tail(tail)
        device = next(self.parameters()).device
        self.block2[4] = self._tail_norm().to(device)
        return self

    # --- shared ------------------------------------------------------------------------------
    @property
    def _proj_dim(self) -> int:
        return 2 * self.ngf * self.init_size**2

    def _check_labels(self, z: Tensor, labels: Tensor | None) -> Tensor:
        if labels is None or labels.shape != (z.shape[0],):
            raise ValueError(f"{type(self).__name__} needs one class label per noise vector")
        if bool((labels < 0).any()) or bool((labels >= self.num_classes).any()):
            raise ValueError(f"labels must lie in [0, {self.num_classes})")
        return labels.long()

    def pre_activation(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        """The output before ``activation``: (N, channels, size, size), unbounded."""
        if z.dim() != 2 or z.shape[1] != self.nz:
            raise ValueError(f"noise must have shape (N, {self.nz}), got {tuple(z.shape)}")
        s = self.init_size
        h = self.bn0(self._project(z, labels).view(z.shape[0], 2 * self.ngf, s, s))
        h = self.block1(F.interpolate(h, scale_factor=2))
        return self.block2(F.interpolate(h, scale_factor=2))

    def activation(self, t: Tensor) -> Tensor:
        """Pre-activations to [0, 1]: sigmoid(t) for the "sigmoid" tail, (tanh(t) + 1) / 2 else."""
        return torch.sigmoid(t) if self.tail == "sigmoid" else to_unit_range(t)

    def forward(self, z: Tensor, labels: Tensor | None = None) -> Tensor:
        return self.activation(self.pre_activation(z, labels))

    def extra_repr(self) -> str:
        return (
            f"nz={self.nz}, channels={self.channels}, image_size={self.image_size}, ngf={self.ngf}, "
            f"tail={self.tail!r}"
        )


class ConditionalGenerator(Generator):
    """G(z, n): a learned (num_classes, nz) embedding of n concatenated to z (DFME's GeneratorC)."""

    conditional = True

    def _make_projection(self) -> nn.Module:
        self.embed = nn.Embedding(self.num_classes, self.nz)
        return nn.Linear(2 * self.nz, self._proj_dim)

    def _project(self, z: Tensor, labels: Tensor | None) -> Tensor:
        n = self._check_labels(z, labels)
        return self.project(torch.cat([self.embed(n), z], dim=1))


class MultiBranchGenerator(Generator):
    """G(z, n): branch n projects the noise, then all classes share the trunk (DaST)."""

    conditional = True

    def _make_projection(self) -> nn.Module:
        return nn.ModuleList(nn.Linear(self.nz, self._proj_dim) for _ in range(self.num_classes))

    def _project(self, z: Tensor, labels: Tensor | None) -> Tensor:
        n = self._check_labels(z, labels)
        branches = cast(nn.ModuleList, self.project)
        out = z.new_empty((z.shape[0], self._proj_dim))
        for c in torch.unique(n).tolist():
            rows = n == c
            out[rows] = branches[c](z[rows])
        return out


def build_generator(
    kind: str,
    nz: int,
    channels: int,
    image_size: int,
    num_classes: int | None = None,
    *,
    ngf: int = 64,
    tail: str = "bn-tanh",
    seed: int | None = None,
) -> Generator:
    """A generator by kind: "dcgan" (unconditional), "conditional" or "multibranch", ending in
    ``tail`` ("bn-tanh", "sigmoid" or "tanh"; see the module docstring).

    ``seed`` fixes the initial weights through its own ``torch.Generator`` (the same weights
    whatever the tail).

    Example:
        >>> g = build_generator("multibranch", 100, 1, 28, num_classes=10, seed=0)
        >>> g(torch.randn(4, 100), torch.tensor([0, 1, 2, 3])).shape
        torch.Size([4, 1, 28, 28])
    """
    rng = torch.Generator().manual_seed(seed) if seed is not None else None
    if kind == "dcgan":
        return Generator(nz, channels, image_size, ngf=ngf, tail=tail, rng=rng)
    if kind in ("conditional", "multibranch"):
        if num_classes is None:
            raise ValueError(f"a {kind!r} generator needs num_classes")
        cls = ConditionalGenerator if kind == "conditional" else MultiBranchGenerator
        return cls(nz, channels, image_size, num_classes=num_classes, ngf=ngf, tail=tail, rng=rng)
    raise ValueError(f"generator kind must be one of {GENERATOR_KINDS}, got {kind!r}")
