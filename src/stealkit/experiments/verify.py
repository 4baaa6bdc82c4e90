"""``stealkit verify``: is a suspect model a copy of the owner's victim? Dataset inference decides.

    report = verify_files(victim_name="trained", victim_params={...}, suspect="copy.safetensors")
    print(report.verdict)        # "suspect is a copy (p=3.1e-04)"

The victim is the owner's own model, reached through its unmetered evaluator; the suspect is a
model file (``stealkit.models.files.load_model``: safetensors or ONNX) served behind an oracle
whose ledger counts every input shown to it. Classifiers are tested with the black-box Blind Walk
form (``stealkit.metrics.dataset_inference``), encoders with the density form
(``stealkit.metrics.ssl_inference``). The private images default to the victim's own training
data as its meta records it (``dataset``, and ``train_start``/``train_stop`` or ``max_images``
where it was trained on part of the train split); the public ones to the same data set's test
split.

What it costs and what it finds (measured on a busy 2-core CPU):

- A victim that memorises its private set (tests/metrics/test_dataset_inference.py: an MLP on
  160 random 8x8 images with random labels; the copy trained on its labels of 1,500 other
  images): the default walk (m = 15, one gaussian step) gives the copy p <= 0.003 in 6 of 6
  seeds for 42-44 suspect queries, the independent model p >= 0.12; m = 10 (~29 queries) gives
  p < 0.01 in 4 of 6 seeds. The paper-like walk (3 noises, 7 bisected steps) needs m = 25
  (~240 queries) for p < 1e-3; walks from the suspect's own labels found nothing at m = 25.
- A cnn3 victim trained 3 epochs on fashion-mnist train[:30000] (train 93.8%, test 90.5%), a
  copy trained 2 epochs on its labels of train[30000:] (95.5% agreement) and an independent
  model trained on their true labels: no configuration tells them apart. With the defaults the
  copy gets p = 0.90 (56 queries), the independent model 0.90; with m = 200 (757 queries) 0.35,
  0.25, 0.84 over seeds 0-2 (independent 0.70, 0.07, 0.84); the paper-like walk at m = 10
  (164-191 queries) 0.93, 0.81, 0.63. Even the victim itself, as suspect, is not found: by
  resampling 500-point pools, its median p stays >= 0.12 for m up to 400 (1,500-8,000 queries)
  in all four walks tried. A victim that generalises this well leaves no margin gap for a copy
  to inherit, so p < 0.01 within 100 queries is out of reach there, at any size we could test.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from stealkit.data.dataset import to_spec
from stealkit.errors import ConfigError, StealkitError
from stealkit.experiments.checks import load_part
from stealkit.experiments.config import DataConfig
from stealkit.metrics.dataset_inference import DatasetInference, InferenceResult
from stealkit.metrics.ssl_inference import EncoderDatasetInference
from stealkit.models.files import load_model
from stealkit.oracle.ledger import Ledger
from stealkit.oracle.local import LocalOracle
from stealkit.oracle.response import OutputKind
from stealkit.victims.base import Victim, probe_output_dim

log = logging.getLogger(__name__)

TRAIN_SAMPLES = 500  # victim-side points per set that train g (or fit the density), at most


def parse_part(text: str, *, flag: str) -> DataConfig:
    """``DATASET:SPLIT`` or ``DATASET:SPLIT:START:STOP`` (START or STOP may be empty)."""
    parts = text.split(":")
    if len(parts) not in (2, 4) or not all(parts[:2]):
        raise ConfigError(
            f"{flag} {text!r} must look like DATASET:SPLIT or DATASET:SPLIT:START:STOP "
            "(e.g. fashion-mnist:train:0:30000)"
        )
    start, stop = (parts[2], parts[3]) if len(parts) == 4 else ("", "")
    try:
        return DataConfig(
            dataset=parts[0],
            split=parts[1],
            start=int(start) if start else 0,
            stop=int(stop) if stop else None,
        )
    except ValueError as e:  # int() or the model's own checks (stop above start)
        msg = str(e).splitlines()
        raise ConfigError(f"{flag} {text!r}: {msg[-1].strip() if msg else e}") from None


def default_private(victim: Victim) -> DataConfig:
    """The victim's own training images, as its meta records them."""
    meta = victim.meta
    if "dataset" not in meta:
        raise ConfigError(
            f"victim {victim.name!r} does not record its training data (its meta has no "
            "'dataset'); give --private DATASET:SPLIT[:START:STOP], the images it was trained on"
        )
    if meta.get("max_images") is not None:  # an encoder pre-trained on a seeded subset
        return DataConfig(
            dataset=meta["dataset"],
            split="train",
            limit=int(meta["max_images"]),
            seed=int(meta.get("seed", 0)),
        )
    return DataConfig(
        dataset=meta["dataset"],
        split="train",
        start=int(meta.get("train_start") or 0),
        stop=None if meta.get("train_stop") is None else int(meta["train_stop"]),
    )


