"""Constants of the data contract (``docs/README.md``, "Conventions"): the dictionary keys, the
views and the axis convention of every volume.

The protocol's numbers (1 mm resampling, 320^3 crop, 128^3 volume, the HU window of the [0, 1]
scale, the DRR geometry) are not here: they are the fields of the typed settings in
:mod:`duolift_bundle.geometry`, which the configs build and pass down whole.
"""

from __future__ import annotations

from duolift_bundle.errors import ConfigError

__all__ = [
    "VOLUME_AXCODES",
    "AXIS_LABELS",
    "VIEWS",
    "CT_KEY",
    "XRAY_KEY",
    "LUNG_MASK_KEY",
    "PRED_KEY",
    "FAILED_NAME",
    "view_names",
]

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


def view_names(views: int) -> tuple[str, ...]:
    """The views of a model with ``views`` inputs: ``("frontal",)`` or ``("frontal", "lateral")``;
    the one check of a ``views`` setting (a ConfigError for anything but 1 or 2)."""
    if isinstance(views, bool) or views not in (1, 2):
        raise ConfigError(f"views must be 1 (frontal) or 2 (frontal + lateral), got {views!r}")
    return VIEWS[: int(views)]
