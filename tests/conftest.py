"""Shared fixtures: paths to the real chest CT, small phantom sets, synthetic DICOM series."""

from __future__ import annotations

import os
import random
from pathlib import Path

if "PYTEST_XDIST_WORKER_COUNT" in os.environ and "OMP_NUM_THREADS" not in os.environ:
    # pytest -n N (pyproject's addopts): each worker, and every run it starts, gets its share of
    # the cores; N workers with a thread per core each would oversubscribe them (set before torch
    # is imported, which reads it once)
    os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
#: The MONAI Model Zoo's own CI scripts and lint settings (tests run them from there, never copied in).
ZOO_CI = Path(os.environ.get("DUOLIFT_ZOO_CI", ROOT.parent / "shared" / "tools" / "model-zoo-ci"))
REAL_CT = Path(os.environ.get("DUOLIFT_TEST_CT", ROOT.parent / "shared" / "data" / "chest-ct-dicom" / "normal001"))


def hu_to_unit(hu):
    """HU -> the data contract's [0, 1] on X2CT's window (HU + 1024) / 2500, the tests' own reference."""
    return (hu + 1024.0) / 2500.0


def unit_to_hu(unit):
    """The inverse of :func:`hu_to_unit`."""
    return unit * 2500.0 - 1024.0


def dice(a, b) -> float:
    """DICE of two binary arrays (1.0 when both are empty), the tests' own reference."""
    a, b = np.asarray(a, dtype=bool), np.asarray(b, dtype=bool)
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


@pytest.fixture(scope="session")
def real_ct_dir() -> Path:
    if not REAL_CT.is_dir():
        pytest.skip(f"real chest CT not found at {REAL_CT} (set DUOLIFT_TEST_CT)")
    return REAL_CT


@pytest.fixture(scope="session")
def phantom_set(tmp_path_factory):
    """Four prepared 64^3-source phantoms (prepared to the 128^3 protocol) with a datalist."""
    from duolift_bundle.geometry import Protocol
    from duolift_bundle.synthetic.phantoms import make_phantom_set

    out = tmp_path_factory.mktemp("phantoms")
    summary = make_phantom_set(
        out, n=4, size=64, seed=10, protocol=Protocol.build(128, lazy=True), fractions=(0.5, 0.25, 0.25), progress=False
    )
    assert not summary["failed"], summary["failed"]
    return out


def write_dicom_series(
    folder: Path,
    volume: np.ndarray,
    spacing=(0.8, 0.8, 2.0),
    modality: str = "CT",
    series_number: int = 1,
    slope: float = 1.0,
    intercept: float = -1024.0,
    shuffle: bool = True,
    drop_tags: tuple[str, ...] = (),
    study_uid: str | None = None,
) -> str:
    """Write ``volume`` (slices, rows, cols) in HU as an uncompressed DICOM series with shuffled
    file names; slice k sits at z = 10 + k * spacing[2] (LPS). Returns the SeriesInstanceUID."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    series_uid = generate_uid()
    study_uid = study_uid or generate_uid()
    frame_uid = generate_uid()
    sop_class = {"CT": "1.2.840.10008.5.1.4.1.1.2", "MR": "1.2.840.10008.5.1.4.1.1.4"}[modality]
    order = list(range(volume.shape[0]))
    if shuffle:
        random.Random(series_number).shuffle(order)
    for name_idx, k in enumerate(order):
        uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = sop_class
        meta.MediaStorageSOPInstanceUID = uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, uid
        ds.Modality = modality
        ds.PatientID, ds.PatientName = "TEST", "Test^Phantom"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.SeriesNumber, ds.SeriesDescription = series_number, f"series {series_number}"
        ds.InstanceNumber = k + 1
        ds.SeriesDate = "20200101"
        ds.ImagePositionPatient = [-100.0, -120.0, 10.0 + k * spacing[2]]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [spacing[1], spacing[0]]
        ds.SliceThickness = spacing[2]
        ds.Rows, ds.Columns = volume.shape[1], volume.shape[2]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
        ds.PixelData = np.round((volume[k] - intercept) / slope).astype(np.uint16).tobytes()
        for tag in drop_tags:
            delattr(ds, tag)
        ds.save_as(folder / f"img{name_idx:03d}_{series_number}", enforce_file_format=True)
    return series_uid


def make_small_prepared(
    out: Path, n: int, seed: int, size: int = 32, splits: tuple[int, int, int] | None = None
) -> Path:
    """``n`` phantoms prepared at ``size``^3 with ``size`` px DRRs into ``out``; ``splits`` =
    (training, validation, test) counts rewrites the datalist (default: all in test)."""
    import json

    from duolift_bundle.synthetic.phantoms import make_phantom_set

    make_phantom_set(out, n=n, size=size, seed=seed, progress=False)  # prepared at size^3, size px DRRs
    datalist = json.loads((out / "datalist.json").read_text())
    cases = datalist["training"] + datalist["validation"] + datalist["test"]
    n_train, n_val, _ = splits or (0, 0, n)
    datalist.update(
        training=cases[:n_train], validation=cases[n_train : n_train + n_val], test=cases[n_train + n_val :]
    )
    (out / "datalist.json").write_text(json.dumps(datalist))
    return out


def write_dicom_xray(
    path: Path,
    pixels: np.ndarray,
    photometric: str = "MONOCHROME2",
    modality: str = "DX",
    frames: int = 1,
    pixel_data: bool = True,
    window=None,
    **tags,
) -> Path:
    """A radiograph as an uncompressed 16-bit DICOM file (``pixels`` as stored), with any other
    DICOM attributes given as ``tags`` (``ImagerPixelSpacing=[0.15, 0.15]``, ...)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # digital X-ray
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = (
        meta.MediaStorageSOPClassUID,
        meta.MediaStorageSOPInstanceUID,
        modality,
    )
    if pixel_data:
        arr = np.asarray(pixels, dtype=np.uint16)
        ds.Rows, ds.Columns = arr.shape[-2:]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        if frames > 1:
            ds.NumberOfFrames = frames
            arr = np.stack([arr] * frames)
        if window is not None:
            ds.WindowCenter, ds.WindowWidth = window
        ds.PixelData = arr.tobytes()
    for name, value in tags.items():
        setattr(ds, name, value)
    ds.save_as(path, enforce_file_format=True)
    return path
