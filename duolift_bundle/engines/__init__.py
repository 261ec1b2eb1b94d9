"""Engines: the conditional-GAN trainer, prepare_batch functions, handlers, resuming and preemption,
reports, config checks."""

from __future__ import annotations

from duolift_bundle.engines.batches import prepare_inference_batch, prepare_xray_batch
from duolift_bundle.engines.case_failures import CaseGuard, CaseTolerantEvaluator, collate_cases, exit_if_failed
from duolift_bundle.engines.config_checks import (
    check_datasets,
    check_evaluation_set,
    check_overrides,
    check_training_settings,
)
from duolift_bundle.engines.handlers import BestModelSaver, EpochSeedHandler, FinalModelSaver, TimeBudget
from duolift_bundle.engines.preemption import Preemption
from duolift_bundle.engines.reports import METRIC_COLUMNS, FigureWriter, InferenceSummary, MetricsReport
from duolift_bundle.engines.resume import (
    CHECKPOINT_FILENAME_PATTERN,
    ResumableSampler,
    epoch_of,
    latest_checkpoint,
    resume_checkpoint,
)
from duolift_bundle.engines.trainer import DuoLiftTrainer, NonFiniteLossError

__all__ = [
    "DuoLiftTrainer",
    "NonFiniteLossError",
    "prepare_xray_batch",
    "prepare_inference_batch",
    "BestModelSaver",
    "FinalModelSaver",
    "EpochSeedHandler",
    "TimeBudget",
    "CHECKPOINT_FILENAME_PATTERN",
    "epoch_of",
    "latest_checkpoint",
    "resume_checkpoint",
    "ResumableSampler",
    "Preemption",
    "METRIC_COLUMNS",
    "MetricsReport",
    "FigureWriter",
    "InferenceSummary",
    "CaseGuard",
    "CaseTolerantEvaluator",
    "collate_cases",
    "exit_if_failed",
    "check_overrides",
    "check_training_settings",
    "check_datasets",
    "check_evaluation_set",
    "loss_terms",
]


def loss_terms(output: dict) -> dict:
    """``output_transform`` for StatsHandler / TensorBoard / MLflow: the trainer's loss dict."""
    return dict(output)
