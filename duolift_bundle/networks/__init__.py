"""Networks: the DuoLift generator, the 3D discriminator, their blocks and the X2CT baseline."""

from __future__ import annotations

from duolift_bundle.networks.duolift import PAPER_WIDTHS, DuoLiftGenerator, scale_width

__all__ = ["DuoLiftGenerator", "PAPER_WIDTHS", "scale_width"]
