"""The unexposed border of a radiograph (duolift_bundle/imaging/collimation.py)."""

from __future__ import annotations

import numpy as np
import pytest
from duolift_bundle.datasets.sample import sample_dir
from duolift_bundle.imaging.collimation import exposed_region


def _drr() -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.load(sample_dir(64) / "normal001" / "xray_frontal.nii.gz").dataobj, dtype=np.float32)


@pytest.mark.parametrize("top, bottom, left, right", [(6, 6, 6, 6), (10, 0, 0, 4), (0, 0, 0, 0)])
def test_a_blade_border_is_found_to_the_pixel(top, bottom, left, right):
    film = _drr()
    bright = film.max()
    h, w = film.shape
    film[:top], film[h - bottom :], film[:, :left], film[:, w - right :] = bright, bright, bright, bright
    expected = np.zeros(film.shape, bool)
    expected[top : h - bottom, left : w - right] = True
    np.testing.assert_array_equal(exposed_region(film), expected)


def test_a_striped_border_counts_and_anatomy_does_not():
    """A reader's stripes across the border (each line a copy of the next, at the brightest
    level) are unexposed; the dense abdomen at the lower edge, as bright but noisy, is not."""
    rng = np.random.default_rng(0)
    film = np.clip(_drr() + rng.normal(0, 0.01, (64, 64)), 0, None).astype(np.float32)
    film[-12:] = 0.95 + rng.normal(0, 0.01, (12, 64))  # abdomen: bright, every line different
    stripes = np.where(np.arange(64) % 8 < 5, 1.0, 0.6).astype(np.float32)
    film[:5] = stripes
    mask = exposed_region(film)
    assert mask[5:].all() and not mask[:5].any()


def test_a_blank_film_is_all_exposed():
    assert exposed_region(np.full((32, 32), 7.0)).all()
