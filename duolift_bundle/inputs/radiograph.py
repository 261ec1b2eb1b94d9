"""A radiograph file -> the network's X-ray input, in physical units: read, oriented, resampled
onto the training DRRs' detector field and contrast-matched (``inference.yaml``'s ``xray_*``).

Steps (:func:`load_radiograph`):

1. read (:func:`~duolift_bundle.inputs.radiograph_io.read_radiograph`: greyscale checks, DICOM LUTs,
   MONOCHROME1 inverted);
2. orient (:func:`~duolift_bundle.inputs.radiograph_placement.orientation_flips`: DICOM
   ``PatientOrientation``), and find the collimator's unexposed border
   (:func:`~duolift_bundle.imaging.collimation.exposed_region`), which counts as no film: the
   placement fills it with air, as a DRR has air past the patient;
3. place (``xray_placement``): ``physical`` resamples the film by its pixel size at the patient
   onto the detector field (:mod:`~duolift_bundle.inputs.radiograph_placement`), ``square`` crops a
   centred square of its shorter side (no pixel size needed; the film's scale is not matched);
4. scale to [0, 1] at the network's size, as the training DRRs are normalised after their own
   resampling (``xray_normalize``: ``max`` divides by the maximum, or ``minmax``); where the
   film does not reach, the value that scales to 0 (air);
5. contrast (``xray_contrast``, :mod:`~duolift_bundle.inputs.radiograph_contrast`).

Each view also returns what was done (``info``: pixel size and its source, flips, the unexposed
border, the film's aspect, notes), which the inference summary reports and the quality gate
(:mod:`duolift_bundle.transforms.quality`) checks per case.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence

import numpy as np
from duolift_bundle.constants import VIEWS
from duolift_bundle.errors import ConfigError
from duolift_bundle.geometry import Protocol
from duolift_bundle.imaging.collimation import exposed_region
from duolift_bundle.imaging.radiograph_fields import midline_contrast
from duolift_bundle.inputs.radiograph_contrast import (
    CONTRAST,
    DISTANCE_WARNING,
    histogram_distance,
    load_reference,
    match_to_reference,
)
from duolift_bundle.inputs.radiograph_io import NORMALIZE, read_radiograph, square_resize
from duolift_bundle.inputs.radiograph_placement import (
    DEFAULT_MAGNIFICATION,
    estimate_pixel_mm,
    field_mm,
    orientation_flips,
    patient_pixel_mm,
    place_on_detector,
)

__all__ = ["PLACEMENT", "RadiographSettings", "CONFIG_KEYS", "load_radiograph"]

PLACEMENT = ("physical", "square")


@dataclass
class RadiographSettings:
    """The ``xray_*`` settings of ``inference.yaml`` (``xray_<field>``; the config builds this object
    once and passes it whole), with their defaults and checks.

    Args:
        normalize: ``"max"`` or ``"minmax"`` (step 4).
        placement: ``"physical"`` or ``"square"`` (step 3).
        pixel_spacing: mm at the patient for files that carry no pixel size (PNG / JPEG).
        magnification: for a DICOM ``ImagerPixelSpacing`` without distances.
        contrast: ``"none"`` or ``"histogram"`` (step 5).
        reference: the reference histogram file of ``contrast="histogram"``.
    """

    normalize: str = "max"
    placement: str = "physical"
    pixel_spacing: Optional[float | Sequence[float]] = None
    magnification: float = DEFAULT_MAGNIFICATION
    contrast: str = "none"
    reference: Optional[str | os.PathLike] = None
    _quantiles: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("xray_normalize", self.normalize, NORMALIZE),
            ("xray_placement", self.placement, PLACEMENT),
            ("xray_contrast", self.contrast, CONTRAST),
        ):
            if value not in allowed:
                raise ConfigError(f"{name} must be one of {allowed}, got {value!r}")
        if not self.magnification or float(self.magnification) < 1.0:
            raise ConfigError(
                f"xray_magnification must be >= 1 (source-detector / source-patient distance), got {self.magnification}"
            )
        if self.contrast == "histogram" and self.reference is None:
            raise ConfigError("xray_contrast 'histogram' needs xray_reference (the training DRRs' histogram file)")

    def reference_quantiles(self, view: str) -> Optional[np.ndarray]:
        """The reference quantiles of ``view``, read once: required with ``contrast="histogram"``
        (a missing or bad file raises), else used for the quality report's distance when the
        file is there (None otherwise)."""
        if self.reference is None or (self.contrast == "none" and not os.path.isfile(self.reference)):
            return None
        if view not in self._quantiles:
            self._quantiles[view] = load_reference(self.reference, [view])[view]
        return self._quantiles[view]


#: the ``xray_*`` config keys a server request or the MONAI Label app may set (every field of
#: :class:`RadiographSettings` but the reference file, which belongs to the model)
CONFIG_KEYS: tuple[str, ...] = tuple(
    f"xray_{f.name}" for f in dataclasses.fields(RadiographSettings) if f.init and f.name != "reference"
)


def _border(exposed: np.ndarray) -> dict[str, int]:
    """The unexposed border's depth in pixels on each side of a film's ``exposed`` mask."""
    rows, cols = np.flatnonzero(exposed.any(axis=1)), np.flatnonzero(exposed.any(axis=0))
    h, w = exposed.shape
    return {"top": int(rows[0]), "bottom": int(h - 1 - rows[-1]), "left": int(cols[0]), "right": int(w - 1 - cols[-1])}


def load_radiograph(
    path: str | os.PathLike, view: str, protocol: Protocol, settings: RadiographSettings
) -> tuple[np.ndarray, dict[str, Any]]:
    """One radiograph file of ``view`` -> ``(image, info)``: the ``(S, S)`` float32 network input
    in [0, 1] (``S`` = the protocol's X-ray size) and a record of the steps (see the module
    docstring): ``pixel_mm``, ``spacing_source``, ``spacing_estimated``, ``flips``, ``film_fraction``
    (share of the field the film covers), ``histogram_distance`` (to the training DRRs' reference,
    when it is there; flagged above :data:`~duolift_bundle.inputs.radiograph_contrast.DISTANCE_WARNING`),
    ``notes``."""
    path = os.fspath(path)
    geometry = protocol.drr.geometry
    size = protocol.xray_size
    image, header = read_radiograph(path)
    flip_rows, flip_cols, notes = orientation_flips(header, view)
    if flip_rows:
        image = image[::-1]
    if flip_cols:
        image = image[:, ::-1]
    image = np.ascontiguousarray(image, dtype=np.float32)
    exposed = exposed_region(image)  # the collimator's unexposed border counts as no film
    border = _border(exposed)
    # the value that scales to 0 fills the field where there is no film (air, as in a DRR)
    darkest = float(image[exposed].min())
    lo = min(darkest, 0.0) if settings.normalize == "max" else darkest
    info: dict[str, Any] = {"file": path, "flips": [a for a, f in (("rows", flip_rows), ("columns", flip_cols)) if f]}
    if any(border.values()):
        info["unexposed_border_px"] = border
        notes.append(
            "unexposed (collimated) border taken as outside the film: "
            + ", ".join(f"{side} {n} px" for side, n in border.items() if n)
        )
    if settings.placement == "square":
        placed = square_resize(np.where(exposed, image, lo), size)
        covered = square_resize(exposed.astype(np.float32), size) > 0.5
        info["aspect"] = round(max(image.shape) / min(image.shape), 3)
        info.update(
            spacing_source="none: centred square of the shorter side (xray_placement square)", spacing_estimated=False
        )
    else:
        spacing = patient_pixel_mm(path, image.shape, header, geometry, settings.pixel_spacing, settings.magnification)
        if spacing is None:
            why = "no pixel size in the file" if header.get("format") == "image" else "no usable pixel size in the file"
            spacing = estimate_pixel_mm(image, geometry, why)
            notes.append(spacing.note)
        placed, covered = place_on_detector(image, spacing, geometry, size, fill=lo, exposed=exposed)
        sides_mm = (image.shape[0] * spacing.row_mm, image.shape[1] * spacing.col_mm)
        info.update(
            aspect=round(max(sides_mm) / min(sides_mm), 3),
            pixel_mm=[round(spacing.row_mm, 5), round(spacing.col_mm, 5)],
            spacing_source=spacing.source,
            spacing_estimated=spacing.estimated,
        )
        if covered.mean() < 0.9:
            notes.append(
                f"the film covers {100 * covered.mean():.0f}% of the {field_mm(geometry):.0f} mm field; the rest is padded"
            )
    # scaled at the network's size, as the training DRRs are normalised after their resampling
    hi = float(placed.max())
    placed = (placed - lo) / (hi - lo) if hi > lo else np.zeros_like(placed)
    quantiles = settings.reference_quantiles(view)
    if quantiles is not None:
        info["histogram_distance"] = round(histogram_distance(placed, quantiles, covered), 4)
        if settings.contrast == "none" and info["histogram_distance"] > DISTANCE_WARNING:
            notes.append(
                f"its intensities are far from the training DRRs' (distance {info['histogram_distance']:.2f} > "
                f"{DISTANCE_WARNING}); "
                "a processed film? --xray_contrast histogram matches them"
            )
    if settings.contrast == "histogram":
        placed = match_to_reference(placed, quantiles, covered)
    info["film_fraction"] = round(float(covered.mean()), 4)
    if view == VIEWS[0]:  # the polarity check of a frontal film (a lateral's spine is not central)
        info["midline_contrast"] = round(midline_contrast(placed), 4)
    info["notes"] = notes
    return np.clip(placed, 0.0, 1.0).astype(np.float32), info
