"""Dataset inference for encoders: is the suspect's representation space the victim's?

Dziedzic, Duan, Kaleem, Dhawan, Guan, Cattan, Boenisch and Papernot, "Dataset Inference for
Self-Supervised Models", NeurIPS 2022, https://arxiv.org/abs/2209.09024.

An encoder maps its own training data to denser regions of its representation space than unseen
data. The owner fits a density model to the victim's representations of part of its private
training set S_fit (a Gaussian mixture with diagonal covariances),

    p(z) = sum_c pi_c N(z; mu_c, diag(sigma_c^2)),      fitted on { f_V(x) : x in S_fit },

then asks the suspect f_S for its representations of m other private points and m unseen public
points and compares their log-likelihoods with a one-sided Welch t-test:

    H0: mean log p(f_S(x_private)) <= mean log p(f_S(x_public)).

A copy of the victim keeps the gap; an independent encoder (another space, or the same space
learnt from other data) has none. The suspect is charged 2m queries (one per point), the victim
``fit_samples``.

What our toy checks found (tests/metrics/test_ssl_inference.py): an encoder that pulls its
training images onto class directions (normalised output, cosine-classifier training) is much
denser on them, and its weights stolen and fine-tuned a little keep that (p < 1e-6 at m = 25);
but the penultimate features of a plain memorising classifier were *less* dense on its training
images than on unseen ones, and encoders distilled (MSE) from the victim's representations of
other images kept no measurable gap. The test is one-sided in the paper's direction.

Not verified from the paper's text (only its abstract could be read here): whether the density
model is fitted on the victim's or on the suspect's representations (the victim's here, so the
suspect must answer in the victim's space and size), the number of mixture components and the
covariance type, and the exact test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

from stealkit.metrics.dataset_inference import InferenceResult, ownership_test
from stealkit.oracle.base import Oracle
from stealkit.oracle.response import OutputKind

if TYPE_CHECKING:
    from sklearn.mixture import GaussianMixture


def fit_density(
    representations: Tensor, *, components: int = 4, smoothing: float = 1e-4, seed: int = 0
) -> GaussianMixture:
    """A diagonal Gaussian mixture (sklearn) fitted to (N, D) representations; ``smoothing`` is
    added to every variance (sklearn's ``reg_covar``)."""
    from sklearn.mixture import GaussianMixture

    if len(representations) < 2 * components:
        raise ValueError(
            f"{len(representations)} representations for {components} components; fit on at "
            "least two per component (raise fit_samples or lower components)"
        )
    gmm = GaussianMixture(
        n_components=components, covariance_type="diag", reg_covar=smoothing, random_state=seed
    )
    gmm.fit(representations.double().numpy())
    return gmm


def log_likelihoods(density: GaussianMixture, representations: Tensor) -> Tensor:
    """log p(z) of each row of (N, D) ``representations`` under a fitted mixture."""
    return torch.from_numpy(density.score_samples(representations.double().numpy()))


def _embed(oracle: Oracle, x: Tensor) -> Tensor:
    r = oracle.query(x)
    if r.kind is not OutputKind.EMBEDDING:
        raise ValueError(f"{oracle!r} answers {r.kind.value}; the encoder form needs embeddings")
    return r.values.flatten(1)


class EncoderDatasetInference:
    """Dataset inference for a suspect encoder; see the module docstring.

    Args:
        samples: m, fresh private and public points each shown to the suspect.
        fit_samples: private points whose victim representations fit the density model.
        components: mixture components.
        smoothing: added to every variance of the mixture (sklearn's ``reg_covar``).
        seed: draws the points and seeds the mixture's initialisation.
    """

    def __init__(
        self,
        *,
        samples: int = 50,
        fit_samples: int = 1000,
        components: int = 4,
        smoothing: float = 1e-4,
        seed: int = 0,
    ) -> None:
        for name, value, low in (
            ("samples", samples, 2),
            ("fit_samples", fit_samples, 2),
            ("components", components, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
        if fit_samples < 2 * components:
            raise ValueError(
                f"fit_samples ({fit_samples}) must be at least 2 * components ({components})"
            )
        self.samples = samples
        self.fit_samples = fit_samples
        if not (isinstance(smoothing, int | float) and smoothing > 0):
            raise ValueError(f"smoothing must be a positive number, got {smoothing!r}")
        self.components = components
        self.smoothing = float(smoothing)
        self.seed = seed

    def run(
        self, victim: Oracle, suspect: Oracle, *, private: Tensor, public: Tensor
    ) -> InferenceResult:
        """Test ``suspect`` with the victim's ``private`` training images and ``public`` ones of
        the same distribution (both (N, C, H, W) in the oracles' value range)."""
        m = self.samples
        if len(private) < m + self.fit_samples:
            raise ValueError(
                f"private has {len(private)} images; samples + fit_samples = "
                f"{m + self.fit_samples} are needed"
            )
        if len(public) < m:
            raise ValueError(f"public has {len(public)} images; samples = {m} are needed")
        g = torch.Generator().manual_seed(self.seed)
        priv = private[torch.randperm(len(private), generator=g)[: m + self.fit_samples]]
        pub = public[torch.randperm(len(public), generator=g)[:m]]
        v0, s0 = victim.ledger.spent, suspect.ledger.spent
        density = fit_density(
            _embed(victim, priv[m:]),
            components=self.components,
            smoothing=self.smoothing,
            seed=self.seed,
        )
        z = _embed(suspect, torch.cat([priv[:m], pub]))
        dim = int(density.means_.shape[1])
        if z.shape[1] != dim:
            raise ValueError(
                f"the suspect answers {z.shape[1]}-d representations, the victim {dim}-d; the "
                "test compares them in the victim's space, so the suspect must answer its size"
            )
        ll = log_likelihoods(density, z)
        t, p = ownership_test(ll[:m], ll[m:])
        return InferenceResult(
            p_value=p,
            statistic=t,
            samples=m,
            suspect_queries=suspect.ledger.spent - s0,
            victim_queries=victim.ledger.spent - v0,
            private_scores=ll[:m],
            public_scores=ll[m:],
        )

    def __repr__(self) -> str:
        return (
            f"EncoderDatasetInference(samples={self.samples}, fit_samples={self.fit_samples}, "
            f"components={self.components}, smoothing={self.smoothing}, seed={self.seed})"
        )
