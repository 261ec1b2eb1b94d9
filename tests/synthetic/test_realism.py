"""Realism statistics (duolift_bundle/synthetic/realism.py) on volumes whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import hu_to_unit
from duolift_bundle.imaging.lung_mask import body_mask
from duolift_bundle.synthetic.realism import STATISTICS, TRUNK, chest_statistics, compare

VOX = 5.0  # mm; a 64^3 grid covers 320 mm


def _box_chest():
    """Body box 200 mm (W) x 150 mm (H) x 100 mm (D), 0 HU with a fat half; two lung boxes; a bone bar."""
    hu = np.full((64, 64, 64), -1000.0, dtype=np.float32)
    hu[10:30, 20:50, 12:52] = 40.0  # D 20 vox = 100 mm, H 30 vox = 150 mm, W 40 vox = 200 mm
    hu[10:30, 20:35, 12:52] = -100.0  # anterior half fat
    lung = np.zeros_like(hu, dtype=np.uint8)
    lung[12:28, 25:45, 16:28] = 1
    lung[12:28, 25:45, 36:48] = 2
    hu[lung > 0] = -850.0
    hu[10:30, 46:48, 30:34] = 400.0  # bone bar
    hu[40:42, 60:62, 5:60] = 300.0  # a separate table-like bar: not body
    xray = np.stack([np.linspace(0, 1, 64 * 64).reshape(64, 64)] * 2).astype(np.float32)
    xray[1] = 0.0
    xray[1][:, 16:48] = 1.0  # lateral profile: 32 of 64 columns at the maximum
    return hu, lung, xray


def test_box_chest_statistics_match_their_construction():
    hu, lung, xray = _box_chest()
    s = chest_statistics(hu_to_unit(hu), lung, xray, VOX)
    assert list(s) == list(STATISTICS)
    assert s["body_width_mm"] == pytest.approx(200.0) and s["body_depth_mm"] == pytest.approx(150.0)
    assert s["body_width_share"] == pytest.approx(200.0 / 320.0)
    # box centre: W voxels 12..51 -> 31.5 = the grid centre; H 20..49 -> 34.5, 3 voxels posterior
    assert s["body_centre_lr_mm"] == pytest.approx(0.0, abs=0.5)
    assert s["body_centre_ap_mm"] == pytest.approx(3.0 * VOX, abs=1.0)
    assert s["scan_length_mm"] == pytest.approx(100.0)
    assert s["lung_volume_ml"] == pytest.approx(lung.astype(bool).sum() * VOX**3 / 1000.0)
    assert s["lung_height_mm"] == pytest.approx(16 * VOX)
    assert s["lung_top_mm"] == pytest.approx((12 - 31.5) * VOX) and s["diaphragm_mm"] == pytest.approx(
        (27 - 31.5) * VOX
    )
    body = 20 * 30 * 40
    assert s["share_lung"] == pytest.approx(lung.astype(bool).sum() / body, rel=1e-3)
    assert s["share_bone"] == pytest.approx(20 * 2 * 4 / body, rel=1e-3)
    assert s["hu_lung"] == pytest.approx(-850.0, abs=1.0) and s["hu_fat"] == pytest.approx(-100.0, abs=1.0)
    assert s["hu_soft"] == pytest.approx(40.0, abs=1.0) and s["hu_bone"] == pytest.approx(400.0, abs=1.0)
    assert s["drr_frontal_p50"] == pytest.approx(0.5, abs=1e-3) and s["drr_frontal_p5"] == pytest.approx(0.05, abs=1e-3)
    assert s["lateral_fwhm"] == pytest.approx(0.5) and s["lateral_peak"] == pytest.approx(16 / 63)


def test_trunk_body_mask_fills_the_lungs_and_drops_the_table():
    hu, lung, _ = _box_chest()
    body = body_mask(hu, **TRUNK)
    assert body[lung > 0].all()
    assert not body[40:42, 60:62].any()


def test_a_single_view_leaves_the_lateral_statistics_undefined():
    hu, lung, xray = _box_chest()
    s = chest_statistics(hu_to_unit(hu), lung, xray[:1], VOX)
    assert np.isnan(s["lateral_fwhm"]) and np.isnan(s["drr_lateral_p50"]) and not np.isnan(s["drr_frontal_p50"])


@pytest.mark.parametrize("synthetic, inside", [([1.0, 3.0], True), ([5.0, 7.0], False), ([-2.0, 0.0], False)])
def test_compare_flags_means_outside_the_real_range(synthetic, inside):
    real = [dict.fromkeys(STATISTICS, v) for v in (0.5, 2.5)]
    syn = [dict.fromkeys(STATISTICS, v) for v in synthetic]
    c = compare(real, syn)["body_width_mm"]
    assert c["inside"] is inside and c["real_min"] == 0.5 and c["synthetic_max"] == max(synthetic)
