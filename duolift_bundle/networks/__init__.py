"""Networks: the DuoLift generator, the 3D discriminator, their blocks and the X2CT baseline."""

from __future__ import annotations

from duolift_bundle.networks.discriminator import DuoLiftDiscriminator, discriminator_output_size
from duolift_bundle.networks.duolift import PAPER_WIDTHS, DuoLiftGenerator, WithAuxiliaryOutputs, scale_width
from duolift_bundle.networks.x2ct import X2CTGenerator

__all__ = [
    "DuoLiftGenerator",
    "DuoLiftDiscriminator",
    "X2CTGenerator",
    "WithAuxiliaryOutputs",
    "PAPER_WIDTHS",
    "discriminator_output_size",
    "scale_width",
]
