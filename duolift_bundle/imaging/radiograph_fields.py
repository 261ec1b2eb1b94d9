"""The body outline and the lung fields of a radiograph (dense structures bright), without a
trained model: used to estimate a film's pixel size from its lung width and, in the inference
quality report, to compare an input with the re-projection of its reconstruction.

On a smoothed copy: the body is what lies above an Otsu threshold between air and tissue (holes
filled); the lung fields are the largest dark region on each side of the image's midline, dark
meaning below the Otsu threshold of the central region (lungs and mediastinum), leaving out
regions that reach an image corner (air around the patient) or lie at the very top or bottom.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["RadiographFields", "radiograph_fields", "mask_dice", "midline_contrast"]


@dataclass
class RadiographFields:
    """Boolean masks at the image's size: ``body``, ``lungs`` (both lung fields; empty when two
    were not found) and ``found_lungs``."""

    body: np.ndarray
    lungs: np.ndarray
    found_lungs: bool

    def lung_columns(self, band: tuple[float, float] = (0.3, 0.8)) -> tuple[int, int] | None:
        """``(first, last + 1)`` column of the lung fields within the ``band`` (fractions) of
        their height, where they are widest and stray apical bits do not count; or None."""
        if not self.found_lungs:
            return None
        rows = np.where(self.lungs.any(axis=1))[0]
        top, height = rows.min(), rows.max() + 1 - rows.min()
        part = self.lungs[top + int(band[0] * height) : top + max(int(band[1] * height), int(band[0] * height) + 1)]
        cols = np.where(part.any(axis=0))[0]
        return int(cols.min()), int(cols.max()) + 1


def radiograph_fields(image: np.ndarray, work: int = 128, min_lung_fraction: float = 0.01) -> RadiographFields:
    """Body and lung fields of ``image`` ``(H, W)`` (see the module docstring), computed on a copy
    area-resampled to at most ``work`` pixels a side and returned at the image's size."""
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    image = np.asarray(image, dtype=np.float32)
    h, w = image.shape
    scale = max(1.0, max(h, w) / work)
    small_shape = (max(8, round(h / scale)), max(8, round(w / scale)))
    small = F.interpolate(torch.as_tensor(image)[None, None], size=small_shape, mode="area")[0, 0].numpy()
    small = ndimage.gaussian_filter(small, 1.0)
    sh, sw = small.shape
    if float(small.max() - small.min()) <= 1e-6:
        empty = np.zeros((h, w), bool)
        return RadiographFields(empty, empty.copy(), False)
    # body: above the air / tissue threshold of the whole image, lowered towards its darkest
    # pixels (a film without air around the patient has no air / tissue split to find)
    tissue, darkest = threshold_otsu(small), np.percentile(small, 5)
    body = ndimage.binary_fill_holes(small > darkest + 0.25 * (tissue - darkest))
    # lung fields: below the lung / mediastinum threshold of the central region, where the two
    # lungs and the mediastinum between them dominate
    centre = small[int(0.15 * sh) : int(0.75 * sh), int(0.2 * sw) : int(0.8 * sw)]
    dark = small < threshold_otsu(centre)
    # air around the patient (darker than the lungs, reaching a corner of the film) is cut away
    # first, or it joins a lung field where they touch
    air = small < threshold_otsu(small[dark]) if dark.sum() > 16 else np.zeros_like(dark)
    air_labels, _ = ndimage.label(air)
    ch, cw = max(1, sh // 20), max(1, sw // 20)
    corner_boxes = np.concatenate(
        [
            air_labels[:ch, :cw].ravel(),
            air_labels[:ch, -cw:].ravel(),
            air_labels[-ch:, :cw].ravel(),
            air_labels[-ch:, -cw:].ravel(),
        ]
    )
    outside = np.isin(air_labels, list(set(corner_boxes.tolist()) - {0}))
    dark = ndimage.binary_opening(dark & ~ndimage.binary_dilation(outside, iterations=1), iterations=1)
    labels, n = ndimage.label(dark)
    corners = {labels[0, 0], labels[0, -1], labels[-1, 0], labels[-1, -1]} - {0}
    sides: dict[str, tuple[float, int]] = {}
    for index in range(1, n + 1):
        if index in corners:  # air around the patient, not a lung
            continue
        rows, cols = np.nonzero(labels == index)
        if rows.size < min_lung_fraction * small.size or not (0.1 * sh < rows.mean() < 0.8 * sh):
            continue
        side = "right" if cols.mean() < sw / 2 else "left"  # the patient's right is on the image's left
        if rows.size > sides.get(side, (0, 0))[0]:
            sides[side] = (rows.size, index)
    found = len(sides) == 2
    lungs = np.isin(labels, [i for _, i in sides.values()]) if found else np.zeros_like(body)

    def full(mask: np.ndarray) -> np.ndarray:
        t = torch.as_tensor(mask.astype(np.float32))[None, None]
        return F.interpolate(t, size=(h, w), mode="nearest")[0, 0].numpy() > 0.5

    return RadiographFields(full(body), full(lungs), found)


def mask_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean masks (1.0 when both are empty)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2.0 * np.logical_and(a, b).sum() / total)


def midline_contrast(image: np.ndarray) -> float:
    """How much brighter a frontal film's midline (spine and mediastinum: the middle 16 % of its
    columns) is than the bands where the lungs lie (20-35 % and 65-80 %), over the middle half of
    its rows, on the film's own 0 .. 1 scale (minimum to maximum). Positive for every chest film
    and DRR (dense tissue bright); negative for an inverted one (the quality gate's polarity check;
    measured values in the model card)."""
    img = np.asarray(image, dtype=np.float64)
    lo, hi = float(img.min()), float(img.max())
    if not hi > lo:
        return 0.0
    unit = (img - lo) / (hi - lo)
    h, w = unit.shape
    rows = unit[int(0.25 * h) : int(0.75 * h)]
    centre = rows[:, int(0.42 * w) : int(0.58 * w)].mean()
    sides = np.concatenate(
        [rows[:, int(0.2 * w) : int(0.35 * w)].ravel(), rows[:, int(0.65 * w) : int(0.8 * w)].ravel()]
    )
    return float(centre - sides.mean())
