"""A radiograph in physical units: its pixel size at the patient, its orientation, and its
resampling onto the detector of the training DRRs.

The network was trained on DRRs whose detector (``DRRGeometry``: ``detector_size`` mm at the
source-detector distance ``sid``) covers ``detector_size * sad / sid`` mm at the isocentre: 285 mm
with the paper's 500 mm / 541 mm / 949 mm. A film reaches the network at the same scale: its
pixel size at the patient plane is read from the file (:func:`patient_pixel_mm`), the film is
resampled to the network's pixel size at the isocentre, centred on the film's centre and padded
(not cropped) where it is smaller than the field (:func:`place_on_detector`).

Pixel size, in this order:

1. a per-file sidecar ``<file>.json`` ``{"pixel_spacing": [row_mm, col_mm], "magnification": m}``
   (spacing at the detector; ``magnification`` 1 when it is already at the patient) or the
   config's ``xray_pixel_spacing`` (mm at the patient, for files that carry none);
2. DICOM ``ImagerPixelSpacing`` (detector plane) divided by the magnification:
   ``EstimatedRadiographicMagnificationFactor``, else ``DistanceSourceToDetector /
   DistanceSourceToPatient``, else :data:`DEFAULT_MAGNIFICATION` (a PA chest film: source at
   1.8 m, mid-chest about 0.16 m before the detector); else ``PixelSpacing`` (the patient plane,
   as DICOM defines it for projection images);
3. NIfTI ``pixdim``: a 2D NIfTI X-ray is taken as a DRR of the configured geometry (its spacing
   at the detector, magnification ``sid / sad``), as ``prepare_data.py`` writes them;
4. none, or a nonsense one (zero, negative, a film narrower than :data:`FIELD_RANGE_MM` or
   wider): an **estimate** from the lung fields (:func:`estimate_pixel_mm`: their width, found by
   :func:`~duolift_bundle.imaging.radiograph_fields.radiograph_fields`, is taken as
   :data:`REFERENCE_LUNG_WIDTH_MM`), said once per file; where no two lung fields are found, the
   film's shorter side is taken as the network's field, said too.

Orientation (:func:`orientation_flips`): DICOM ``PatientOrientation`` (the patient directions
of increasing column and row index) decides mirroring, so that a frontal film has the patient's
left towards increasing columns and a lateral film the patient's posterior ("L", "F" / "P", "F").
``ViewPosition`` AP is flagged (a magnified heart); LL / RL without ``PatientOrientation`` is
taken as displayed.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from typing import Any, Optional, Sequence

import numpy as np
from duolift_bundle.geometry import DRRGeometry

__all__ = [
    "DEFAULT_MAGNIFICATION",
    "REFERENCE_LUNG_WIDTH_MM",
    "FIELD_RANGE_MM",
    "Spacing",
    "field_mm",
    "patient_pixel_mm",
    "estimate_pixel_mm",
    "orientation_flips",
    "place_on_detector",
]

logger = logging.getLogger(__name__)

#: magnification of a PA chest film without distances in its header: source-image distance
#: 1800 mm, mid-chest about 160 mm before the detector (1800 / 1640 = 1.10)
DEFAULT_MAGNIFICATION: float = 1.10
#: left-right extent of both lungs at the patient, in mm: the mean of the real CTs of
#: ../shared/data (measurements: model card, "Real radiographs")
REFERENCE_LUNG_WIDTH_MM: float = 253.0
#: a film whose longer side at the patient is outside this range has a nonsense pixel size
FIELD_RANGE_MM: tuple[float, float] = (100.0, 1000.0)


@dataclass
class Spacing:
    """A film's pixel size at the patient plane, ``(row_mm, col_mm)``, and where it came from;
    ``estimated`` when no usable size was in the file (``note`` says why, for the summary)."""

    row_mm: float
    col_mm: float
    source: str
    estimated: bool = False
    note: str = ""


def field_mm(geometry: DRRGeometry) -> float:
    """Width of the training DRRs' detector field at the isocentre, in mm (285 for the paper's
    set-up); a parallel beam has no magnification."""
    if geometry.sad is None:
        return float(geometry.detector_size)
    return float(geometry.detector_size * geometry.sad / geometry.sid)


def _pair(value: Any) -> Optional[tuple[float, float]]:
    if value is None:
        return None
    try:
        vals = [float(v) for v in (value if isinstance(value, Sequence) and not isinstance(value, str) else [value])]
    except (TypeError, ValueError):
        return None
    if len(vals) == 1:
        vals = vals * 2
    return (vals[0], vals[1]) if len(vals) >= 2 else None


def _plausible(pair: Optional[tuple[float, float]], shape: tuple[int, int]) -> bool:
    if pair is None or not all(np.isfinite(pair)) or min(pair) <= 0:
        return False
    longest = max(shape[0] * pair[0], shape[1] * pair[1])
    return FIELD_RANGE_MM[0] <= longest <= FIELD_RANGE_MM[1]


def sidecar(path: str) -> Optional[dict]:
    """The ``<file>.json`` beside an X-ray file (``frontal.png.json`` or ``frontal.json``), if any."""
    stem = path[: -len(".nii.gz")] if path.lower().endswith(".nii.gz") else os.path.splitext(path)[0]
    for candidate in (path + ".json", stem + ".json"):
        if os.path.isfile(candidate):
            with open(candidate) as f:
                return json.load(f)
    return None


def patient_pixel_mm(
    path: str,
    shape: tuple[int, int],
    header: Optional[dict],
    geometry: DRRGeometry,
    pixel_spacing: Optional[float | Sequence[float]],
    magnification: float,
) -> Optional[Spacing]:
    """The film's pixel size at the patient from its sidecar, ``pixel_spacing`` or header (see the
    module docstring, steps 1-3); None when it has none or a nonsense one (the caller estimates).
    ``pixel_spacing`` and ``magnification`` are the ``RadiographSettings``' (``xray_pixel_spacing``,
    ``xray_magnification``: the latter for a DICOM ``ImagerPixelSpacing`` without distances).

    ``header`` holds what the reader found: ``format`` ("dicom", "nifti", "image") and, for DICOM,
    the tags ``ImagerPixelSpacing``, ``PixelSpacing``, ``EstimatedRadiographicMagnificationFactor``,
    ``DistanceSourceToDetector``, ``DistanceSourceToPatient``; for NIfTI ``pixdim``.
    """
    header = header or {}
    side = sidecar(path)
    if side and "pixel_spacing" in side:
        pair = _pair(side["pixel_spacing"])
        mag = float(side.get("magnification", 1.0) or 1.0)
        if pair and mag > 0:
            pair = (pair[0] / mag, pair[1] / mag)
            if _plausible(pair, shape):
                return Spacing(*pair, source=f"sidecar {os.path.basename(path)}.json (magnification {mag:g})")
            logger.warning(
                "%s: the sidecar's pixel_spacing %s gives a %s mm film; ignored",
                path,
                side["pixel_spacing"],
                _extent(pair, shape),
            )
    fmt = header.get("format")
    if fmt == "dicom":
        imager = _pair(header.get("ImagerPixelSpacing"))
        if imager is not None and min(imager) > 0:
            mag, how = _dicom_magnification(header, magnification)
            pair = (imager[0] / mag, imager[1] / mag)
            if _plausible(pair, shape):
                return Spacing(
                    *pair,
                    source=f"DICOM ImagerPixelSpacing {imager[0]:g} x {imager[1]:g} mm / magnification {mag:.3f} ({how})",
                )
        pixel = _pair(header.get("PixelSpacing"))
        if _plausible(pixel, shape):
            return Spacing(*pixel, source=f"DICOM PixelSpacing {pixel[0]:g} x {pixel[1]:g} mm (patient plane)")
    elif fmt == "nifti":
        pix = _pair(header.get("pixdim"))
        if pix is not None and geometry.sad is not None:
            mag = geometry.sid / geometry.sad
            pair = (pix[0] / mag, pix[1] / mag)
            if _plausible(pair, shape):
                return Spacing(
                    *pair,
                    source=f"NIfTI pixdim {pix[0]:g} x {pix[1]:g} mm at the DRR detector / magnification {mag:.3f} (sid / sad)",
                )
    if pixel_spacing is not None:
        pair = _pair(pixel_spacing)
        if _plausible(pair, shape):
            return Spacing(*pair, source=f"xray_pixel_spacing {pair[0]:g} x {pair[1]:g} mm (patient plane)")
        logger.warning(
            "%s: xray_pixel_spacing %s gives a %s mm film; ignored", path, pixel_spacing, _extent(pair, shape)
        )
    return None


def _extent(pair: Optional[tuple[float, float]], shape: tuple[int, int]) -> str:
    if pair is None:
        return "?"
    return f"{shape[0] * pair[0]:.0f} x {shape[1] * pair[1]:.0f}"


def _dicom_magnification(header: dict, default: float) -> tuple[float, str]:
    ermf = header.get("EstimatedRadiographicMagnificationFactor")
    try:
        if ermf is not None and float(ermf) >= 1.0:
            return float(ermf), "EstimatedRadiographicMagnificationFactor"
    except (TypeError, ValueError):
        pass
    sid, sod = header.get("DistanceSourceToDetector"), header.get("DistanceSourceToPatient")
    try:
        if sid is not None and sod is not None and 0 < float(sod) <= float(sid):
            return float(sid) / float(sod), "DistanceSourceToDetector / DistanceSourceToPatient"
    except (TypeError, ValueError):
        pass
    return default, "default for a PA chest film"


def estimate_pixel_mm(image: np.ndarray, geometry: DRRGeometry, why: str) -> Spacing:
    """A film without a usable pixel size: the width of its lung fields is taken as
    :data:`REFERENCE_LUNG_WIDTH_MM`; without two lung fields, the film's shorter side is taken as
    the network's field. ``note`` says so (``why``: what the file lacked) for the case's summary,
    which logs it once."""
    from duolift_bundle.imaging.radiograph_fields import radiograph_fields

    lungs = radiograph_fields(image).lung_columns()
    if lungs is not None:
        width_px = lungs[1] - lungs[0]
        mm = REFERENCE_LUNG_WIDTH_MM / width_px
        note = (
            f"{why}; estimated {mm:.3f} mm per pixel from the lung fields ({width_px} px wide, taken as "
            f"{REFERENCE_LUNG_WIDTH_MM:g} mm; give --xray_pixel_spacing or a sidecar <file>.json for the true size)"
        )
        spacing = Spacing(mm, mm, source="estimate: lung field width", estimated=True, note=note)
    else:
        mm = field_mm(geometry) / min(image.shape)
        note = (
            f"{why}; no two lung fields found, so the film's shorter side is taken as the "
            f"{field_mm(geometry):.0f} mm field ({mm:.3f} mm per pixel)"
        )
        spacing = Spacing(mm, mm, source="estimate: shorter side = field", estimated=True, note=note)
    return spacing


def orientation_flips(header: Optional[dict], view: str) -> tuple[bool, bool, list[str]]:
    """``(flip_rows, flip_cols, notes)`` that bring a DICOM film to the bundle's convention, from
    ``PatientOrientation``; notes flag AP frontal films and laterals whose side is only assumed."""
    header = header or {}
    notes: list[str] = []
    position = str(header.get("ViewPosition") or "").upper()
    if view == "frontal" and position == "AP":
        notes.append("AP film: the heart is magnified against the PA DRRs the model was trained on")
    want_col = "L" if view == "frontal" else "P"
    flip_rows = flip_cols = False
    orient = header.get("PatientOrientation")
    if orient is not None and len(orient) == 2:
        col_dir, row_dir = str(orient[0]).upper(), str(orient[1]).upper()
        opposite = {"L": "R", "R": "L", "A": "P", "P": "A", "H": "F", "F": "H"}
        if col_dir[:1] == opposite[want_col]:
            flip_cols = True
        if row_dir[:1] == "H":
            flip_rows = True
        if col_dir[:1] not in (want_col, opposite[want_col]):
            notes.append(f"PatientOrientation {list(orient)} does not fit a {view} film; taken as displayed")
    elif view == "lateral" and position in ("LL", "RL"):
        notes.append(f"lateral {position} without PatientOrientation: taken as displayed (anterior on the left)")
    return flip_rows, flip_cols, notes


def _area_weights(n_in: int, n_out: int, step: float) -> np.ndarray:
    """``(n_out, n_in)`` weights: output pixel ``i`` averages the input interval of length
    ``step`` (input pixels) centred like the input, ``[c + (i - n_out / 2) step, + step)`` with
    ``c = n_in / 2``, each input pixel weighted by its overlap; rows sum to the fraction of the
    interval that lies on the input."""
    lo = n_in / 2 + (np.arange(n_out) - n_out / 2) * step
    hi = lo + step
    k = np.arange(n_in)
    overlap = np.clip(np.minimum(hi[:, None], k[None, :] + 1) - np.maximum(lo[:, None], k[None, :]), 0, None)
    return overlap / step


def place_on_detector(
    image: np.ndarray,
    spacing: Spacing,
    geometry: DRRGeometry,
    size: int,
    fill: float = 0.0,
    exposed: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Resample a film ``(H, W)`` with ``spacing`` at the patient onto the network's ``size`` x
    ``size`` grid covering :func:`field_mm` at the isocentre, centred on the film's centre;
    outside the film, and on its unexposed border (``exposed`` False:
    :func:`~duolift_bundle.imaging.collimation.exposed_region`), is ``fill``. Returns
    ``(placed, covered)``: the ``(size, size)`` float32 image and the boolean mask of the pixels
    filled mostly (more than half) from the film's exposed part.

    Each output pixel is the area average of the film under it (exact sub-pixel overlaps, one
    separable linear map per axis), which is how the DRRs themselves are area-resampled from the
    ray-traced detector; MONAI's ``Resize`` + ``CenterSpatialCrop`` / ``SpatialPad`` would round
    the centre to whole pixels."""
    out_mm = field_mm(geometry) / size
    rows = _area_weights(image.shape[0], size, out_mm / spacing.row_mm)
    cols = _area_weights(image.shape[1], size, out_mm / spacing.col_mm)
    weight = np.ones(image.shape) if exposed is None else np.asarray(exposed, dtype=np.float64)
    on_film = rows @ weight @ cols.T
    placed = rows @ (np.asarray(image, dtype=np.float64) * weight) @ cols.T + fill * (1.0 - on_film)
    return placed.astype(np.float32), on_film > 0.5
