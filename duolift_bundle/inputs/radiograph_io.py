"""Reading radiograph files: PNG / JPEG, 2D NIfTI and DICOM -> the image as displayed, and what the
file says about its geometry.

:func:`read_radiograph` returns one ``(H, W)`` float32 image in the bundle's convention
(``docs/README.md``) when the file follows it: displayed as a reader looks at the film (rows
superior -> inferior; a frontal PA film with the patient's right on the image's left; a lateral
film seen from the patient's left side, anterior on the left), dense structures bright. PNG /
JPEG must be 8-bit greyscale (RGB, palette and 16-bit images are refused with the reason: convert
them first); a 2D NIfTI is taken as stored (rows = first array axis, the layout
``prepare_data.py`` writes); a DICOM must hold one 2D image (a CT slice series, a multi-frame
object or a file without pixel data is refused). DICOM pixels go through the modality LUT and
the VOI LUT or window centre / width of the file (pydicom), and MONOCHROME1 images are inverted so
that dense is bright. The header it returns (DICOM pixel spacings, magnification, distances,
view position and patient orientation; NIfTI ``pixdim``) is what
:mod:`duolift_bundle.inputs.radiograph` uses to orient the film, place it on the training DRRs'
detector in physical units and scale it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from duolift_bundle.constants import VIEWS
from duolift_bundle.errors import DuoLiftError

__all__ = [
    "XRayInputError",
    "XRAY_SUFFIXES",
    "NORMALIZE",
    "DICOM_GEOMETRY_TAGS",
    "read_radiograph",
    "is_xray_file",
    "square_resize",
    "find_view_files",
    "view_of_name",
]

XRAY_SUFFIXES = (".png", ".jpg", ".jpeg", ".nii", ".nii.gz", ".dcm")


class XRayInputError(DuoLiftError, ValueError):
    """An X-ray file that cannot be used; the message names the file and the problem."""


def is_xray_file(name: str) -> bool:
    return name.lower().endswith(XRAY_SUFFIXES)


#: DICOM attributes of a radiograph's geometry and view that :func:`read_radiograph` reports
DICOM_GEOMETRY_TAGS = (
    "ImagerPixelSpacing",
    "PixelSpacing",
    "EstimatedRadiographicMagnificationFactor",
    "DistanceSourceToDetector",
    "DistanceSourceToPatient",
    "ViewPosition",
    "PatientOrientation",
    "ImageLaterality",
    "Modality",
)


def _read_png(path: str) -> tuple[np.ndarray, dict]:
    from PIL import Image

    try:
        im = Image.open(path)
        im.load()
    except Exception as err:  # Pillow raises several types (OSError, SyntaxError, AttributeError) for a bad file
        raise XRayInputError(f"{path}: not a readable PNG / JPEG image ({type(err).__name__}: {err})") from err
    with im:
        if im.mode in ("I;16", "I;16B", "I;16L", "I"):
            raise XRayInputError(f"{path}: a 16-bit image (mode {im.mode}); save it as 8-bit greyscale or DICOM")
        if im.mode not in ("L", "LA"):
            raise XRayInputError(f"{path}: a {im.mode} image; X-rays must be greyscale (convert it to 8-bit 'L' first)")
        return np.asarray(im.convert("L"), dtype=np.float32), {"format": "image"}


def _read_nifti(path: str) -> tuple[np.ndarray, dict]:
    import nibabel as nib

    img = nib.load(path)
    data = np.squeeze(np.asarray(img.dataobj, dtype=np.float32))
    if data.ndim != 2:
        raise XRayInputError(f"{path}: a NIfTI X-ray must be 2D, got shape {tuple(img.shape)}")
    zooms = (
        [float(z) for z, n in zip(img.header.get_zooms(), img.shape) if n > 1][:2]
        if data.shape == img.shape[:2]
        else None
    )
    return data, {"format": "nifti", "pixdim": zooms}


def _dicom_value(ds, name: str):
    value = ds.get(name)
    if value is None:
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [v if isinstance(v, str) else float(v) for v in value]
    if isinstance(value, str) or type(value).__name__ in ("PersonName",):
        return str(value)
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def _read_dicom(path: str) -> tuple[np.ndarray, dict]:
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(path)
    except Exception as err:  # noqa: BLE001 - pydicom raises several types for non-DICOM files
        raise XRayInputError(f"{path}: not a readable DICOM file ({err})") from err
    if "PixelData" not in ds:
        raise XRayInputError(f"{path}: DICOM without pixel data (SOP class {ds.get('SOPClassUID', '?')}); not an image")
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        raise XRayInputError(f"{path}: a multi-frame DICOM ({ds.NumberOfFrames} frames); expected one 2D radiograph")
    if str(ds.get("Modality", "")).upper() in ("CT", "MR", "PT", "NM"):
        raise XRayInputError(
            f"{path}: a {ds.Modality} slice, not a radiograph (give a CT as a series folder or a 3D file)"
        )
    pixels = ds.pixel_array
    if pixels.ndim != 2:
        raise XRayInputError(f"{path}: pixel data of shape {pixels.shape}; expected a 2D greyscale radiograph")
    image = apply_voi_lut(apply_modality_lut(pixels, ds), ds).astype(np.float32)
    if str(ds.get("PhotometricInterpretation", "")).upper() == "MONOCHROME1":
        image = image.max() - image  # MONOCHROME1: low values are displayed bright
    header = {"format": "dicom", **{name: _dicom_value(ds, name) for name in DICOM_GEOMETRY_TAGS}}
    return image, header


def read_radiograph(path: str | os.PathLike) -> tuple[np.ndarray, dict]:
    """One radiograph file -> ``(image, header)``: the image ``(H, W)`` float32 as displayed
    (dense bright, steps 1 of the module docstring, not yet scaled) and what the file says about
    its geometry: ``format`` ("dicom", "nifti", "image"), DICOM's :data:`DICOM_GEOMETRY_TAGS`,
    NIfTI's ``pixdim``.

    Raises:
        XRayInputError: the file is missing, unreadable or not a 2D greyscale radiograph.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise XRayInputError(f"{path}: file not found")
    name = path.lower()
    if name.endswith((".png", ".jpg", ".jpeg")):
        image, header = _read_png(path)
    elif name.endswith((".nii", ".nii.gz")):
        image, header = _read_nifti(path)
    else:
        image, header = _read_dicom(path)
    if image.ndim != 2:
        raise XRayInputError(f"{path}: expected a 2D image, got shape {image.shape}")
    if not np.isfinite(image).all():
        raise XRayInputError(f"{path}: NaN or Inf pixels")
    if float(image.max()) <= float(image.min()):
        raise XRayInputError(f"{path}: a constant image (all pixels {float(image.min())})")
    return image, header


