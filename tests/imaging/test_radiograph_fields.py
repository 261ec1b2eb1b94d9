"""Body and lung fields of a radiograph (duolift_bundle/imaging/radiograph_fields.py) on drawn
images whose answer is known."""

from __future__ import annotations

import numpy as np
import pytest
from duolift_bundle.imaging.radiograph_fields import mask_dice, radiograph_fields


def chest(h: int = 200, w: int = 240, air: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """A bright body (columns 20..219) with two dark lungs (ellipses; columns 45..104 and
    135..194), dark air outside when ``air``."""
    y, x = np.mgrid[:h, :w]
    image = np.full((h, w), 0.05 if air else 0.7, np.float32)
    image[:, 20:220] = 0.7
    image[:, 110:130] = 0.95  # mediastinum
    lungs = ((y - 95) / 60.0) ** 2 + ((x - 75) / 30.0) ** 2 < 1
    lungs |= ((y - 95) / 60.0) ** 2 + ((x - 165) / 30.0) ** 2 < 1
    image[lungs] = 0.3
    return image, lungs


@pytest.mark.parametrize("air", [True, False])
def test_lung_fields_of_a_drawn_chest(air):
    image, lungs = chest(air=air)
    fields = radiograph_fields(image)
    assert fields.found_lungs and mask_dice(fields.lungs, lungs) > 0.9
    first, last = fields.lung_columns(band=(0.3, 0.7))
    assert abs(first - 45) <= 3 and abs(last - 195) <= 3
    if air:
        assert 0.9 < fields.body[:, 20:220].mean() and fields.body[:, :15].mean() < 0.1


def test_no_lungs_in_a_flat_or_one_sided_image():
    assert not radiograph_fields(np.full((64, 64), 0.5, np.float32)).found_lungs
    image, lungs = chest()
    image[:, 120:] = 0.7  # the left lung painted over
    assert not radiograph_fields(image).found_lungs


def test_mask_dice_by_hand():
    a = np.zeros((4, 4), bool)
    b = np.zeros((4, 4), bool)
    assert mask_dice(a, b) == 1.0
    a[0, :2] = True
    b[0, 1:3] = True
    assert mask_dice(a, b) == pytest.approx(0.5)
