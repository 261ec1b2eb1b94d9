"""Networks: the DuoLift generator, the 3D discriminator, their blocks, the baselines, and loading."""

from __future__ import annotations

from duolift_bundle.networks.discriminator import DuoLiftDiscriminator, discriminator_output_size
from duolift_bundle.networks.duolift import PAPER_WIDTHS, DuoLiftGenerator, WithAuxiliaryOutputs, scale_width
from duolift_bundle.networks.loading import load_generator, unwrap
from duolift_bundle.networks.mean_volume import MeanVolume
from duolift_bundle.networks.precision import PRECISIONS, AutocastInferer
from duolift_bundle.networks.x2ct import X2CTGenerator

__all__ = [
    "DuoLiftGenerator",
    "DuoLiftDiscriminator",
    "X2CTGenerator",
    "MeanVolume",
    "WithAuxiliaryOutputs",
    "PAPER_WIDTHS",
    "discriminator_output_size",
    "scale_width",
    "load_generator",
    "unwrap",
    "AutocastInferer",
    "PRECISIONS",
]
