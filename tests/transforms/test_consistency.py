"""Projection consistency: a volume against its own DRRs, and lung fields that are not found."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import hu_to_unit
from duolift_bundle.geometry import Protocol
from duolift_bundle.synthetic.phantoms import make_phantom
from duolift_bundle.transforms.consistency import ProjectionConsistencyd
from duolift_bundle.transforms.drr import DRRProjector

PROTOCOL = Protocol.build(size=64)


@pytest.fixture(scope="module")
def chest():
    ct = torch.from_numpy(np.clip(hu_to_unit(make_phantom(7, size=64).hu), 0, 1).astype(np.float32))[None]
    return ct, DRRProjector(PROTOCOL)(ct[None])[0]


def test_a_volume_is_consistent_with_its_own_drrs(chest):
    ct, xray = chest
    out = ProjectionConsistencyd(protocol=PROTOCOL)({"pred": ct, "xray": xray})
    scores = out["consistency"]
    for view in ("frontal", "lateral"):
        assert scores[f"{view}_psnr"] > 60.0 and scores[f"{view}_body_dice"] > 0.99
        assert scores[f"{view}_lung_dice"] > 0.99
    assert out["quality_warnings"] == []


def test_lungs_missing_from_the_reprojection_are_not_found_not_a_dice_of_zero(chest):
    """A reconstruction that is all air (a flat re-projection) while the film shows lungs: the lung
    Dice is null with its reason (never 0) and the warning says where the lung fields were not found."""
    ct, xray = chest
    out = ProjectionConsistencyd(protocol=PROTOCOL)({"pred": torch.zeros_like(ct), "xray": xray})
    scores = out["consistency"]
    assert scores["frontal_lung_dice"] is None and "frontal_psnr" in scores
    assert scores["frontal_lung_dice_reason"] == "no two lung fields found in the reconstruction's re-projection"
    assert any("re-projection" in w and w.startswith("frontal") for w in out["quality_warnings"])
