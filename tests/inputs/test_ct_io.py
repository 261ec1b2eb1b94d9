"""CT loading: DICOM series order, series choice, padding values and every kind of bad input."""

from __future__ import annotations

import gzip
import logging

import nibabel as nib
import numpy as np
import pytest
from conftest import write_dicom_series
from duolift_bundle.geometry import CTProtocol
from duolift_bundle.inputs.ct_io import CTInputError, load_ct, select_ct_series
from duolift_bundle.transforms.ct_protocol import ct_protocol


def _volume(n_slices=6, rows=24, cols=20, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(-1000, 1500, size=(n_slices, rows, cols)).astype(np.float32)


def test_dicom_series_sorted_by_position_and_rescaled(tmp_path):
    vol = _volume()
    write_dicom_series(tmp_path / "s", vol, slope=2.0, intercept=-2048.0)
    img = load_ct(tmp_path / "s")
    # ITK index order (x, y, z): slice k of the file set, by position, is img[0, :, :, k].T
    arr = img[0].numpy().transpose(2, 1, 0)
    assert arr.shape == vol.shape
    np.testing.assert_allclose(arr, np.round((vol + 2048) / 2) * 2 - 2048)
    assert np.allclose(img.pixdim[:3].numpy(), [0.8, 0.8, 2.0])
    assert "series 1" in img.meta["ct_series"]


def test_folder_with_several_series_picks_largest_ct_and_says_so(tmp_path, caplog):
    folder = tmp_path / "mixed"
    write_dicom_series(folder, _volume(6), series_number=1)
    small_uid = write_dicom_series(folder, _volume(4, seed=1), series_number=2)
    write_dicom_series(folder, _volume(9, seed=2), modality="MR", series_number=3)
    with caplog.at_level(logging.INFO, logger="duolift_bundle.inputs.ct_io"):
        chosen = select_ct_series(folder)
    assert chosen.modality == "CT" and chosen.n_slices == 6
    assert "3 series present" in caplog.text and "took series 1" in caplog.text
    assert select_ct_series(folder, series=small_uid).n_slices == 4
    assert load_ct(folder, series="2").shape[-1] == 4
    with pytest.raises(CTInputError, match="series '9.9.9' not found"):
        select_ct_series(folder, series="9.9.9")


def test_padding_values_become_air(tmp_path):
    """-3024 outside the scan circle must blend like air (-1024), not like -3024."""
    vol = np.zeros((8, 32, 32), np.float32)
    vol[:, :, :16] = -3024.0
    aff = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.Nifti1Image(vol.transpose(2, 1, 0), aff).to_filename(tmp_path / "pad.nii.gz")
    out = ct_protocol(protocol=CTProtocol(crop_size=64, size=64, z_anchor="center"))(
        {"ct": load_ct(tmp_path / "pad.nii.gz")}
    )["ct"]
    edge = out[0].numpy()
    blended = edge[(edge > 0.02) & (edge < 0.39)]
    assert blended.size > 0, "the air/water boundary should be interpolated between -1024 and 0 HU"
    assert edge.min() >= 0.0


def _nifti(path, arr, aff=None):
    nib.Nifti1Image(arr, np.eye(4) if aff is None else aff).to_filename(path)
    return path


@pytest.mark.parametrize(
    "case, message",
    [
        ("empty_folder", "no DICOM image series"),
        ("mr_only", r"no CT series \(modality MR\)"),
        ("truncated", "cannot read the image"),
        ("nan", "NaN/Inf voxels"),
        ("two_d", "3D CT volume is required"),
        ("absurd_spacing", "implausible voxel spacing"),
        ("zero_spacing", "missing or zero voxel spacing"),
        ("dicom_no_spacing", "missing DICOM tag PixelSpacing"),
        ("single_slice", "single slice"),
        ("wrong_suffix", "unsupported CT file type"),
        ("missing", "no such file or folder"),
    ],
)
def test_bad_inputs_name_the_file(tmp_path, case, message):
    if case == "empty_folder":
        path = tmp_path / "empty"
        path.mkdir()
        (path / "notes.txt").write_text("not a dicom")
    elif case == "mr_only":
        path = tmp_path / "mr"
        write_dicom_series(path, _volume(5), modality="MR")
    elif case == "truncated":
        good = _nifti(tmp_path / "good.nii.gz", np.zeros((16, 16, 16), np.float32))
        raw = gzip.decompress(good.read_bytes())
        path = tmp_path / "truncated.nii.gz"
        path.write_bytes(gzip.compress(raw[: len(raw) // 2]))
    elif case == "nan":
        arr = np.zeros((16, 16, 16), np.float32)
        arr[3, 4, 5] = np.nan
        path = _nifti(tmp_path / "nan.nii.gz", arr)
    elif case == "two_d":
        path = _nifti(tmp_path / "flat.nii.gz", np.zeros((32, 32), np.float32))
    elif case == "absurd_spacing":
        path = _nifti(tmp_path / "huge.nii.gz", np.zeros((16, 16, 16), np.float32), np.diag([100.0, 100.0, 100.0, 1.0]))
    elif case == "zero_spacing":
        img = nib.Nifti1Image(np.zeros((16, 16, 16), np.float32), None)  # no s/q-form: pixdim decides
        path = tmp_path / "zero.nii"
        img.to_filename(path)
        raw = bytearray(path.read_bytes())
        raw[80:84] = np.float32(0.0).tobytes()  # pixdim[1] = 0 (nibabel refuses to write it)
        path.write_bytes(bytes(raw))
    elif case == "dicom_no_spacing":
        path = tmp_path / "nospacing"
        write_dicom_series(path, _volume(4), drop_tags=("PixelSpacing",))
    elif case == "single_slice":
        path = tmp_path / "one"
        write_dicom_series(path, _volume(1))
    elif case == "wrong_suffix":
        path = tmp_path / "scan.png"
        path.write_bytes(b"\x89PNG")
    else:
        path = tmp_path / "nowhere.nii.gz"
    with pytest.raises(CTInputError, match=message) as info:
        load_ct(path)
    assert str(path) in str(info.value)


def test_real_chest_ct_loads(real_ct_dir):
    img = load_ct(real_ct_dir)
    assert tuple(img.shape) == (1, 512, 512, 154)
    assert np.allclose(img.pixdim[:3].numpy(), [0.635, 0.635, 2.0], atol=1e-3)
    assert float(img.min()) == pytest.approx(-1024.0) and float(img.max()) == pytest.approx(1679.0)
