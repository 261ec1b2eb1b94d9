"""Anatomical metrics of the paper's Table 2: lung and vessel DICE between the segmentations of
the target CT and of the reconstruction (both converted back to HU).

Segmenters (each reports its ``name``, which goes into every result row, so a fallback is never
mistaken for the paper's tool):

- :class:`LungmaskR231` -- lungmask's U-Net R231 (Hofmanninger et al. 2020), the paper's lung
  segmenter; weights through :mod:`duolift_bundle.metrics.weights`.
- :class:`TotalSegmentatorVessels` -- TotalSegmentator's ``lung_vessels`` task (arteries and
  veins), the paper's vessel segmenter; weights through :mod:`duolift_bundle.metrics.weights`.
- :class:`ClassicalLungSegmenter` -- offline fallback: the LiftReg-style threshold recipe of
  :mod:`duolift_bundle.imaging.lung_mask`.
- :class:`FrangiVesselSegmenter` -- offline fallback: Frangi vesselness (scikit-image) of bright
  tubular structures inside a lung mask, thresholded.

Volumes are ``(D, H, W)`` numpy arrays in HU in the bundle's axis convention (axial slices
``hu[z]`` with anterior at the top and the patient's right on the left: the orientation lungmask
expects for numpy input).
"""

from __future__ import annotations

import os
import tempfile
from typing import Optional, Protocol, Sequence

import numpy as np
from duolift_bundle.errors import ConfigError, RunError, ShapeError
from duolift_bundle.imaging.lung_mask import classical_lung_mask
from duolift_bundle.metrics.weights import LUNGMASK_R231, TOTALSEG_LUNG_VESSELS, WeightsNotFoundError, resolve_weights

__all__ = [
    "Segmenter",
    "dice",
    "LungmaskR231",
    "ClassicalLungSegmenter",
    "FrangiVesselSegmenter",
    "TotalSegmentatorVessels",
    "anatomical_dice",
    "lung_segmenter",
    "vessel_segmenter",
]


