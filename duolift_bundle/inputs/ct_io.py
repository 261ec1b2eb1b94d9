"""Reading raw chest CT: a NIfTI / MHD / NRRD file or a DICOM series folder, validated.

MONAI's :class:`~monai.transforms.LoadImage` does the reading (``NibabelReader`` for NIfTI,
``ITKReader`` for MetaImage / NRRD and DICOM series; ITK/GDCM sorts slices by position, applies
rescale slope / intercept and decodes JPEG-Lossless). This module adds what a raw-data pipeline
needs around it: choosing the CT series in a folder that holds several, and refusing inputs that
would silently produce garbage (2D images, NaN / Inf voxels, missing or absurd spacing, non-CT
modalities, truncated files), with errors that name the file and the problem.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
import torch
from duolift_bundle.errors import DuoLiftError
from monai.config import KeysCollection
from monai.data import ITKReader, MetaTensor, NibabelReader
from monai.transforms import LoadImage, MapTransform

__all__ = [
    "CTInputError",
    "DicomSeries",
    "list_dicom_series",
    "select_ct_series",
    "load_ct",
    "LoadCTd",
    "NIFTI_SUFFIXES",
    "ITK_SUFFIXES",
    "is_volume_file",
    "without_decoder_notice",
    "file_suffix",
    "is_3d_volume",
    "is_dicom_file",
]

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii", ".nii.gz")
ITK_SUFFIXES = (".mhd", ".mha", ".nrrd", ".nhdr")

#: Voxel sizes outside this range (mm) are treated as corrupt headers.
SPACING_LIMITS_MM = (0.05, 20.0)


class CTInputError(DuoLiftError, ValueError):
    """A CT input that cannot be used; the message names the file and the problem."""


@dataclass
class DicomSeries:
    """One DICOM series found in a folder."""

    identifier: str  # GDCM series identifier (what ITKReader's ``series_name`` expects)
    series_uid: str
    modality: str
    description: str
    number: str
    files: list[str] = field(default_factory=list)

    @property
    def n_slices(self) -> int:
        return len(self.files)

    def label(self) -> str:
        return f"series {self.number or '?'} '{self.description}' ({self.modality}, {self.n_slices} files, UID {self.series_uid})"


@contextlib.contextmanager
def without_decoder_notice() -> Iterator[None]:
    """Build MONAI image loaders in here: ``LoadImage`` / ``LoadImaged`` register every MONAI
    reader, and the GPU DICOM one warns that its optional decoder (nvImageCodec, not installed with
    the bundle) is absent, a notice no user can act on (its logger's is set to errors only in
    ``configs/logging.conf``)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader", category=UserWarning)
        yield


def is_volume_file(path: str | os.PathLike) -> bool:
    """True for a file name with a NIfTI / MetaImage / NRRD suffix."""
    return file_suffix(path) in NIFTI_SUFFIXES + ITK_SUFFIXES


def file_suffix(path: str | os.PathLike) -> str:
    """The lower-case suffix of a file name, ``.nii.gz`` kept whole (``"a/CT.NII.GZ"`` -> ``".nii.gz"``)."""
    name = os.path.basename(os.fspath(path)).lower()
    return ".nii.gz" if name.endswith(".nii.gz") else os.path.splitext(name)[1]


def is_3d_volume(path: str | os.PathLike) -> bool:
    """True for a CT volume file: MetaImage / NRRD, or a NIfTI with three dimensions of more than one
    voxel (a 2D NIfTI is a radiograph). Raises :class:`CTInputError` for a NIfTI name on an
    unreadable file."""
    suffix = file_suffix(path)
    if suffix in NIFTI_SUFFIXES:
        try:
            shape = nib.load(os.fspath(path)).shape
        except Exception as err:  # nibabel raises ImageFileError / OSError / EOFError on bad files
            raise CTInputError(f"{os.path.basename(path)}: not a readable NIfTI file ({err})") from err
        return sum(int(s) > 1 for s in shape) >= 3
    return suffix in ITK_SUFFIXES


