"""The paper's per-case evaluation as MONAI dictionary transforms (``configs/evaluate.yaml``).

Per case (a dictionary with the reconstruction ``pred`` and the target ``ct``, both
``(1, D, H, W)`` in [0, 1]): :class:`ImageMetricsd` adds PSNR(2D), PSNR(3D), SSIM(2D), SSIM(3D),
MAE and optionally LPIPS(vgg) (:mod:`duolift_bundle.metrics`); :class:`AnatomicalDiced` adds the
lung and vessel DICE of segmentations of both volumes converted back to HU, with the segmenters'
names. :class:`~duolift_bundle.engines.reports.MetricsReport` collects the rows.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import torch
from duolift_bundle.constants import CT_KEY, PRED_KEY
from duolift_bundle.errors import ConfigError
from duolift_bundle.geometry import CTProtocol, voxel_spacing
from duolift_bundle.metrics import image as im
from duolift_bundle.metrics.anatomy import anatomical_dice
from monai.transforms import MapTransform

__all__ = ["ImageMetricsd", "AnatomicalDiced"]


def _volume(x: Any) -> np.ndarray:
    a = np.asarray(torch.as_tensor(x).detach().cpu().float())
    return a[0] if a.ndim == 4 else a


class ImageMetricsd(MapTransform):
    """Add ``metrics`` = {psnr_2d, psnr_3d, ssim_2d, ssim_3d, mae[, lpips]} comparing ``pred_key``
    with ``target_key``. ``mode="x2ct"`` reproduces X2CT-GAN's metric code (PSNR +4.29 dB, 7x7
    uniform SSIM(2D)); ``lpips`` is a :class:`~duolift_bundle.metrics.perceptual.SliceLPIPS` or None."""

    def __init__(
        self,
        pred_key: str = PRED_KEY,
        target_key: str = CT_KEY,
        lpips=None,
        mode: str = "paper",
        axes: Sequence[int] = (0, 1, 2),
    ) -> None:
        super().__init__(keys=pred_key)
        if mode not in ("paper", "x2ct"):
            raise ConfigError(f"metric mode must be 'paper' or 'x2ct', got {mode!r}")
        self.pred_key, self.target_key = pred_key, target_key
        self.lpips = lpips
        self.mode = mode
        self.axes = tuple(axes)

    def __call__(self, data: Mapping[str, Any]) -> dict:
        d = dict(data)
        t = _volume(d[self.target_key])
        for key in self.key_iterator(d):
            p = _volume(d[key])
            row = dict(d.get("metrics", {}))
            row.update(
                psnr_2d=im.psnr_2d(p, t, self.axes, mode=self.mode),
                psnr_3d=im.psnr_3d(p, t, mode=self.mode),
                ssim_2d=im.ssim_2d(p, t, self.axes, mode=self.mode),
                ssim_3d=im.ssim_3d(p, t),
                mae=im.mae(p, t),
            )
            if self.lpips is not None:
                row["lpips"] = self.lpips(p, t)
            d["metrics"] = row
        return d


class AnatomicalDiced(MapTransform):
    """Add ``dice_lung`` / ``dice_vessel`` (and the segmenters' names) to ``metrics``: both volumes
    are converted to HU with the HU window of ``protocol`` (the :class:`CTProtocol`) and segmented
    by ``lung`` and ``vessel``; ``spacing`` in mm (default: the target's own voxel size, from its
    affine, or the protocol's)."""

    def __init__(
        self,
        lung,
        vessel,
        pred_key: str = PRED_KEY,
        target_key: str = CT_KEY,
        spacing: Sequence[float] | None = None,
        protocol: CTProtocol | None = None,
    ) -> None:
        super().__init__(keys=pred_key)
        self.lung, self.vessel = lung, vessel
        self.protocol = protocol or CTProtocol()
        self.pred_key, self.target_key = pred_key, target_key
        self.spacing = tuple(float(s) for s in spacing) if spacing is not None else None

    def __call__(self, data: Mapping[str, Any]) -> dict:
        d = dict(data)
        t = self.protocol.to_hu(_volume(d[self.target_key]))
        spacing = voxel_spacing(d[self.target_key], self.spacing, self.protocol.voxel_mm)
        for key in self.key_iterator(d):
            row = dict(d.get("metrics", {}))
            row.update(anatomical_dice(self.protocol.to_hu(_volume(d[key])), t, spacing, self.lung, self.vessel))
            d["metrics"] = row
        return d
