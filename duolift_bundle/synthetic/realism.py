"""Statistics that decide what a chest CT's DRRs and reconstruction look like (realism report).

:func:`chest_statistics` measures one prepared case (the data contract after the protocol):
body extent and position in the field, lung volume and height, diaphragm level, scan length, HU
class shares and medians (lung, fat, soft tissue, bone), both DRRs' intensity percentiles and the
lateral DRR's front-to-back profile. ``scripts/phantom_realism.py`` compares phantoms with real
CTs on them (model card, "Realism").

Axes follow the data contract: ``(D, H, W)`` = superior->inferior, anterior->posterior,
right->left; the field is ``size * voxel_mm`` wide and centred on the grid.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from duolift_bundle.geometry import CTProtocol
from duolift_bundle.imaging.lung_mask import body_mask
from scipy import ndimage as ndi

__all__ = ["HU_CLASSES", "STATISTICS", "TRUNK", "chest_statistics", "compare"]

#: :func:`~duolift_bundle.imaging.lung_mask.body_mask` settings of the body statistics: the
#: largest component above -500 HU only (the trunk; arms and the table do not widen the body), no
#: opening, holes (lungs, airways) filled slice by slice
TRUNK: dict = {"opening_radius": 0, "keep_fraction": 1.0}

#: HU ranges of the tissue classes (lower bound inclusive, upper exclusive)
HU_CLASSES: dict[str, tuple[float, float]] = {
    "lung": (-950.0, -500.0),
    "fat": (-190.0, -30.0),
    "soft": (-30.0, 150.0),
    "bone": (200.0, 3000.0),
}

#: statistic -> (unit, description), in report order
STATISTICS: dict[str, tuple[str, str]] = {
    "body_width_mm": ("mm", "body extent left-right (median over body slices, arms included)"),
    "body_depth_mm": ("mm", "body extent anterior-posterior (median over body slices)"),
    "body_width_share": ("", "body width / field of view"),
    "body_depth_share": ("", "body depth / field of view"),
    "body_centre_lr_mm": ("mm", "body centroid left-right from the field centre (+ = left)"),
    "body_centre_ap_mm": ("mm", "body centroid anterior-posterior from the field centre (+ = posterior)"),
    "scan_length_mm": ("mm", "superior-inferior extent of the body in the field"),
    "lung_volume_ml": ("ml", "lung mask volume"),
    "lung_height_mm": ("mm", "superior-inferior extent of the lung mask (slices with >= 5 cm^2 of lung)"),
    "lung_top_mm": ("mm", "lung apex from the field centre (+ = inferior)"),
    "diaphragm_mm": ("mm", "lowest lung voxel from the field centre (+ = inferior)"),
    "share_lung": ("", "share of body voxels in the lung HU range"),
    "share_fat": ("", "share of body voxels in the fat HU range"),
    "share_soft": ("", "share of body voxels in the soft-tissue HU range"),
    "share_bone": ("", "share of body voxels in the bone HU range"),
    "hu_lung": ("HU", "median HU inside the lung mask"),
    "hu_fat": ("HU", "median HU of fat-range body voxels"),
    "hu_soft": ("HU", "median HU of soft-tissue-range body voxels"),
    "hu_bone": ("HU", "median HU of bone-range body voxels"),
    "soft_sd_hu": ("HU", "standard deviation of soft-tissue-range body voxels (texture + noise)"),
    "drr_frontal_p5": ("", "frontal DRR 5th percentile"),
    "drr_frontal_p50": ("", "frontal DRR median"),
    "drr_frontal_p95": ("", "frontal DRR 95th percentile"),
    "drr_lateral_p5": ("", "lateral DRR 5th percentile"),
    "drr_lateral_p50": ("", "lateral DRR median"),
    "drr_lateral_p95": ("", "lateral DRR 95th percentile"),
    "lateral_fwhm": ("", "lateral DRR column profile: share of columns above half its maximum"),
    "lateral_peak": ("", "lateral DRR column profile: position of its maximum (0 = first column)"),
}


def _extent(mask_1d: np.ndarray) -> int:
    idx = np.flatnonzero(mask_1d)
    return int(idx[-1] - idx[0] + 1) if idx.size else 0


def chest_statistics(
    ct: np.ndarray,
    lung_mask: np.ndarray,
    xray: np.ndarray,
    voxel_mm: float,
    protocol: CTProtocol | None = None,
) -> dict[str, float]:
    """:data:`STATISTICS` of one case.

    Args:
        ct: ``(D, H, W)`` (or ``(1, D, H, W)``) in [0, 1], on the HU window of ``protocol`` (the
            :class:`CTProtocol`, X2CT's by default).
        lung_mask: ``(D, H, W)``, nonzero inside the lungs.
        xray: ``(V, X, X)`` DRRs (frontal first); with one view the lateral statistics are NaN.
        voxel_mm: isotropic voxel size.
    """
    ct = np.asarray(ct, dtype=np.float32).reshape(np.shape(ct)[-3:])
    lung = np.asarray(lung_mask).reshape(ct.shape) > 0
    xray = np.asarray(xray, dtype=np.float32)
    hu = (protocol or CTProtocol()).to_hu(ct)
    size = ct.shape[0]
    fov = size * voxel_mm
    centre = (np.asarray(ct.shape) - 1) / 2.0
    body = body_mask(hu, **TRUNK)
    s: dict[str, float] = {}
    rows = np.flatnonzero(body.any(axis=(1, 2)))
    widths = [_extent(body[z].any(axis=0)) for z in rows]
    depths = [_extent(body[z].any(axis=1)) for z in rows]
    s["body_width_mm"] = float(np.median(widths)) * voxel_mm if rows.size else 0.0
    s["body_depth_mm"] = float(np.median(depths)) * voxel_mm if rows.size else 0.0
    s["body_width_share"] = s["body_width_mm"] / fov
    s["body_depth_share"] = s["body_depth_mm"] / fov
    com = ndi.center_of_mass(body) if body.any() else centre
    s["body_centre_lr_mm"] = float(com[2] - centre[2]) * voxel_mm
    s["body_centre_ap_mm"] = float(com[1] - centre[1]) * voxel_mm
    s["scan_length_mm"] = float(rows.size) * voxel_mm
    # slices with at least 5 cm^2 of lung: the trachea alone (about 3 cm^2) does not start the lungs
    lung_rows = np.flatnonzero(lung.sum(axis=(1, 2)) * voxel_mm**2 >= 500.0)
    s["lung_volume_ml"] = float(lung.sum()) * voxel_mm**3 / 1000.0
    s["lung_height_mm"] = float(lung_rows[-1] - lung_rows[0] + 1) * voxel_mm if lung_rows.size else 0.0
    s["lung_top_mm"] = float(lung_rows[0] - centre[0]) * voxel_mm if lung_rows.size else float("nan")
    s["diaphragm_mm"] = float(lung_rows[-1] - centre[0]) * voxel_mm if lung_rows.size else float("nan")
    inside = hu[body]
    for name, (lo, hi) in HU_CLASSES.items():
        sel = inside[(inside >= lo) & (inside < hi)]
        s[f"share_{name}"] = float(sel.size) / max(inside.size, 1)
        if name != "lung":
            s[f"hu_{name}"] = float(np.median(sel)) if sel.size else float("nan")
        if name == "soft":
            s["soft_sd_hu"] = float(sel.std()) if sel.size else float("nan")
    s["hu_lung"] = float(np.median(hu[lung])) if lung.any() else float("nan")
    for v, view in enumerate(("frontal", "lateral")):
        for q in (5, 50, 95):
            s[f"drr_{view}_p{q}"] = float(np.percentile(xray[v], q)) if v < xray.shape[0] else float("nan")
    if xray.shape[0] > 1:
        profile = xray[1].mean(axis=0)
        s["lateral_fwhm"] = float((profile >= profile.max() / 2.0).mean())
        s["lateral_peak"] = float(np.argmax(profile)) / max(profile.size - 1, 1)
    else:
        s["lateral_fwhm"] = s["lateral_peak"] = float("nan")
    return {k: s[k] for k in STATISTICS}


def compare(
    real: Sequence[Mapping[str, float]], synthetic: Sequence[Mapping[str, float]]
) -> dict[str, dict[str, float | bool]]:
    """Per statistic: the real cases' min / max and the synthetic cases' mean / min / max, and
    whether the synthetic mean lies inside the real range."""
    out: dict[str, dict[str, float | bool]] = {}
    for key in STATISTICS:
        r = np.array([c[key] for c in real], dtype=float)
        p = np.array([c[key] for c in synthetic], dtype=float)
        out[key] = {
            "real_min": float(np.nanmin(r)),
            "real_max": float(np.nanmax(r)),
            "synthetic_mean": float(np.nanmean(p)),
            "synthetic_min": float(np.nanmin(p)),
            "synthetic_max": float(np.nanmax(p)),
            "inside": bool(np.nanmin(r) <= np.nanmean(p) <= np.nanmax(r)),
        }
    return out
