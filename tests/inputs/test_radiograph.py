"""Radiographs in physical units (duolift_bundle/inputs/radiograph.py, xray_placement.py): a DRR
written as a film of another pixel size, orientation or view position comes back to the DRR the
network was trained on. The reference is the bundle's DRR projector, which ray-traces at the
detector's resolution and area-resamples with PyTorch."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import write_dicom_xray
from duolift_bundle.datasets.sample import sample_dir
from duolift_bundle.geometry import Protocol
from duolift_bundle.inputs.radiograph import RadiographSettings, load_radiograph
from duolift_bundle.inputs.radiograph_placement import estimate_pixel_mm, field_mm
from duolift_bundle.transforms.drr import DRRProjector
from PIL import Image

PROTOCOL = Protocol.build(size=64)
GEOMETRY = PROTOCOL.drr.geometry
PHYSICAL = RadiographSettings()


def write_film(path: Path, image: np.ndarray, **tags) -> Path:
    """A 16-bit DICOM radiograph (DX, MONOCHROME2) of ``image`` in [0, 1] with ``tags``."""
    return write_dicom_xray(path, np.round(np.asarray(image) * 60000), **tags)


@pytest.fixture(scope="module")
def drrs():
    """The held-out sample CT's DRRs at the detector's 320 px (1.5625 mm) and at the network's 64 px."""
    ct = torch.as_tensor(np.asarray(nib.load(sample_dir(64) / "normal001" / "ct.nii.gz").dataobj, np.float32))[
        None, None
    ]
    fine = DRRProjector(
        dataclasses.replace(
            PROTOCOL, drr=dataclasses.replace(PROTOCOL.drr, geometry=dataclasses.replace(GEOMETRY, output_size=320))
        )
    )
    with torch.no_grad():
        return fine(ct)[0].numpy(), DRRProjector(PROTOCOL)(ct)[0].numpy()


def close_to(out: np.ndarray, reference: np.ndarray, share: float = 0.01) -> None:
    """Every pixel within ``share`` of the reference's range."""
    assert out.shape == reference.shape
    assert np.abs(out - reference).max() <= share * np.ptp(reference), np.abs(out - reference).max()


def test_a_detector_resolution_drr_as_dicom_comes_back(tmp_path, drrs):
    fine, coarse = drrs
    film = write_film(
        tmp_path / "frontal.dcm",
        fine[0],
        ImagerPixelSpacing=[1.5625, 1.5625],
        DistanceSourceToDetector=949,
        DistanceSourceToPatient=541,
        PatientOrientation=["L", "F"],
        ViewPosition="PA",
    )
    out, info = load_radiograph(film, "frontal", PROTOCOL, PHYSICAL)
    close_to(out, coarse[0])
    assert info["pixel_mm"] == pytest.approx([1.5625 * 541 / 949] * 2, rel=1e-4) and not info["spacing_estimated"]
    assert "DistanceSourceToDetector / DistanceSourceToPatient" in info["spacing_source"] and info["notes"] == []


def test_a_fine_film_with_a_border_comes_back(tmp_path, drrs):
    """The DRR on a 0.15 mm film, 30 mm of empty border around it (the film is larger than the
    detector field: cropped to the field, not squeezed)."""
    fine, coarse = drrs
    pitch, border = 0.15, 200
    n = int(round(500 / pitch))
    centres = (np.arange(n) + 0.5) * (500 / n)  # detector mm of each film pixel
    index = np.minimum((centres / 1.5625).astype(int), 319)
    film = np.zeros((n + 2 * border, n + 2 * border), np.float32)
    film[border:-border, border:-border] = fine[0][np.ix_(index, index)]
    path = write_film(
        tmp_path / "frontal.dcm",
        film,
        ImagerPixelSpacing=[500 / n, 500 / n],
        EstimatedRadiographicMagnificationFactor=949 / 541,
    )
    out, info = load_radiograph(path, "frontal", PROTOCOL, PHYSICAL)
    close_to(out, coarse[0])
    assert "EstimatedRadiographicMagnificationFactor" in info["spacing_source"]