def _gdcm_series(folder: str) -> dict[str, list[str]]:
    import itk  # imported lazily: ITK's import takes seconds

    gen = itk.GDCMSeriesFileNames.New()
    # the same settings as monai.data.ITKReader, so identifiers match its ``series_name``
    gen.SetUseSeriesDetails(True)
    gen.AddSeriesRestriction("0008|0021")
    gen.SetDirectory(folder)
    return {str(uid): [str(f) for f in gen.GetFileNames(uid)] for uid in gen.GetSeriesUIDs()}


def list_dicom_series(folder: str | os.PathLike) -> list[DicomSeries]:
    """All DICOM series directly inside ``folder`` with their modality and file lists."""
    import pydicom

    folder = str(folder)
    if not os.path.isdir(folder):
        raise CTInputError(f"{folder}: not a folder")
    series = []
    for ident, files in _gdcm_series(folder).items():
        try:
            ds = pydicom.dcmread(files[0], stop_before_pixels=True)
        except Exception as exc:  # pydicom raises several types for corrupt headers
            raise CTInputError(f"{files[0]}: unreadable DICOM header ({exc})") from exc
        series.append(
            DicomSeries(
                identifier=ident,
                series_uid=str(getattr(ds, "SeriesInstanceUID", "")),
                modality=str(getattr(ds, "Modality", "")),
                description=str(getattr(ds, "SeriesDescription", "")),
                number=str(getattr(ds, "SeriesNumber", "")),
                files=files,
            )
        )
    return series


def select_ct_series(folder: str | os.PathLike, series: str | None = None) -> DicomSeries:
    """Choose the CT series to read from a DICOM folder.

    Args:
        folder: a folder holding the DICOM files of one or more series.
        series: optional SeriesInstanceUID, SeriesNumber or GDCM identifier to take; by default the
            CT series with the most slices.

    Raises:
        CTInputError: no DICOM, no CT series, the named series is absent, or a header lacks spacing.
    """
    found = list_dicom_series(folder)
    if not found:
        raise CTInputError(f"{folder}: no DICOM image series found")
    if series is not None:
        chosen = [
            s for s in found if series in (s.series_uid, s.number, s.identifier) or s.identifier.startswith(series)
        ]
        if not chosen:
            listing = "; ".join(s.label() for s in found)
            raise CTInputError(f"{folder}: series {series!r} not found (present: {listing})")
        pick = chosen[0]
    else:
        cts = [s for s in found if s.modality.upper() == "CT"]
        if not cts:
            mods = sorted({s.modality or "unknown" for s in found})
            raise CTInputError(f"{folder}: no CT series (modality {', '.join(mods)}); a CT volume is required")
        pick = max(cts, key=lambda s: s.n_slices)
    if pick.modality.upper() != "CT":
        raise CTInputError(f"{folder}: {pick.label()} is not a CT series")
    if pick.n_slices < 2:
        raise CTInputError(f"{folder}: {pick.label()} has a single slice; a 3D CT volume is required")
    if len(found) > 1:
        logger.info("%s: %d series present, took %s", folder, len(found), pick.label())
    _check_dicom_geometry(pick, str(folder))
    return pick


#: relative deviation of a slice gap from the median gap that makes a series non-uniform
SLICE_GAP_TOLERANCE = 0.05


