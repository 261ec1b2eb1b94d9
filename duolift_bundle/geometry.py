"""The one home of the 128^3 protocol and the DRR geometry: small frozen dataclasses.

Every number that decides where a voxel or a detector pixel lies is a field here, with X2CT-GAN's
values (Ying et al., CVPR 2019) as defaults, and everything else is derived from them:

- :class:`CTProtocol`: raw CT -> 1 mm isotropic -> ``crop_size``^3 (320) -> ``size``^3 (128)
  -> HU window [-1024, 1476] mapped to [0, 1]. Derived: the field of view ``fov_mm`` (320 mm),
  the voxel size ``voxel_mm`` (2.5 mm) and the default world placement :meth:`CTProtocol.affine`.
- :class:`DRRGeometry`: cone beam, source-to-isocentre 541 mm, source-to-detector 949 mm, a
  500 mm detector traced at 320 px and area-resampled to ``output_size`` px.
- :class:`DRRSettings`: the geometry plus the intensity choices of the DRRs (``normalize``,
  X2CT's PA ``flip_frontal``, the attenuation of water).
- :class:`Protocol`: both, as one object that travels from the config to the preparation, the
  datasets, the projector, inference and evaluation. :meth:`Protocol.build` is the one place of
  the data contract's rule "X-rays have the volume's size" (``output_size = size``).

In the configs (``configs/train.yaml``, ``configs/inference.yaml``)::

    protocol:
      _target_: duolift_bundle.geometry.Protocol.build
      size: "@size"

and any field is a ``--protocol#<field> value`` override (``--protocol#z_anchor center``,
``--protocol#sad 600``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import asdict, dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
from duolift_bundle.errors import ConfigError

__all__ = [
    "grid_affine",
    "TableRemoval",
    "CTProtocol",
    "DRRGeometry",
    "DRRSettings",
    "Protocol",
    "MU_WATER",
    "AIR_HU",
    "INPUT_RANGES",
    "voxel_spacing",
    "Z_ANCHORS",
    "DRR_NORMALIZE",
]

#: HU of air, the lowest value a CT holds (and the fill outside the scanned field).
AIR_HU: float = -1024.0
#: Linear attenuation of water in 1/mm (about 70 keV effective energy).
MU_WATER: float = 0.02
#: the scales a CT reaches a step in: the data contract's [0, 1] (``"unit"``) or HU
INPUT_RANGES = ("unit", "hu")
#: Where a scan longer than the crop is cut along z (see :class:`CTProtocol`).
Z_ANCHORS = ("superior", "center")
#: DRR intensity scalings (see :class:`DRRSettings`).
DRR_NORMALIZE = ("max", "fixed", "none")


def grid_affine(size: int, fov_mm: float) -> np.ndarray:
    """RAS affine of a ``size``^3 grid covering a ``fov_mm`` cube centred on the world origin, in
    the bundle's axes: axis 0 superior -> inferior, axis 1 anterior -> posterior, axis 2 patient
    right -> left (axcodes IPL)."""
    s = fov_mm / size
    c = (size - 1) / 2.0
    aff = np.zeros((4, 4))
    aff[2, 0] = -s  # axis 0 runs to inferior: RAS z decreases
    aff[1, 1] = -s  # axis 1 runs to posterior: RAS y decreases
    aff[0, 2] = -s  # axis 2 runs to the patient's left: RAS x decreases
    aff[:3, 3] = c * s
    aff[3, 3] = 1.0
    return aff


def voxel_spacing(
    image: Any, given: Sequence[float] | None = None, fallback: float | None = None, who: str = "this step"
) -> tuple[float, float, float]:
    """The voxel size in mm of a volume a step works on: ``given`` when the step was told it, else
    the image's own (a MetaTensor's ``pixdim``), else ``fallback`` (a protocol's ``voxel_mm``);
    a ConfigError naming ``who`` when none of the three is there."""
    if given is not None:
        return tuple(float(s) for s in given)  # type: ignore[return-value]
    pixdim = getattr(image, "pixdim", None)  # a MetaTensor (no MONAI import on this floor)
    if pixdim is not None:
        return tuple(float(s) for s in pixdim[:3])  # type: ignore[return-value]
    if fallback is not None:
        return (float(fallback),) * 3
    raise ConfigError(f"{who} needs the voxel size: pass `spacing` or give a MetaTensor with an affine")


@dataclass(frozen=True)
class TableRemoval:
    """Settings of the table removal (:mod:`duolift_bundle.imaging.table`); radii and margins in mm.

    Args:
        threshold_hu: dense tissue is above it (-500).
        opening_mm: radius of the opening that detaches the table (1 mm).
        keep_fraction: components of at least this fraction of the largest are body.
        margin_mm: dense tissue this close to the lungs is the patient's (10 mm).
        min_lung_ml: smallest enclosed air space taken as lung (100 ml).
        min_enclosed: fraction of the lungs that must lie inside the body (0.99).
        max_patient_loss_ml: the most dense tissue near the lungs the removal may take (5 ml).
    """

    threshold_hu: float = -500.0
    opening_mm: float = 1.0
    keep_fraction: float = 0.1
    margin_mm: float = 10.0
    min_lung_ml: float = 100.0
    min_enclosed: float = 0.99
    max_patient_loss_ml: float = 5.0

    def __post_init__(self) -> None:
        sizes = {
            "opening_mm": self.opening_mm,
            "margin_mm": self.margin_mm,
            "max_patient_loss_ml": self.max_patient_loss_ml,
        }
        negative = {k: v for k, v in sizes.items() if not v >= 0}
        if negative:
            raise ConfigError(f"table_removal: {', '.join(f'{k} = {v}' for k, v in negative.items())} must be >= 0")
        for name, value in (("keep_fraction", self.keep_fraction), ("min_enclosed", self.min_enclosed)):
            if not 0.0 < value <= 1.0:
                raise ConfigError(f"table_removal: {name} must be in (0, 1], got {value}")
        if not self.min_lung_ml > 0:
            raise ConfigError(f"table_removal: min_lung_ml must be > 0, got {self.min_lung_ml}")


@dataclass(frozen=True)
class CTProtocol:
    """The CT side of the 128^3 protocol (``duolift_bundle.transforms.ct_protocol``).

    Args:
        size: final cube side in voxels (128; 64 for the CPU demo model).
        spacing: isotropic resampling step in mm before the crop (1 mm).
        crop_size: cube side in voxels after resampling (320, i.e. a 320 mm field).
        hu_window: ``(hu_min, hu_max)`` mapped linearly to [0, 1] and clipped; X2CT's CT_MIN_MAX
            0..2500 on HU + 1024 by default. The one home of the window: every step that maps
            between HU and [0, 1] (DRRs, lung mask, table removal, writer, DICE, bone loss, the
            HDF5 route) takes this object and uses :meth:`to_unit` / :meth:`to_hu`.
        z_anchor: ``"superior"`` keeps the top ``crop_size`` mm of a longer scan (X2CT's
            ``crop_to_standard``), ``"center"`` centres along z too.
        lazy: fuse the spatial steps with MONAI lazy resampling (faster, within a few HU).
        remove_table: mask out the CT table (everything outside the body) at the 1 mm stage, where
            the removal is checked against the lungs and refused when it would take patient.
        table_removal: the :class:`TableRemoval` settings (``--protocol#table_removal#opening_mm``).
    """

    size: int = 128
    spacing: float = 1.0
    crop_size: int = 320
    hu_window: tuple[float, float] = (-1024.0, 1476.0)
    z_anchor: str = "superior"
    lazy: bool = False
    remove_table: bool = True
    table_removal: TableRemoval = field(default_factory=TableRemoval)

    def __post_init__(self) -> None:
        object.__setattr__(self, "hu_window", tuple(float(v) for v in self.hu_window))
        if isinstance(self.table_removal, Mapping):  # a dict from a config or meta.json
            object.__setattr__(self, "table_removal", TableRemoval(**self.table_removal))
        if self.z_anchor not in Z_ANCHORS:
            raise ConfigError(f"z_anchor must be one of {Z_ANCHORS}, got {self.z_anchor!r}")
        if not (self.spacing > 0 and self.crop_size >= 1 and self.size >= 1):
            raise ConfigError(
                f"the CT protocol needs positive spacing / sizes, got spacing={self.spacing}, "
                f"crop_size={self.crop_size}, size={self.size}"
            )
        if len(self.hu_window) != 2 or not self.hu_window[1] > self.hu_window[0]:
            raise ConfigError(f"hu_window must be an increasing pair, got {self.hu_window}")

    def to_unit(self, hu: Any) -> Any:
        """HU -> the [0, 1] scale of the window (linear, not clipped; numpy arrays, tensors, floats)."""
        lo, hi = self.hu_window
        return (hu - lo) / (hi - lo)

    def to_hu(self, unit: Any) -> Any:
        """The inverse of :meth:`to_unit`."""
        lo, hi = self.hu_window
        return unit * (hi - lo) + lo

    @staticmethod
    def check_input_range(input_range: str) -> str:
        """The one check of a step's ``input_range`` (:data:`INPUT_RANGES`)."""
        if input_range not in INPUT_RANGES:
            raise ConfigError(f"input_range must be 'unit' or 'hu', got {input_range!r}")
        return input_range

    def as_hu(self, volume: Any, input_range: str) -> Any:
        """``volume`` in HU: mapped back from [0, 1] (``"unit"``) or taken as it is (``"hu"``)."""
        return self.to_hu(volume) if input_range == "unit" else volume

    @property
    def fov_mm(self) -> float:
        """Side of the protocol's cube in mm (320)."""
        return self.spacing * self.crop_size

    @property
    def voxel_mm(self) -> float:
        """Voxel size of the final volume in mm (2.5 at 128^3)."""
        return self.fov_mm / self.size

    def affine(self) -> np.ndarray:
        """RAS affine of a ``size``^3 volume covering the protocol's cube centred on the world
        origin (:func:`grid_affine`): the placement of a reconstruction from radiographs alone
        (they carry no 3D position) and of the phantoms."""
        return grid_affine(self.size, self.fov_mm)


@dataclass(frozen=True)
class DRRGeometry:
    """Cone-beam (or parallel-beam) geometry of one radiograph set-up.

    Args:
        sad: source-to-isocentre distance in mm; ``None`` gives a parallel beam.
        sid: source-to-detector distance in mm (ignored for a parallel beam).
        detector_size: physical width (= height) of the square detector in mm.
        detector_pixels: pixels per detector side at which rays are traced.
        output_size: pixels per side after area resampling (the network's input size).
        frontal_source: ``"posterior"`` (PA, default) or ``"anterior"`` (AP).
        lateral_source: ``"right"`` (default; detector on the patient's left) or ``"left"``.
    """

    sad: float | None = 541.0
    sid: float = 949.0
    detector_size: float = 500.0
    detector_pixels: int = 320
    output_size: int = 128
    frontal_source: str = "posterior"
    lateral_source: str = "right"

    def __post_init__(self) -> None:
        if self.sad is not None and not (0 < self.sad < self.sid):
            raise ConfigError(f"DRR geometry needs 0 < sad < sid, got sad={self.sad}, sid={self.sid}")
        if self.detector_size <= 0 or self.detector_pixels < 1 or self.output_size < 1:
            raise ConfigError(f"DRR detector must have positive size and pixel counts, got {self}")
        if self.frontal_source not in ("posterior", "anterior"):
            raise ConfigError(
                f"frontal_source must be 'posterior' (PA) or 'anterior' (AP), got {self.frontal_source!r}"
            )
        if self.lateral_source not in ("right", "left"):
            raise ConfigError(f"lateral_source must be 'right' or 'left', got {self.lateral_source!r}")

    @property
    def pixel_size(self) -> float:
        """Detector pixel pitch in mm at ``detector_pixels`` resolution."""
        return self.detector_size / self.detector_pixels

    def to_dict(self) -> dict:
        return asdict(self)

    def summary(self) -> str:
        """One line describing the geometry (for logs, ``meta.json`` and model cards)."""
        if self.sad is None:
            beam = "parallel beam"
        else:
            fan = math.degrees(math.atan(self.detector_size / 2 / self.sid))
            beam = f"cone beam SAD {self.sad:g} mm, SID {self.sid:g} mm (half fan {fan:.1f} deg)"
        return (
            f"{beam}, detector {self.detector_size:g} mm at {self.detector_pixels} px "
            f"-> {self.output_size} px, frontal {'PA' if self.frontal_source == 'posterior' else 'AP'}"
        )


@dataclass(frozen=True)
class DRRSettings:
    """The DRRs of the protocol: geometry and intensity scaling.

    Args:
        geometry: the :class:`DRRGeometry`.
        normalize: ``"max"`` divides each image by its own maximum (X2CT), ``"fixed"`` divides
            by ``max_value`` and clips to [0, 1], ``"none"`` keeps the line integrals.
        max_value: the divisor of ``normalize="fixed"``.
        flip_frontal: mirror the frontal view's columns (X2CT flipped its PA images).
        mu_water: attenuation of water in 1/mm (HU -> mu = mu_water * (1 + HU / 1000)).
    """

    geometry: DRRGeometry = field(default_factory=DRRGeometry)
    normalize: str = "max"
    max_value: float = 12.0
    flip_frontal: bool = False
    mu_water: float = MU_WATER

    def __post_init__(self) -> None:
        if isinstance(self.geometry, Mapping):  # a dict read back from meta.json
            object.__setattr__(self, "geometry", DRRGeometry(**self.geometry))
        if self.normalize not in DRR_NORMALIZE:
            raise ConfigError(f"DRR normalize must be one of {DRR_NORMALIZE}, got {self.normalize!r}")


_CT_FIELDS = {f.name for f in dataclasses.fields(CTProtocol)}
_GEOMETRY_FIELDS = {f.name for f in dataclasses.fields(DRRGeometry)}
_DRR_FIELDS = {f.name for f in dataclasses.fields(DRRSettings)} - {"geometry"}


@dataclass(frozen=True)
class Protocol:
    """The whole 128^3 protocol: :class:`CTProtocol` and :class:`DRRSettings`."""

    ct: CTProtocol = field(default_factory=CTProtocol)
    drr: DRRSettings = field(default_factory=DRRSettings)

    def __post_init__(self) -> None:
        if isinstance(self.ct, Mapping):
            object.__setattr__(self, "ct", CTProtocol(**self.ct))
        if isinstance(self.drr, Mapping):
            object.__setattr__(self, "drr", DRRSettings(**self.drr))

    @classmethod
    def build(cls, size: int | None = None, **settings: Any) -> "Protocol":
        """The protocol at ``size``^3 with ``size`` x ``size`` X-rays (the data contract), any
        field of :class:`CTProtocol`, :class:`DRRGeometry` or :class:`DRRSettings` overridden by
        name (``output_size`` too, for an X-ray size other than the volume's).

        Raises:
            ValueError: a name that is no field of the three (the message lists the fields).
        """
        ct = {k: v for k, v in settings.items() if k in _CT_FIELDS}
        geometry = {k: v for k, v in settings.items() if k in _GEOMETRY_FIELDS}
        drr = {k: v for k, v in settings.items() if k in _DRR_FIELDS}
        unknown = sorted(set(settings) - set(ct) - set(geometry) - set(drr))
        if unknown:
            known = sorted(_CT_FIELDS | _GEOMETRY_FIELDS | _DRR_FIELDS)
            raise ConfigError(f"unknown protocol setting(s) {unknown}; the settings are {known}")
        size = int(CTProtocol.size if size is None else size)
        geometry.setdefault("output_size", size)
        if "hu_window" in ct:
            ct["hu_window"] = tuple(ct["hu_window"])
        return cls(CTProtocol(size=size, **ct), DRRSettings(DRRGeometry(**geometry), **drr))

    @property
    def size(self) -> int:
        return self.ct.size

    @property
    def xray_size(self) -> int:
        return self.drr.geometry.output_size

    def to_dict(self) -> dict:
        """Nested plain dict (JSON-ready; ``Protocol(**d)`` reads it back)."""
        d = asdict(self)
        d["ct"]["hu_window"] = list(d["ct"]["hu_window"])
        return d
