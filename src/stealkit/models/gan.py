"""A small GAN for attacks that learn an image prior from proxy data (DFMS-HL, Black-Box Ripper).

Goodfellow et al., "Generative Adversarial Nets", NeurIPS 2014, https://arxiv.org/abs/1406.2661;
the layout and optimiser follow DCGAN (Radford, Metz and Chintala, ICLR 2016,
https://arxiv.org/abs/1511.06434). The generator is stealkit's DCGAN-style ``Generator``
(``stealkit.models.generators``); this module adds its discriminator D and the two losses, in
the non-saturating form with l(x) = D's logit:

    L_D = E_real[softplus(-l(x))] + E_fake[softplus(l(G(z)))]   (= BCE, real 1 / fake 0)
    L_G = E_z[softplus(-l(G(z)))]                               (= -E log sigmoid l(G(z)))

``adversarial_step`` is one update of each, with an optional extra generator term (DFMS-HL's
class-diversity loss); ``train_gan`` repeats it over a set of real images. Nothing here queries a
victim: the real images are the thief's own proxy data.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from stealkit.models.generators import Generator, build_generator, dcgan_init_


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """L_D: mean softplus(-l) over real rows plus mean softplus(l) over fake rows."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: Tensor) -> Tensor:
    """L_G (non-saturating): mean softplus(-l) over generated rows."""
    return F.softplus(-fake_logits).mean()


class Discriminator(nn.Module):
    """(N, channels, size, size) images in [0, 1] -> (N,) logits "this image is real".

    Two stride-2 4x4 convolutions (``ndf`` then ``2 ndf`` channels, leaky ReLU 0.2, batch norm on
    the second) and a linear head; ``size`` divisible by 4, DCGAN initialisation from ``rng``.
    """

    def __init__(
        self, channels: int, image_size: int, *, ndf: int = 32, rng: torch.Generator | None = None
    ) -> None:
        super().__init__()
        if channels not in (1, 3) or ndf < 1:
            raise ValueError(f"need channels in (1, 3) and ndf >= 1; got {channels}, {ndf}")
        if image_size < 4 or image_size % 4:
            raise ValueError(f"image_size must be a positive multiple of 4, got {image_size}")
        self.channels, self.image_size, self.ndf = channels, image_size, ndf
        self.body = nn.Sequential(
            nn.Conv2d(channels, ndf, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(ndf, 2 * ndf, 4, 2, 1),
            nn.BatchNorm2d(2 * ndf),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(2 * ndf * (image_size // 4) ** 2, 1),
        )
        dcgan_init_(self, rng)

    def forward(self, x: Tensor) -> Tensor:
        return self.body(2.0 * x - 1.0).squeeze(1)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, image_size={self.image_size}, ndf={self.ndf}"


def gan_optimizers(
    generator: nn.Module, discriminator: nn.Module, lr: float
) -> tuple[torch.optim.Optimizer, torch.optim.Optimizer]:
    """DCGAN's Adam (betas 0.5, 0.999) for G and for D."""
    return (
        torch.optim.Adam(generator.parameters(), lr=lr, betas=(0.5, 0.999)),
        torch.optim.Adam(discriminator.parameters(), lr=lr, betas=(0.5, 0.999)),
    )


def adversarial_step(
    generator: nn.Module,
    discriminator: nn.Module,
    real: Tensor,
    z: Tensor,
    opt_g: torch.optim.Optimizer,
    opt_d: torch.optim.Optimizer,
    *,
    extra: Callable[[Tensor], Tensor] | None = None,
) -> tuple[float, float]:
    """One update of D on L_D (real vs G(z), G fixed), then one of G on L_G + extra(G(z)).

    Returns the two losses (L_G without the extra term)."""
    generator.train()
    discriminator.train()
    fake = generator(z)
    d_loss = discriminator_loss(discriminator(real), discriminator(fake.detach()))
    opt_d.zero_grad(set_to_none=True)
    d_loss.backward()
    opt_d.step()
    g_loss = generator_loss(discriminator(fake))
    total = g_loss + extra(fake) if extra is not None else g_loss
    opt_g.zero_grad(set_to_none=True)
    total.backward()
    opt_g.step()
    return float(d_loss.detach()), float(g_loss.detach())


@dataclass
class GanHistory:
    d_loss: list[float] = field(default_factory=list)
    g_loss: list[float] = field(default_factory=list)


def train_gan(
    generator: Generator,
    discriminator: nn.Module,
    images: Tensor,
    *,
    steps: int,
    batch_size: int = 64,
    lr: float = 2e-4,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> GanHistory:
    """``steps`` adversarial steps on random batches of ``images`` (N, C, H, W) in [0, 1], kept
    on the CPU; noise of ``generator.nz`` dimensions. Both networks end in eval mode."""
    if steps < 1 or batch_size < 1 or lr <= 0:
        raise ValueError(
            f"need steps >= 1, batch_size >= 1, lr > 0; got {steps}, {batch_size}, {lr}"
        )
    if len(images) == 0:
        raise ValueError("a GAN needs at least one real image")
    gen = torch.Generator().manual_seed(seed)
    generator.to(device)
    discriminator.to(device)
    opt_g, opt_d = gan_optimizers(generator, discriminator, lr)
    hist = GanHistory()
    bs = min(batch_size, len(images))
    for _ in range(steps):
        real = images[torch.randint(len(images), (bs,), generator=gen)].to(device)
        z = torch.randn((bs, generator.nz), generator=gen).to(device)
        d, g = adversarial_step(generator, discriminator, real, z, opt_g, opt_d)
        hist.d_loss.append(d)
        hist.g_loss.append(g)
    generator.eval()
    discriminator.eval()
    return hist


def fit_gan(
    images: Tensor,
    *,
    nz: int,
    ngf: int = 32,
    ndf: int = 32,
    steps: int,
    batch_size: int = 64,
    lr: float = 2e-4,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> tuple[Generator, Discriminator, GanHistory]:
    """A fresh DCGAN-style generator and discriminator (seeded by ``seed``) sized to ``images``
    (N, C, S, S) in [0, 1], trained on them by ``train_gan``."""
    c, h, w = images.shape[1:]
    if h != w:
        raise ValueError(f"the GAN makes square images; got {h}x{w} proxy images")
    g = build_generator("dcgan", nz, c, h, ngf=ngf, seed=seed)
    d = Discriminator(c, h, ndf=ndf, rng=torch.Generator().manual_seed(seed + 1))
    hist = train_gan(
        g, d, images, steps=steps, batch_size=batch_size, lr=lr, seed=seed + 2, device=device
    )
    return g, d, hist
