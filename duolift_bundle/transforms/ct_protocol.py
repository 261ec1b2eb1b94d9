"""The 128^3 CT protocol as a MONAI ``Compose`` (X2CT-GAN's preprocessing, made explicit).

Steps, for the CT key (and, with nearest-neighbour interpolation, for any label keys):

1. HU below -1024 (scanner padding such as -2048 or -3024) becomes -1024 (air).
2. the protocol's HU window (``CTProtocol.hu_window``; X2CT's CT_MIN_MAX 0..2500 on HU + 1024 by
   default) mapped linearly to [0, 1] and clipped. Windowing before the spatial steps makes the
   padding value 0 = air.
3. Orientation to the bundle's axis convention (MONAI axcodes ``"IPL"``: D superior ->
   inferior, H anterior -> posterior, W patient right -> left).
4. Resampling to ``spacing`` mm isotropic (1 mm).
5. Crop / pad to ``crop_size``^3 (320): in-plane centred; along z, ``z_anchor="superior"``
   keeps the top ``crop_size`` mm when the scan is longer (the lung apices are kept, as X2CT's
   ``crop_to_standard`` kept the last - most superior - slices) and pads symmetrically when it is
   shorter; ``z_anchor="center"`` centres along z too.
5b. With ``remove_table`` (default), the table is removed here, at 1 mm, where a thin chest wall
   is still resolved (:class:`~duolift_bundle.imaging.table.RemoveTabled`: checked against
   the lungs, refused with a reason in the CT's meta data when it would take patient).
6. Resize to ``size``^3 (128, i.e. 2.5 mm voxels), trilinear (X2CT: "linearly interpolated").

The affine is tracked by MONAI through every step, so a saved volume lands at the right place in
world space beside its source CT. ``lazy=True`` uses MONAI's lazy resampling: steps 3-6 are fused
into one interpolation (about 8x faster, values within a few HU of the two-step result).
"""

from __future__ import annotations

from collections.abc import Sequence

from duolift_bundle.constants import AXIS_LABELS, VOLUME_AXCODES
from duolift_bundle.geometry import AIR_HU, CTProtocol
from duolift_bundle.imaging.table import RemoveTabled
from monai.transforms import (
    Compose,
    EnsureTyped,
    Orientationd,
    Resized,
    ResizeWithPadOrCropd,
    ScaleIntensityRanged,
    Spacingd,
    SpatialCropd,
    ThresholdIntensityd,
)

__all__ = ["ct_protocol"]


def ct_protocol(
    keys: Sequence[str] | str = ("ct",), label_keys: Sequence[str] | str = (), protocol: CTProtocol | None = None
) -> Compose:
    """Build the protocol Compose (see the module docstring).

    Args:
        keys: image keys holding HU volumes ``(1, X, Y, Z)`` with an affine (MetaTensor).
        label_keys: label volumes resampled with nearest neighbour alongside.
        protocol: spacing, crop size, final size, HU window, z anchor and laziness
            (:class:`~duolift_bundle.geometry.CTProtocol`; X2CT's by default).

    Returns:
        A Compose mapping the HU volumes to ``(1, size, size, size)`` float32 in [0, 1] (labels:
        same shape, values preserved).
    """
    p = protocol or CTProtocol()
    keys = [keys] if isinstance(keys, str) else list(keys)
    label_keys = [label_keys] if isinstance(label_keys, str) else list(label_keys)
    hu_min, hu_max = p.hu_window
    all_keys = keys + label_keys
    interp = ["bilinear"] * len(keys) + ["nearest"] * len(label_keys)
    resize_modes = ["trilinear"] * len(keys) + ["nearest"] * len(label_keys)
    steps = [
        EnsureTyped(keys, dtype="float32", track_meta=True),
        ThresholdIntensityd(keys, threshold=max(AIR_HU, hu_min), above=True, cval=max(AIR_HU, hu_min)),
        ScaleIntensityRanged(keys, a_min=hu_min, a_max=hu_max, b_min=0.0, b_max=1.0, clip=True),
        Orientationd(all_keys, axcodes=VOLUME_AXCODES, labels=AXIS_LABELS),
        Spacingd(all_keys, pixdim=float(p.spacing), mode=interp, padding_mode="zeros"),
    ]
    if p.z_anchor == "superior":
        steps.append(SpatialCropd(all_keys, roi_slices=[slice(0, p.crop_size), slice(None), slice(None)]))
    steps.append(ResizeWithPadOrCropd(all_keys, spatial_size=p.crop_size, mode="constant", value=0))
    if p.remove_table:
        steps.append(RemoveTabled(keys, protocol=p, spacing=(p.spacing,) * 3))
    steps.append(Resized(all_keys, spatial_size=(p.size,) * 3, mode=resize_modes))
    overrides = {k: {"mode": m, "padding_mode": "zeros"} for k, m in zip(all_keys, interp)}
    return Compose(steps, lazy=p.lazy, overrides=overrides if p.lazy else None)