def _check_dicom_geometry(series: DicomSeries, folder: str) -> None:
    """Refuse a series that ITK would read as whole although it is not: files that GDCM could
    not parse (truncated or corrupt slices are left out of its file list and the gap is then
    interpolated over), pixel data shorter than the header says, slices without a position,
    duplicated positions and gaps that differ from the others. Every message names the files."""
    import pydicom

    headers = {}
    for path in series.files:
        try:
            headers[path] = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:  # pydicom raises several types for corrupt headers
            raise CTInputError(f"{path}: unreadable DICOM header ({type(exc).__name__}: {exc})") from exc
    first = headers[series.files[0]]
    for tag in ("PixelSpacing", "ImageOrientationPatient"):
        if tag not in first:
            raise CTInputError(f"{series.files[0]}: missing DICOM tag {tag}; cannot place the volume in space")
    # files of this series that GDCM left out of its list: unreadable for the reader
    listed = {os.path.realpath(p) for p in series.files}
    left_out = []
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        if os.path.realpath(path) in listed or not os.path.isfile(path) or name.startswith("."):
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SeriesInstanceUID", "Modality"])
            uid = str(getattr(ds, "SeriesInstanceUID", ""))
        except Exception:  # pydicom raises several types for broken files
            uid = ""
        # a file of this series that GDCM could not parse, or a DICOM file too broken to tell
        if uid == series.series_uid or (not uid and is_dicom_file(path)):
            left_out.append(name)
    if left_out:
        raise CTInputError(
            f"{folder}: {len(left_out)} file(s) of the CT series cannot be read ({_names(left_out)}); refusing an incomplete series"
        )
    short = []
    for path, ds in headers.items():
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        if syntax is None or syntax.is_compressed:
            continue
        need = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated) // 8
        if os.path.getsize(path) < need:
            short.append(os.path.basename(path))
    if short:
        raise CTInputError(
            f"{folder}: {len(short)} slice file(s) cut short, less pixel data than their header says ({_names(short)})"
        )
    no_pos = [os.path.basename(p) for p, ds in headers.items() if "ImagePositionPatient" not in ds]
    if no_pos:
        raise CTInputError(
            f"{folder}: {len(no_pos)} slice file(s) without ImagePositionPatient ({_names(no_pos)}); cannot "
            f"place the volume in space"
        )
    orient = np.asarray(first.ImageOrientationPatient, dtype=float)
    normal = np.cross(orient[:3], orient[3:])
    pos = sorted(
        (float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float))), os.path.basename(p))
        for p, ds in headers.items()
    )
    z = np.array([p[0] for p in pos])
    gaps = np.diff(z)
    dup = [f"{pos[i][1]} and {pos[i + 1][1]}" for i in np.flatnonzero(gaps < 1e-3)]
    if dup:
        raise CTInputError(
            f"{folder}: slices at the same position ({'; '.join(dup[:5])}); refusing a series with duplicated slices"
        )
    median = float(np.median(gaps))
    bad = np.flatnonzero(np.abs(gaps - median) > SLICE_GAP_TOLERANCE * median)
    if bad.size:
        where = "; ".join(f"{gaps[i]:.3g} mm between {pos[i][1]} and {pos[i + 1][1]}" for i in bad[:5])
        raise CTInputError(
            f"{folder}: non-uniform slice spacing (median {median:.3g} mm; {where}); slices are missing or the "
            f"series mixes spacings"
        )


def is_dicom_file(path: str) -> bool:
    """True when ``path`` is a file with the DICOM preamble (or a ``.dcm`` name)."""
    if not os.path.isfile(path):
        return False
    if path.lower().endswith(".dcm"):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _names(names: list[str], n: int = 5) -> str:
    return ", ".join(names[:n]) + (f" and {len(names) - n} more" if len(names) > n else "")


def _check_file_header(path: str) -> None:
    """Spacing that a reader would silently default to 1 mm: refuse it here."""
    low = path.lower()
    if low.endswith(NIFTI_SUFFIXES):
        import nibabel as nib

        try:  # check=False: nibabel would silently turn a zero pixdim into 1
            with nib.openers.ImageOpener(path) as fobj:
                header = nib.Nifti1Header.from_fileobj(fobj, check=False)
        except Exception as exc:  # nibabel raises several types for corrupt headers
            raise CTInputError(f"{path}: cannot read the NIfTI header ({type(exc).__name__}: {exc})") from exc
        coded = int(header["sform_code"]) > 0 or int(header["qform_code"]) > 0
        zooms = np.asarray(header["pixdim"][1:4], dtype=float)
        if not coded and (not np.all(np.isfinite(zooms)) or np.any(zooms <= 0)):
            raise CTInputError(f"{path}: missing or zero voxel spacing {zooms.tolist()} in the header")
    elif low.endswith(".mhd"):
        with open(path, errors="replace") as f:
            text = f.read(4096)
        if "ElementSpacing" not in text and "ElementSize" not in text:
            raise CTInputError(f"{path}: missing voxel spacing (no ElementSpacing in the MetaImage header)")