def square_resize(image: np.ndarray, size: int) -> np.ndarray:
    """Centred square crop of the shorter side, then area resampling (bilinear when enlarging)
    to ``size`` x ``size``: MONAI's ``CenterSpatialCrop`` and ``Resize``."""
    from monai.transforms import CenterSpatialCrop, Resize

    s = min(image.shape)
    crop = CenterSpatialCrop(roi_size=(s, s))(torch.as_tensor(np.ascontiguousarray(image))[None])
    if s >= size:
        resize = Resize((size, size), mode="area")
    else:
        resize = Resize((size, size), mode="bilinear", align_corners=False)
    return np.asarray(resize(crop)[0], dtype=np.float32)


NORMALIZE = ("max", "minmax")


def view_of_name(name: str | os.PathLike) -> str | None:
    """The view a radiograph's file name says: ``"frontal"`` for ``frontal*`` / ``xray_frontal*``
    (what ``prepare_data.py`` writes), ``"lateral"`` likewise, any case; None otherwise. The one
    naming rule of ``run inferring``, the server and the MONAI Label app."""
    stem = os.path.basename(os.fspath(name)).lower()
    return next((view for view in VIEWS if stem.startswith((view, f"xray_{view}"))), None)


def find_view_files(folder: str | os.PathLike) -> dict[str, str]:
    """``{"frontal": path, "lateral": path}`` (those present) for the radiograph files in ``folder``
    whose names say their view (:func:`view_of_name`)."""
    found: dict[str, str] = {}
    for name in sorted(os.listdir(folder)):
        view = view_of_name(name) if is_xray_file(name) else None
        if view is None:
            continue
        if view in found:
            raise XRayInputError(f"{folder}: two {view} X-rays ({Path(found[view]).name}, {name}); keep one")
        found[view] = os.path.join(folder, name)
    return found