def describe_part(part: DataConfig) -> str:
    text = f"{part.dataset}:{part.split}"
    if part.start or part.stop is not None:
        text += f":{part.start}:{'' if part.stop is None else part.stop}"
    return text + (f" (random {part.limit}, seed {part.seed})" if part.limit else "")


def _images(
    part: DataConfig, victim: Victim, data_dir: str | None, flag: str
) -> tuple[Tensor, Tensor | None]:
    """The images of ``part`` in the victim's spec, and their labels (None if unlabelled)."""
    try:
        ds = load_part(part, data_dir)
        x = to_spec(ds.images(), victim.spec)
    except StealkitError:
        raise
    except ValueError as e:  # a split the data set lacks, images it cannot convert
        raise ConfigError(f"{flag} {describe_part(part)}: {e}") from None
    if len(x) == 0:
        raise ConfigError(f"{flag} {describe_part(part)} selects no images")
    return x, ds.y


def suspect_oracle(model: nn.Module, victim: Victim, name: str) -> LocalOracle:
    """The suspect behind a counting oracle with the victim's spec; a ConfigError when it does
    not take the victim's inputs or answer the victim's output size."""
    out = probe_output_dim(model, victim.spec, f"suspect {name}")
    want = probe_output_dim(victim.model, victim.spec, f"victim {victim.name!r}")
    if out != want:
        what = "classes" if victim.kind == "classifier" else "embedding values"
        raise ConfigError(
            f"suspect {name} answers {out} values per image, the victim {want} {what}; a copy "
            "answers the victim's outputs: give the right file"
        )
    output = OutputKind.LABEL if victim.kind == "classifier" else OutputKind.EMBEDDING
    return LocalOracle(model, victim.spec, output=output, ledger=Ledger(), name=name)


@dataclass(frozen=True)
class VerifyReport:
    victim: str
    suspect: str
    method: str  # the procedure's repr
    private: str
    public: str
    alpha: float
    result: InferenceResult

    @property
    def copy(self) -> bool:
        return self.result.is_copy(self.alpha)

    @property
    def verdict(self) -> str:
        p = f"p={self.result.p_value:.3g}"
        return f"suspect is a copy ({p})" if self.copy else f"no evidence of copying ({p})"

    def to_dict(self) -> dict[str, Any]:
        r = self.result
        return {
            "verdict": self.verdict,
            "copy": self.copy,
            "p_value": r.p_value,
            "statistic": r.statistic,
            "alpha": self.alpha,
            "samples": r.samples,
            "suspect_queries": r.suspect_queries,
            "victim_queries": r.victim_queries,
            "victim": self.victim,
            "suspect": self.suspect,
            "private": self.private,
            "public": self.public,
            "method": self.method,
        }

    def lines(self) -> list[str]:
        r = self.result
        return [
            self.verdict,
            f"  p-value {r.p_value:.4g} (alpha {self.alpha:g}), m = {r.samples} private and "
            f"{r.samples} public images",
            f"  queries: {r.suspect_queries} to the suspect, {r.victim_queries} to the victim",
            f"  private {self.private}; public {self.public}",
            f"  {self.method}",
        ]


