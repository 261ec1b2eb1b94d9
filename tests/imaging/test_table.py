"""Table removal at the protocol's 1 mm stage: thin chest walls kept, a removal that would take
patient refused (and reported), tables removed, the slice-wise hole filling equal to scipy's."""

from __future__ import annotations

import dataclasses

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import hu_to_unit, unit_to_hu
from duolift_bundle.datasets.prepare import format_summary, prepare
from duolift_bundle.geometry import Protocol, TableRemoval
from duolift_bundle.imaging.lung_mask import fill_holes_per_slice
from duolift_bundle.imaging.table import RemoveTabled, remove_table
from duolift_bundle.io_utils import read_json
from duolift_bundle.synthetic.phantoms import make_phantom, write_raw_phantom
from scipy import ndimage as ndi

WALL_MM = 6.0


def _scipy_fill(mask: np.ndarray) -> np.ndarray:
    return np.stack([ndi.binary_fill_holes(s) for s in mask])


def _body_ml(hu: np.ndarray, voxel_mm: float) -> float:
    """Body volume of a prepared CT, measured independently: tissue, holes filled slice by slice
    with scipy (the lungs count when the wall encloses them)."""
    return float(_scipy_fill(hu > -500).sum()) * voxel_mm**3 / 1000.0


@pytest.fixture(scope="module")
def thin_patient(tmp_path_factory):
    """A phantom (2 mm voxels) cut to the slice-wise convex hull of its lungs and a 40 mm central
    band (mediastinum and spine), grown by a WALL_MM chest wall: a thin patient, as the elderly of
    LIDC-IDRI."""
    from skimage.morphology import ball, convex_hull_image

    ph = make_phantom(4, size=160)
    w = np.arange(160) * 2.0 - 160.0
    core = (ph.lung > 0) | ((np.abs(w) < 20.0)[None, None, :] & (ph.hu > -500))
    hull = np.stack([convex_hull_image(s) if s.any() else s for s in core])
    outline = ndi.binary_dilation(hull, structure=ball(int(WALL_MM / 2.0)))
    hu = np.where(outline, ph.hu, -1000.0).astype(np.float32)
    folder = tmp_path_factory.mktemp("thin_raw")
    return write_raw_phantom(dataclasses.replace(ph, hu=hu), folder, "thin")


def _prepared(source, root, size, **settings):
    summary = prepare([source], root, Protocol.build(size=size, lazy=True, **settings), progress=False)
    case = root / source.case_id
    hu = unit_to_hu(np.asarray(nib.load(case / "ct.nii.gz").dataobj, dtype=np.float32))
    return hu, read_json(case / "meta.json"), summary


@pytest.mark.parametrize("size", [64, 128])
def test_thin_chest_wall_is_kept(thin_patient, tmp_path, size):
    voxel = 320.0 / size
    kept, meta, summary = _prepared(thin_patient, tmp_path / "removed", size)
    whole, _, _ = _prepared(thin_patient, tmp_path / "whole", size, remove_table=False)
    assert meta["table_removal"]["applied"] and meta["table_removal"]["lungs_enclosed"] >= 0.99
    assert not summary["warnings"]
    assert _body_ml(kept, voxel) == pytest.approx(_body_ml(whole, voxel), rel=0.03)
    # the lungs keep their content: their voxels hold the same values as without the removal
    lungs = _scipy_fill(whole > -500) & (whole < -500)
    assert lungs.sum() * voxel**3 / 1000.0 > 1000.0  # the lungs are enclosed without the removal
    np.testing.assert_allclose(kept[lungs], whole[lungs], atol=1.0)


def test_a_removal_that_takes_patient_is_refused_and_reported(thin_patient, tmp_path):
    """An opening of 4 mm cuts the 6 mm wall: the check refuses, the CT is kept whole (equal to the
    preparation without removal) and meta.json, the summary and its text name the reason."""
    aggressive = {"opening_mm": 4.0}
    kept, meta, summary = _prepared(thin_patient, tmp_path / "refused", 64, table_removal=aggressive)
    whole, _, _ = _prepared(thin_patient, tmp_path / "whole", 64, remove_table=False)
    report = meta["table_removal"]
    assert report["applied"] is False and "refused" in report["reason"]
    assert report["lungs_enclosed"] < 0.99 or report["patient_removed_ml"] > 5.0
    # kept whole: equal to the preparation without removal, up to the lazy resampling's split
    # into two interpolations around the 1 mm step (a few HU)
    assert float(np.abs(kept - whole).mean()) < 5.0
    assert _body_ml(kept, 5.0) == pytest.approx(_body_ml(whole, 5.0), rel=0.01)
    assert list(summary["warnings"]) == ["thin"]
    assert "WARNING thin: table removal refused" in format_summary(summary)


def test_table_is_removed_and_body_kept():
    """A 4 mm table 10 mm under the back (not touching it) is set to air at 1 mm; the body is not."""
    ph = make_phantom(2, size=160)
    hu = ph.hu.copy()
    body = _scipy_fill(ph.hu > -500)
    back = int(np.flatnonzero(body.any(axis=(0, 2))).max())
    hu[:, back + 5 : back + 7, 20:140] = 300.0
    keep, report = remove_table(hu, (2.0, 2.0, 2.0))
    assert report.applied and report.removed_ml > 100.0 and report.patient_removed_ml == 0.0
    assert not keep[:, back + 5 : back + 7, 20:140].any()
    assert keep[body].all()


def test_transform_keeps_meta_and_reports():
    from monai.data import MetaTensor

    ph = make_phantom(3, size=64)
    ct = MetaTensor(torch.from_numpy(np.clip(hu_to_unit(ph.hu), 0, 1))[None], affine=torch.from_numpy(ph.affine))
    out = RemoveTabled()(dict(ct=ct))["ct"]
    assert isinstance(out, MetaTensor) and torch.equal(out.affine, ct.affine)
    assert set(out.meta["table_removal"]) >= {"applied", "removed_ml", "lungs_enclosed", "reason"}
    with pytest.raises(ValueError, match="needs the voxel size"):
        RemoveTabled()({"ct": ct.as_tensor()})


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_fill_holes_per_slice_equals_scipy(seed):
    rng = np.random.default_rng(seed)
    mask = ndi.binary_opening(rng.random((6, 40, 50)) > 0.45)
    np.testing.assert_array_equal(fill_holes_per_slice(mask), _scipy_fill(mask))


def test_settings_are_a_protocol_field():
    p = Protocol.build(size=64, table_removal={"opening_mm": 2.0})
    assert p.ct.table_removal == TableRemoval(opening_mm=2.0)
    assert Protocol(**p.to_dict()) == p