@pytest.mark.parametrize(
    "view, orientation, flip, position, note",
    [
        ("frontal", ["R", "F"], (slice(None), slice(None, None, -1)), "PA", None),  # stored mirrored
        ("frontal", ["L", "H"], (slice(None, None, -1), slice(None)), "PA", None),  # stored upside down
        ("frontal", ["L", "F"], (slice(None), slice(None)), "AP", "AP film"),  # flagged, not flipped
        ("lateral", ["A", "F"], (slice(None), slice(None, None, -1)), "RL", None),  # seen from the right
        ("lateral", ["P", "F"], (slice(None), slice(None)), "LL", None),
    ],
)
def test_orientation_from_the_file(tmp_path, drrs, view, orientation, flip, position, note):
    fine, coarse = drrs
    v = 0 if view == "frontal" else 1
    path = write_film(
        tmp_path / f"{view}.dcm",
        fine[v][flip],
        PixelSpacing=[1.5625 * 541 / 949] * 2,
        PatientOrientation=orientation,
        ViewPosition=position,
    )
    out, info = load_radiograph(path, view, PROTOCOL, PHYSICAL)
    close_to(out, coarse[v])
    assert any(note in n for n in info["notes"]) if note else info["notes"] == []


def test_the_prepared_nifti_drr_is_the_training_input():
    """prepare_data.py's DRR NIfTI (pixdim at the DRR detector) reaches the network unchanged."""
    path = sample_dir(64) / "normal001" / "xray_lateral.nii.gz"
    stored = np.asarray(nib.load(path).dataobj, np.float32)
    out, info = load_radiograph(path, "lateral", PROTOCOL, PHYSICAL)
    np.testing.assert_allclose(out, stored, atol=1e-5)
    assert info["pixel_mm"] == pytest.approx([field_mm(GEOMETRY) / 64] * 2, rel=1e-5)


def test_a_small_film_is_padded_not_stretched(tmp_path, drrs):
    """A film covering the central half of the field lands in the centre at its true size, air
    (0) around it, with a note."""
    _, coarse = drrs
    half = coarse[0][16:48, 16:48]
    path = tmp_path / "frontal.png"
    Image.fromarray(np.round(half / half.max() * 255).astype(np.uint8), "L").save(path)
    (tmp_path / "frontal.json").write_text(json.dumps({"pixel_spacing": [field_mm(GEOMETRY) / 64] * 2}))
    out, info = load_radiograph(path, "frontal", PROTOCOL, PHYSICAL)
    assert np.all(out[:16] == 0) and np.all(out[:, 48:] == 0)
    np.testing.assert_allclose(out[16:48, 16:48], half / half.max(), atol=1 / 255)
    assert info["film_fraction"] == pytest.approx(0.25) and any("covers 25%" in n for n in info["notes"])
    assert info["spacing_source"].startswith("sidecar")


@pytest.mark.parametrize(
    "tags, override, source",
    [
        ({"PixelSpacing": [0, 0]}, None, "estimate: lung field width"),  # as RG1_UNCI.dcm says
        ({"ImagerPixelSpacing": [50.0, 50.0]}, None, "estimate: lung field width"),  # a 16 m film: nonsense
        ({}, 1.5625 * 541 / 949, "xray_pixel_spacing"),
    ],
)
def test_missing_or_absurd_spacing_falls_back_and_says_so(tmp_path, drrs, tags, override, source):
    fine, coarse = drrs
    path = write_film(tmp_path / "frontal.dcm", fine[0], **tags)
    out, info = load_radiograph(path, "frontal", PROTOCOL, RadiographSettings(pixel_spacing=override))
    assert info["spacing_source"].startswith(source)
    true_mm = 1.5625 * 541 / 949
    if override is None:
        assert info["spacing_estimated"] and sum("estimated" in n for n in info["notes"]) == 1  # said once
        # the DRR's field cuts the held-out CT's lungs (275 mm wide) at its edges; the estimate
        # takes the visible width as the reference's 253 mm and lands within 15 %
        assert info["pixel_mm"][0] == pytest.approx(true_mm, rel=0.15)
    else:
        close_to(out, coarse[0])


def test_settings_are_checked():
    with pytest.raises(ValueError, match="xray_placement must be one of"):
        RadiographSettings(placement="stretch")
    with pytest.raises(ValueError, match="needs xray_reference"):
        RadiographSettings(contrast="histogram")
    with pytest.raises(ValueError, match="xray_magnification must be >= 1"):
        RadiographSettings(magnification=0.5)


def test_a_film_without_lung_fields_is_scaled_by_its_shorter_side_and_says_so_whole():
    """No two lung fields in a flat image: the shorter side is taken as the field, and the note
    names the field and the pixel size (the whole sentence, not its first half)."""
    geometry = Protocol.build(size=64).drr.geometry
    spacing = estimate_pixel_mm(np.full((300, 200), 0.5, dtype=np.float32), geometry, "no pixel size in the file")
    field = field_mm(geometry)
    assert spacing.estimated and spacing.row_mm == pytest.approx(field / 200)
    assert spacing.note.endswith(f"taken as the {field:.0f} mm field ({field / 200:.3f} mm per pixel)")
