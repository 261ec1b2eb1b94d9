"""Contrast of a clinical radiograph matched to the training DRRs.

A DRR is a max-normalised line integral; a clinical film is a processed display image (a
vendor's look-up table, edge enhancement, windowing). ``xray_contrast`` picks the mapping applied
after the film is scaled to [0, 1] and placed on the detector:

- ``"none"``: the scaled image as it is (the plain ``xray_normalize`` options);
- ``"histogram"``: its intensity histogram, over the part of the field the film covers, is
  matched to the **reference histogram** of the training DRRs of that view (scikit-image's
  ``match_histograms`` against the reference quantiles), which undoes any monotonic display
  mapping.

The reference ships with the models (``models/xray_reference.json``: per view, :data:`N_QUANTILES`
quantiles of the training DRRs' pixel values; ``scripts/xray_reference.py`` writes it from a
prepared datalist).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from duolift_bundle.errors import DuoLiftError
from duolift_bundle.io_utils import read_json, write_json

__all__ = [
    "CONTRAST",
    "N_QUANTILES",
    "DISTANCE_WARNING",
    "XRayReferenceError",
    "reference_quantiles",
    "load_reference",
    "write_reference",
    "match_to_reference",
    "histogram_distance",
]

CONTRAST = ("none", "histogram")
N_QUANTILES = 257
#: :func:`histogram_distance` above which an input is flagged as unlike the training DRRs: above
#: every DRR, below the real film (measurements: model card, "Real radiographs")
DISTANCE_WARNING = 0.16


class XRayReferenceError(DuoLiftError, ValueError):
    """A reference histogram file that is missing, unreadable or lacks a view."""


def reference_quantiles(images: Sequence[np.ndarray], n: int = N_QUANTILES) -> list[float]:
    """``n`` evenly spaced quantiles (0 .. 1) of the pooled pixel values of ``images``."""
    values = np.concatenate([np.asarray(im, dtype=np.float64).ravel() for im in images])
    return [float(v) for v in np.quantile(values, np.linspace(0.0, 1.0, n))]


def write_reference(
    path: str | os.PathLike, quantiles: Mapping[str, Sequence[float]], source: str, geometry: str
) -> None:
    """Write a reference file ``{"views": {view: quantiles}, "source", "geometry"}`` atomically."""
    write_json(
        path,
        {
            "views": {v: [round(float(q), 6) for q in qs] for v, qs in quantiles.items()},
            "source": source,
            "geometry": geometry,
            "n_quantiles": len(next(iter(quantiles.values()))),
        },
    )


def load_reference(path: str | os.PathLike, views: Sequence[str]) -> dict[str, np.ndarray]:
    """``{view: quantiles}`` of a reference file, checked."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise XRayReferenceError(
            f"{path}: X-ray reference histogram not found (write one with scripts/xray_reference.py, or --xray_contrast none)"
        )
    try:
        doc = read_json(path)
        out = {v: np.asarray(doc["views"][v], dtype=np.float64) for v in views}
    except (KeyError, TypeError, ValueError) as err:
        raise XRayReferenceError(f"{path}: not an X-ray reference with views {list(views)} ({err})") from err
    for v, q in out.items():
        if q.ndim != 1 or q.size < 2 or np.any(np.diff(q) < 0):
            raise XRayReferenceError(f"{path}: the {v} quantiles are not an increasing list")
    return out


def match_to_reference(image: np.ndarray, quantiles: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
    """Match the histogram of ``image`` (within ``mask``; elsewhere unchanged) to the distribution
    whose quantiles are ``quantiles``: scikit-image's ``match_histograms`` with the quantiles as
    the reference sample (equally weighted, so their empirical CDF is the reference's)."""
    from skimage.exposure import match_histograms

    out = np.array(image, dtype=np.float32, copy=True)
    mask = np.ones(out.shape, bool) if mask is None else np.asarray(mask, bool)
    if mask.sum() < 2:
        return out
    out[mask] = match_histograms(out[mask].astype(np.float64), np.asarray(quantiles, dtype=np.float64)).astype(
        np.float32
    )
    return out


def histogram_distance(image: np.ndarray, quantiles: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute difference between the quantile functions of ``image`` (within ``mask``) and
    of the reference, at the reference's probabilities: the 1-Wasserstein distance of the two
    intensity distributions on [0, 1]."""
    values = np.asarray(image, dtype=np.float64)[
        np.ones(np.shape(image), bool) if mask is None else np.asarray(mask, bool)
    ]
    quantiles = np.asarray(quantiles, dtype=np.float64)
    return float(np.mean(np.abs(np.quantile(values, np.linspace(0.0, 1.0, quantiles.size)) - quantiles)))
