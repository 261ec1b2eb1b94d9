"""Training engines: the conditional-GAN trainer, its handlers and config checks."""

from __future__ import annotations

from duolift_bundle.engines.config_checks import ConfigError, check_overrides, check_training_settings
from duolift_bundle.engines.handlers import BestModelSaver, EpochSeedHandler, FullCheckpointSaver, latest_checkpoint
from duolift_bundle.engines.trainer import DuoLiftTrainer, NonFiniteLossError, prepare_xray_batch, unwrap

__all__ = [
    "DuoLiftTrainer",
    "NonFiniteLossError",
    "prepare_xray_batch",
    "unwrap",
    "BestModelSaver",
    "EpochSeedHandler",
    "FullCheckpointSaver",
    "latest_checkpoint",
    "ConfigError",
    "check_overrides",
    "check_training_settings",
    "loss_terms",
]


def loss_terms(output: dict) -> dict:
    """``output_transform`` for StatsHandler / TensorBoard / MLflow: the trainer's loss dict."""
    return dict(output)
