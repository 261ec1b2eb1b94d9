"""Constants of the data contract (``docs/README.md``, "Conventions"): the dictionary keys, the
views, the axis convention of every volume and the HU window of the [0, 1] scale (X2CT-GAN's
CT_MIN_MAX 0..2500 on HU + 1024; Ying et al., CVPR 2019), with the HU <-> [0, 1] mapping.

The protocol's sizes and the DRR geometry (1 mm resampling, 320^3 crop, 128^3 volume, 541 / 949
mm, 500 mm / 320 px detector) are not here: they are the fields of the typed settings in
:mod:`duolift_bundle.geometry`, which the configs build and pass down.
"""

from __future__ import annotations

__all__ = [
    "HU_MIN",
    "HU_MAX",
    "AIR_HU",
    "VOLUME_AXCODES",
    "AXIS_LABELS",
    "VIEWS",
    "CT_KEY",
    "XRAY_KEY",
    "LUNG_MASK_KEY",
    "PRED_KEY",
    "FAILED_NAME",
    "hu_to_unit",
    "unit_to_hu",
]

HU_MIN: float = -1024.0
HU_MAX: float = 1476.0
AIR_HU: float = -1024.0

#: MONAI orientation codes of every volume in the bundle: array axis 0 points to Inferior,
#: axis 1 to Posterior, axis 2 to patient Left (so ``ct[0, z]`` is an axial slice shown in the
#: radiological convention: anterior at the top, patient's right on the image's left).
VOLUME_AXCODES: str = "IPL"
#: Explicit labels for :class:`monai.transforms.Orientation` (RAS naming, as nibabel).
AXIS_LABELS = (("L", "R"), ("P", "A"), ("I", "S"))

#: The two views, in the order of the ``xray`` channel axis.
VIEWS: tuple[str, str] = ("frontal", "lateral")

CT_KEY = "ct"
XRAY_KEY = "xray"
LUNG_MASK_KEY = "lung_mask"
PRED_KEY = "pred"

#: the failed cases of a batch run, ``{case: reason}``, beside its summary (preparation,
#: inference, evaluation)
FAILED_NAME = "failed.json"


def hu_to_unit(hu, hu_min: float = HU_MIN, hu_max: float = HU_MAX):
    """Map HU linearly to [0, 1] (not clipped; works on numpy arrays and tensors)."""
    return (hu - hu_min) / (hu_max - hu_min)


def unit_to_hu(x, hu_min: float = HU_MIN, hu_max: float = HU_MAX):
    """Inverse of :func:`hu_to_unit`."""
    return x * (hu_max - hu_min) + hu_min
