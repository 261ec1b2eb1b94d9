"""Realistic chest phantoms (duolift_bundle/synthetic/phantoms.py): seeded, anatomy where the ranges put it."""

from __future__ import annotations

import numpy as np
import pytest
from duolift_bundle.synthetic.phantoms import FOV_MM, PHANTOM_RANGES, make_phantom

SIZE = 64
VOX = FOV_MM / SIZE


def _z(mm: float) -> int:
    """Row of the grid at ``mm`` from the field centre (+ inferior)."""
    return int(round(mm / VOX + (SIZE - 1) / 2.0))


@pytest.fixture(scope="module")
def phantoms():
    return [make_phantom(seed, size=SIZE) for seed in range(12)]


def test_same_seed_same_phantom_and_other_seeds_differ():
    a, b, c = make_phantom(7, size=32), make_phantom(7, size=32), make_phantom(8, size=32)
    assert np.array_equal(a.hu, b.hu) and np.array_equal(a.lung, b.lung)
    assert not np.array_equal(a.hu, c.hu)


def test_parameters_are_drawn_inside_their_ranges(phantoms):
    for ph in phantoms:
        for key, (lo, hi) in PHANTOM_RANGES.items():
            assert lo <= ph.params[key] <= hi, key
    assert {ph.params["arms"] for ph in phantoms} >= {"up", "down"}


def test_scan_length_leaves_air_below_the_scan(phantoms):
    for ph in phantoms:
        end = -FOV_MM / 2 + ph.params["scan_length"]
        if end < FOV_MM / 2 - 2 * VOX:
            assert ph.hu[_z(end) + 1 :].max() < -900.0
        assert (ph.hu[_z(0.0)] > -500).mean() > 0.4  # the chest itself is there


def test_lungs_sit_above_the_diaphragm_with_the_liver_below_the_right_dome(phantoms):
    for ph in phantoms:
        p = ph.params
        right, left = ph.lung == 1, ph.lung == 2
        x = (np.arange(SIZE) - (SIZE - 1) / 2.0) * VOX  # + = patient left
        assert x[np.nonzero(right)[2]].mean() < 0 < x[np.nonzero(left)[2]].mean()
        rows = np.flatnonzero(ph.lung.any(axis=(1, 2)))
        assert rows[0] >= _z(p["lung_top"]) - 1
        # under the right dome's peak, inside the body's midline front half: liver-density tissue
        below = ph.hu[_z(p["dome_right"]) + 4 : _z(p["dome_right"]) + 10, :, : SIZE // 2 - 4]
        assert np.median(below[(below > -50) & (below < 150)]) == pytest.approx(50.0, abs=25.0)
        assert np.mean((ph.hu[right] > -950) & (ph.hu[right] < -700)) > 0.8  # lung density


def test_spine_is_posterior_and_midline_and_denser_than_soft_tissue(phantoms):
    for ph in phantoms:
        slab = ph.hu[_z(-40.0) : _z(40.0), :, SIZE // 2 - 2 : SIZE // 2 + 2].max(axis=(0, 2))  # (H,) midline
        back = np.arange(SIZE) > SIZE / 2 + ph.params["body_y0"] / VOX
        assert slab[back].max() > 300.0  # vertebrae behind the body centre
        lateral = ph.hu[_z(-40.0) : _z(40.0), :, :6].max()
        assert lateral < slab[back].max()


def test_labels_are_consistent(phantoms):
    for ph in phantoms:
        for label in (1, 2):
            assert (ph.lung == label).sum() > 1000
        assert ph.vessels.sum() > 0 and not np.any(ph.vessels & (ph.lung == 0))  # vessels inside the lungs
        assert (ph.hu > 250).sum() > 0  # bone present


def test_lung_texture_and_noise_are_not_uniform(phantoms):
    ph = phantoms[0]
    assert ph.hu[ph.lung > 0].std() > 15.0
    soft = ph.hu[(ph.hu > -30) & (ph.hu < 150)]
    assert soft.std() > 15.0