def _reader_for(path: str, series: DicomSeries | None):
    if series is not None:
        return ITKReader(series_name=series.identifier)
    if path.lower().endswith(NIFTI_SUFFIXES):
        return NibabelReader()
    return ITKReader()


def _validate(img: MetaTensor, source: str, spacing_limits: Sequence[float]) -> None:
    spatial = img.shape[1:]
    if len(spatial) != 3 or min(spatial) < 2:
        raise CTInputError(f"{source}: a 3D CT volume is required, got an image of shape {tuple(spatial)}")
    spacing = np.linalg.norm(np.asarray(img.affine, dtype=float)[:3, :3], axis=0)
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise CTInputError(f"{source}: missing or zero voxel spacing {spacing.tolist()} in the header")
    lo, hi = spacing_limits
    if np.any(spacing < lo) or np.any(spacing > hi):
        raise CTInputError(
            f"{source}: implausible voxel spacing {np.round(spacing, 4).tolist()} mm (expected {lo}..{hi} mm)"
        )
    arr = img.as_tensor()
    finite = torch.isfinite(arr)
    if not bool(finite.all()):
        n_bad = int((~finite).sum())
        raise CTInputError(f"{source}: {n_bad} NaN/Inf voxels")


def load_ct(
    path: str | os.PathLike,
    series: str | None = None,
    spacing_limits: Sequence[float] = SPACING_LIMITS_MM,
) -> MetaTensor:
    """Load one CT in HU as a channel-first MetaTensor ``(1, X, Y, Z)`` with a RAS affine.

    Args:
        path: NIfTI / MHD / NRRD file, or a folder with a DICOM series.
        series: for a DICOM folder, the series to take (see :func:`select_ct_series`).
        spacing_limits: plausible voxel sizes in mm.

    The chosen DICOM series is recorded in ``meta["ct_series"]``; the source in ``meta["ct_source"]``.
    """
    path = str(path)
    if not os.path.exists(path):
        raise CTInputError(f"{path}: no such file or folder")
    chosen = None
    if os.path.isdir(path):
        chosen = select_ct_series(path, series)
    elif not is_volume_file(path):
        raise CTInputError(
            f"{path}: unsupported CT file type (expected a DICOM folder or {NIFTI_SUFFIXES + ITK_SUFFIXES})"
        )
    else:
        _check_file_header(path)
    with without_decoder_notice():
        loader = LoadImage(
            reader=_reader_for(path, chosen), image_only=True, ensure_channel_first=True, dtype=np.float32
        )
    try:
        img = loader(path)
    except CTInputError:
        raise
    except Exception as exc:  # readers raise RuntimeError / EOFError / OSError / ValueError on bad files
        raise CTInputError(f"{path}: cannot read the image ({type(exc).__name__}: {str(exc).strip()[:300]})") from exc
    if not isinstance(img, MetaTensor):  # pragma: no cover - LoadImage always returns MetaTensor
        img = MetaTensor(img)
    _validate(img, path, spacing_limits)
    img.meta["ct_source"] = path
    img.meta["ct_original_shape"] = [int(n) for n in img.shape[1:]]
    img.meta["ct_original_spacing"] = [
        float(v) for v in np.linalg.norm(np.asarray(img.affine, dtype=float)[:3, :3], axis=0)
    ]
    if chosen is not None:
        img.meta["ct_series"] = chosen.label()
    return img


class LoadCTd(MapTransform):
    """Dictionary wrapper of :func:`load_ct`: a path in ``data[key]`` becomes the HU volume.

    An optional ``data[series_key]`` names the DICOM series to take (see :func:`select_ct_series`).
    """

    def __init__(
        self,
        keys: KeysCollection = "ct",
        series_key: str = "series",
        spacing_limits: Sequence[float] = SPACING_LIMITS_MM,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.series_key = series_key
        self.spacing_limits = tuple(spacing_limits)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            series = d.get(self.series_key)
            d[key] = load_ct(str(d[key]), series=str(series) if series else None, spacing_limits=self.spacing_limits)
        return d
