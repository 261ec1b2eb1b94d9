"""Projection consistency: a quality signal of a reconstruction that needs no ground truth."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import torch
from monai.transforms import MapTransform

from duolift_bundle.constants import PRED_KEY, VIEWS, XRAY_KEY
from duolift_bundle.geometry import Protocol
from duolift_bundle.metrics.image import psnr_image, ssim_image
from duolift_bundle.transforms.drr import DRRProjector

__all__ = ["ProjectionConsistencyd"]


class ProjectionConsistencyd(MapTransform):
    """Re-project each volume of ``keys`` (the reconstruction ``pred``, ``(1, D, H, W)`` in
    [0, 1]) with the DRRs of ``protocol`` and compare it with the input X-rays ``xray_key``
    ``(V, S, S)`` view by view: adds ``"consistency": {"frontal_psnr", "frontal_ssim", ...}``
    (PSNR / SSIM of :mod:`duolift_bundle.metrics.image`)."""

    def __init__(self, keys: Hashable = PRED_KEY, views: int = 2, protocol: Protocol | None = None, xray_key: str = XRAY_KEY, output_key: str = "consistency") -> None:
        super().__init__(keys)
        self.views = VIEWS[:views]
        self.projector = DRRProjector.from_protocol(protocol or Protocol(), self.views)
        self.xray_key = xray_key
        self.output_key = output_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        xray = torch.as_tensor(d[self.xray_key]).float().detach().cpu()
        for key in self.key_iterator(d):
            pred = torch.as_tensor(d[key]).float().detach().cpu()
            with torch.no_grad():
                reproj = self.projector(pred[None])[0]
            scores = {}
            for i, view in enumerate(self.views):
                scores[f"{view}_psnr"] = round(psnr_image(reproj[i], xray[i]), 3)
                scores[f"{view}_ssim"] = round(ssim_image(reproj[i], xray[i]), 4)
            d[self.output_key] = scores
        return d
