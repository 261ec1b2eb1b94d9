"""Projection consistency and the inference quality report: signals of a reconstruction's quality
that need no ground truth."""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from duolift_bundle.constants import PRED_KEY, XRAY_KEY, view_names
from duolift_bundle.geometry import Protocol
from duolift_bundle.imaging.radiograph_fields import mask_dice, radiograph_fields
from duolift_bundle.metrics.image import psnr_image, ssim_image
from duolift_bundle.transforms.drr import DRRProjector
from monai.transforms import MapTransform

__all__ = ["ProjectionConsistencyd"]


class ProjectionConsistencyd(MapTransform):
    """Re-project each volume of ``keys`` (the reconstruction ``pred``, ``(1, D, H, W)`` in
    [0, 1]) with the DRRs of ``protocol`` and compare it with the input X-rays ``xray_key``
    ``(V, S, S)`` view by view. Adds

    - ``"consistency"``: ``{"<view>_psnr", "<view>_ssim"}`` (:mod:`duolift_bundle.metrics.image`)
      and ``{"<view>_lung_dice", "<view>_body_dice"}``, the overlap of the lung fields and body
      outline found in the input with those found in the re-projection
      (:func:`~duolift_bundle.imaging.radiograph_fields.radiograph_fields`); a lung Dice that
      cannot be measured (no lung fields in the input or the re-projection) is None, with
      ``"<view>_lung_dice_reason"``, never 0;
    - ``"quality_warnings"``: a list of sentences for the summary (no lung fields found, or an
      overlap below ``min_lung_dice``);
    - ``"reprojection"`` ``(V, S, S)`` and ``"input_lung_fields"`` ``(V, S, S)`` for the figure.
    """

    def __init__(
        self,
        keys: Hashable = PRED_KEY,
        views: int = 2,
        protocol: Protocol | None = None,
        xray_key: str = XRAY_KEY,
        output_key: str = "consistency",
        min_lung_dice: float = 0.5,
    ) -> None:
        super().__init__(keys)
        self.views = view_names(views)
        self.projector = DRRProjector(protocol, self.views)
        self.xray_key = xray_key
        self.output_key = output_key
        self.min_lung_dice = min_lung_dice

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        xray = torch.as_tensor(d[self.xray_key]).float().detach().cpu()
        for key in self.key_iterator(d):
            pred = torch.as_tensor(d[key]).float().detach().cpu()
            with torch.no_grad():
                reproj = self.projector(pred[None])[0]
            scores, warnings, fields = {}, [], []
            for i, view in enumerate(self.views):
                scores[f"{view}_psnr"] = round(psnr_image(reproj[i], xray[i]), 3)
                scores[f"{view}_ssim"] = round(ssim_image(reproj[i], xray[i]), 4)
                seen, made = radiograph_fields(xray[i].numpy()), radiograph_fields(reproj[i].numpy())
                scores[f"{view}_body_dice"] = round(mask_dice(seen.body, made.body), 4)
                fields.append(seen.lungs)
                # no overlap to measure: null with the reason, never a Dice of 0
                if not seen.found_lungs:
                    reason = "no two lung fields found in the input; is it a chest radiograph of this view?"
                elif not made.found_lungs:
                    reason = "no two lung fields found in the reconstruction's re-projection"
                else:
                    reason = None
                if reason is not None:
                    scores[f"{view}_lung_dice"], scores[f"{view}_lung_dice_reason"] = None, reason
                    warnings.append(f"{view}: {reason}")
                    continue
                scores[f"{view}_lung_dice"] = round(mask_dice(seen.lungs, made.lungs), 4)
                if scores[f"{view}_lung_dice"] < self.min_lung_dice:
                    warnings.append(
                        f"{view}: the reconstruction's lung fields overlap the input's by "
                        f"{scores[f'{view}_lung_dice']:.2f} (Dice) only"
                    )
            d[self.output_key] = scores
            # after the warnings of earlier steps (a refinement that was skipped, say), never over them
            d["quality_warnings"] = list(data.get("quality_warnings", [])) + warnings
            d["reprojection"] = reproj
            d["input_lung_fields"] = np.stack(fields)
        return d