class Segmenter(Protocol):
    name: str

    def __call__(self, hu: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        """A boolean mask of ``hu``'s shape, from a HU volume and its voxel spacing in mm."""


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two binary masks; 1.0 when both are empty (nothing to find, nothing found)."""
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    if a.shape != b.shape:
        raise ShapeError(f"mask shapes differ: {a.shape} vs {b.shape}")
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


class ClassicalLungSegmenter:
    """Offline lung fallback (threshold, body mask, components; see ``imaging/lung_mask.py``)."""

    name = "classical lung mask (offline fallback, not lungmask)"

    def __call__(self, hu: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        return classical_lung_mask(np.asarray(hu, np.float32), spacing=tuple(spacing)).astype(np.uint8)


class LungmaskR231:
    """lungmask's R231 U-Net (``LMInferer(modelpath=...)``), weights resolved offline-first.

    Args:
        weights: explicit path of ``unet_r231-d5d2fc3d.pth`` (else env / torch hub cache).
        allow_download: fetch the file into the torch hub cache when it is missing.
        batch_size: slices per forward pass.
    """

    name = "lungmask R231"

    def __init__(self, weights: Optional[str] = None, allow_download: bool = False, batch_size: int = 20) -> None:
        from lungmask import LMInferer

        self.weights = resolve_weights(LUNGMASK_R231, weights, allow_download)
        self.inferer = LMInferer(
            modelpath=str(self.weights), force_cpu=not _cuda(), batch_size=batch_size, tqdm_disable=True
        )

    def __call__(self, hu: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        labels = self.inferer.apply(np.asarray(hu, np.float32))  # 1 right lung, 2 left lung
        return (labels > 0).astype(np.uint8)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


class FrangiVesselSegmenter:
    """Offline vessel fallback: Frangi vesselness of bright tubes inside the lungs.

    Vesselness (scikit-image ``frangi``, ``black_ridges=False``, scales ``sigmas`` in voxels) of
    the HU volume clipped to [-1000, 300] and scaled to [0, 1], restricted to the (eroded) lung
    mask, thresholded at ``threshold`` times its 99.5th percentile inside the lungs.
    """

    name = "Frangi vesselness inside lungs (offline fallback, not TotalSegmentator)"

    def __init__(
        self,
        lung_segmenter: Optional[Segmenter] = None,
        sigmas: Sequence[float] = (0.5, 1.0, 1.5),
        threshold: float = 0.15,
    ) -> None:
        self.lung_segmenter = lung_segmenter or ClassicalLungSegmenter()
        self.sigmas = tuple(sigmas)
        self.threshold = threshold

    def __call__(self, hu: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        from scipy import ndimage as ndi
        from skimage.filters import frangi

        lungs = self.lung_segmenter(hu, spacing).astype(bool)
        if not lungs.any():
            return np.zeros(hu.shape, np.uint8)
        # vessels lie inside the lung mask's holes too: close it first
        region = ndi.binary_closing(lungs, iterations=2) | lungs
        x = (np.clip(np.asarray(hu, np.float32), -1000, 300) + 1000) / 1300
        v = frangi(x, sigmas=self.sigmas, black_ridges=False)
        v[~region] = 0
        ref = np.percentile(v[region], 99.5)
        if ref <= 0:
            return np.zeros(hu.shape, np.uint8)
        return ((v > self.threshold * ref) & region & (x > 0.25)).astype(np.uint8)


class TotalSegmentatorVessels:
    """TotalSegmentator ``lung_vessels`` (labels ``lung_arteries`` + ``lung_veins``).

    The weights folders (``Dataset117_*``, ``Dataset297_*``) are resolved before anything runs,
    so a machine without them gets :class:`~duolift_bundle.metrics.weights.WeightsNotFoundError` naming
    the folders, not a download attempt.

    Args:
        weights_dir: folder holding the nnU-Net ``Dataset*`` folders (else ``$TOTALSEG_WEIGHTS_PATH``
            / ``$TOTALSEG_HOME_DIR/nnunet/results``).
        device: "cpu" or "gpu".
    """

    name = "TotalSegmentator lung_vessels"
    VESSEL_LABELS = ("lung_arteries", "lung_veins")

    def __init__(self, weights_dir: Optional[str] = None, device: str = "cpu") -> None:
        self.weights = [
            resolve_weights(spec, weights_dir and _find_in(weights_dir, spec.filename))
            for spec in TOTALSEG_LUNG_VESSELS
        ]
        self.results_dir = str(self.weights[0].parent)
        self.device = device

    @classmethod
    def vessel_label_ids(cls) -> list[int]:
        from totalsegmentator.map_to_binary import class_map

        names = class_map["lung_vessels"]
        ids = [i for i, n in names.items() if n in cls.VESSEL_LABELS]
        if len(ids) != len(cls.VESSEL_LABELS):
            raise RunError(f"TotalSegmentator's lung_vessels classes changed: {names}")
        return ids

    def __call__(self, hu: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
        import nibabel as nib
        from totalsegmentator.python_api import totalsegmentator

        os.environ["TOTALSEG_WEIGHTS_PATH"] = self.results_dir
        affine = np.diag([*[float(s) for s in spacing], 1.0])
        with tempfile.TemporaryDirectory() as tmp:
            src = os.path.join(tmp, "ct.nii.gz")
            nib.save(nib.Nifti1Image(np.asarray(hu, np.float32), affine), src)
            out = os.path.join(tmp, "vessels.nii.gz")
            totalsegmentator(src, out, task="lung_vessels", ml=True, device=self.device, quiet=True)
            labels = np.asarray(nib.load(out).dataobj)
        return np.isin(labels, self.vessel_label_ids()).astype(np.uint8)


def _find_in(folder: str, pattern: str) -> str:
    import glob

    hits = sorted(glob.glob(os.path.join(glob.escape(folder), pattern)))
    if not hits:
        raise WeightsNotFoundError(f"no {pattern} folder in {folder} (TotalSegmentator lung_vessels weights)")
    return hits[0]


def anatomical_dice(
    pred_hu: np.ndarray, target_hu: np.ndarray, spacing: Sequence[float], lung: Segmenter, vessel: Segmenter
) -> dict:
    """``{"dice_lung", "dice_vessel", "lung_segmenter", "vessel_segmenter"}`` for one case."""
    pred_hu, target_hu = np.asarray(pred_hu), np.asarray(target_hu)
    if pred_hu.shape != target_hu.shape:
        raise ShapeError(f"prediction shape {pred_hu.shape} differs from target shape {target_hu.shape}")
    return {
        "dice_lung": dice(lung(pred_hu, spacing), lung(target_hu, spacing)),
        "dice_vessel": dice(vessel(pred_hu, spacing), vessel(target_hu, spacing)),
        "lung_segmenter": lung.name,
        "vessel_segmenter": vessel.name,
    }


def lung_segmenter(name: str = "lungmask", weights: Optional[str] = None, allow_download: bool = False):
    """``"lungmask"`` (the paper's, R231) or ``"classical"`` (offline fallback)."""
    if name == "lungmask":
        return LungmaskR231(weights=weights, allow_download=allow_download)
    if name == "classical":
        return ClassicalLungSegmenter()
    raise ConfigError(f"lung_segmenter must be 'lungmask' or 'classical', got {name!r}")


def vessel_segmenter(name: str = "totalsegmentator", weights_dir: Optional[str] = None, lung=None, device: str = "cpu"):
    """``"totalsegmentator"`` (the paper's, lung_vessels) or ``"frangi"`` (offline fallback, inside
    the lungs found by ``lung``)."""
    if name == "totalsegmentator":
        return TotalSegmentatorVessels(weights_dir=weights_dir, device=device)
    if name == "frangi":
        return FrangiVesselSegmenter(lung)
    raise ConfigError(f"vessel_segmenter must be 'totalsegmentator' or 'frangi', got {name!r}")
