"""The unexposed border of a radiograph: where the X-ray tube's collimator blades stopped the beam.

After reading (:func:`~duolift_bundle.inputs.radiograph_io.read_radiograph`: MONOCHROME1 inverted,
so that dense tissue is bright, as in a DRR) the unexposed border is the brightest part of the
film, uniform along the blade. A DRR has no such border: past the patient there is air, which is
dark. Left in, the border looks to the network like dense tissue framing the chest; the reading
path therefore marks it as outside the film (:func:`exposed_region`), and the placement fills it
with air, as it fills the part of the field no film reaches.

Blades are straight and parallel to the film's sides (the collimator is aligned with the
detector), so the border is found line by line from each side. A row (or column) belongs to it
while it is at the film's brightest level and either

- uniform: nearly all of its pixels there and nearly constant (a plain blade shadow), or
- a copy of its neighbour line: the two differ by less than half the film's own line-to-line
  variation (a reader's stripes or labels run across the border, constant along it).

Anatomy is neither, not even the abdomen at the film's lower edge: its noise alone makes
neighbouring lines differ by the film's typical step. The one real film (pydicom-data's CR)
has such a striped border along its top, 15 rows deep.
"""

from __future__ import annotations

import numpy as np

__all__ = ["exposed_region"]


def exposed_region(
    image: np.ndarray, level: float = 0.9, share: float = 0.97, max_std: float = 0.05, max_border: float = 0.25
) -> np.ndarray:
    """The exposed part of a film ``(H, W)`` (dense tissue bright): a boolean ``(H, W)`` mask, False
    on the unexposed border found from each side, True everywhere else (all True when there is
    none).

    Args:
        level: a line is unexposed when its pixels lie at or above this fraction of the film's
            range (the 1st to the 99.9th percentile of its values mapped to 0 .. 1) ...
        share: ... for at least this share of them ...
        max_std: ... and they vary by at most this much (on the same 0 .. 1 scale).
        max_border: the most of a side's length a border may take (a blade further in is anatomy).
    """
    img = np.asarray(image, dtype=np.float32)
    lo, hi = np.percentile(img, [1.0, 99.9])
    if not hi > lo:  # a blank film: nothing to tell apart
        return np.ones(img.shape, bool)
    unit = (img - lo) / (hi - lo)

    clipped = np.clip(unit, 0.0, 1.0)

    def typical_step(lines: np.ndarray) -> float:
        inner = lines[len(lines) // 4 : 3 * len(lines) // 4]
        return float(np.median(np.mean(np.abs(np.diff(inner, axis=0)), axis=1))) if len(inner) > 1 else 0.0

    def depth(lines: np.ndarray) -> int:
        limit, noise = int(max_border * len(lines)), typical_step(lines)
        n = 0
        while n < limit:
            line = lines[n]
            uniform = np.mean(line >= level) >= share and np.std(line) <= max_std
            neighbours = [lines[n + 1]] + ([lines[n - 1]] if n else [])  # the border's last line copies the one before
            copied = np.median(line) >= level and min(np.mean(np.abs(line - o)) for o in neighbours) < 0.5 * noise
            if not (uniform or copied):
                break
            n += 1
        return n

    top, bottom = depth(clipped), depth(clipped[::-1])
    left, right = depth(clipped.T), depth(clipped.T[::-1])
    mask = np.zeros(img.shape, bool)
    mask[top : img.shape[0] - bottom, left : img.shape[1] - right] = True
    return mask