def verify(
    victim: Victim,
    suspect: nn.Module,
    *,
    suspect_name: str = "suspect",
    private: DataConfig | None = None,
    public: DataConfig | None = None,
    samples: int | None = None,
    alpha: float = 0.01,
    seed: int = 0,
    data_dir: str | None = None,
) -> VerifyReport:
    """Test whether ``suspect`` carries ``victim``'s private training data (see the module)."""
    if not 0 < alpha < 1:
        raise ConfigError(f"alpha must be in (0, 1), got {alpha}")
    if samples is not None and samples < 2:
        raise ConfigError(f"samples must be at least 2 (m images of each set), got {samples}")
    oracle = suspect_oracle(suspect, victim, suspect_name)
    private = private or default_private(victim)
    if public is None:
        public = DataConfig(dataset=private.dataset, split="test")
    x_priv, y_priv = _images(private, victim, data_dir, "--private")
    x_pub, y_pub = _images(public, victim, data_dir, "--public")
    encoder = victim.kind == "encoder"
    m = samples or (EncoderDatasetInference() if encoder else DatasetInference()).samples
    spare = min(len(x_priv), len(x_pub) if not encoder else len(x_priv)) - m
    if spare < 8:
        raise ConfigError(
            f"{len(x_priv)} private and {len(x_pub)} public images are too few for m = {m}: "
            f"the victim needs at least 8 more of each; lower --samples or give more images"
        )
    procedure: DatasetInference | EncoderDatasetInference
    if encoder:
        procedure = EncoderDatasetInference(
            samples=m, fit_samples=min(TRAIN_SAMPLES, spare), seed=seed
        )
        victim_oracle = victim.evaluator(output=OutputKind.EMBEDDING)
    else:
        labelled = y_priv is not None and y_pub is not None
        if not labelled:
            log.warning("unlabelled images: the walks start from the suspect's own labels")
        procedure = DatasetInference(
            samples=m,
            train_samples=min(TRAIN_SAMPLES, spare),
            reference="true" if labelled else "suspect",
            seed=seed,
        )
        victim_oracle = victim.evaluator(output=OutputKind.LABEL)
    log.info("verifying %s against %s with %r", suspect_name, victim.name, procedure)
    try:
        if isinstance(procedure, DatasetInference):
            result = procedure.run(
                victim_oracle,
                oracle,
                private=x_priv,
                public=x_pub,
                private_labels=y_priv,
                public_labels=y_pub,
            )
        else:
            result = procedure.run(victim_oracle, oracle, private=x_priv, public=x_pub)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    return VerifyReport(
        victim=victim.name,
        suspect=suspect_name,
        method=repr(procedure),
        private=describe_part(private),
        public=describe_part(public),
        alpha=alpha,
        result=result,
    )


def verify_files(
    *,
    victim_name: str,
    suspect: str | Path,
    victim_params: dict[str, Any] | None = None,
    arch: str | None = None,
    private: DataConfig | None = None,
    public: DataConfig | None = None,
    samples: int | None = None,
    alpha: float = 0.01,
    seed: int = 0,
    data_dir: str | None = None,
) -> VerifyReport:
    """``verify`` with the victim loaded by name (``stealkit.victims.load_victim``) and the
    suspect from a file; a bare safetensors state dict takes ``arch`` and the victim's spec."""
    from stealkit.victims import load_victim

    params = dict(victim_params or {})
    if data_dir is not None and victim_name in ("trained", "ssl", "supervised-encoder"):
        params.setdefault("data_dir", data_dir)
    try:
        victim = load_victim(victim_name, **params)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"victim {victim_name!r} with params {params}: {e}") from None
    c, h, _ = victim.spec.shape
    num = probe_output_dim(victim.model, victim.spec, f"victim {victim.name!r}")
    path = Path(suspect)
    if path.suffix.lower() == ".safetensors":
        from stealkit.models.files import read_metadata

        if path.is_file() and read_metadata(path):  # its own settings; --arch may only agree
            model = load_model(path, arch=arch)
        else:
            model = load_model(path, arch=arch, in_channels=c, num_classes=num, image_size=h)
    else:
        model = load_model(path)
    return verify(
        victim,
        model,
        suspect_name=str(path),
        private=private,
        public=public,
        samples=samples,
        alpha=alpha,
        seed=seed,
        data_dir=data_dir,
    )
