"""Judging a stolen model against its victim."""

from stealkit.metrics.classification import (
    ConvergenceCurve,
    accuracy,
    agreement,
    evaluate_stolen,
)
from stealkit.metrics.probe import (
    ProbeResult,
    embedding_similarity,
    extract_features,
    linear_probe,
    probe_agreement,
)
from stealkit.metrics.transfer import (
    bim,
    fgsm,
    pgd,
    random_targets,
    transfer_success,
    transfer_table,
)

__all__ = [
    "ConvergenceCurve",
    "ProbeResult",
    "accuracy",
    "agreement",
    "bim",
    "embedding_similarity",
    "evaluate_stolen",
    "extract_features",
    "fgsm",
    "linear_probe",
    "pgd",
    "probe_agreement",
    "random_targets",
    "transfer_success",
    "transfer_table",
]
