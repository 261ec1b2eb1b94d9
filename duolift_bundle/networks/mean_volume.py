"""The trivial baseline of every model table: the voxel-wise mean of the training CTs."""

from __future__ import annotations

from typing import Optional

import numpy as np
import torch

from duolift_bundle.constants import CT_KEY
from duolift_bundle.data.datasets import load_datalist

__all__ = ["MeanVolume"]


class MeanVolume(torch.nn.Module):
    """The trivial baseline of the model card: whatever the X-rays, predict the voxel-wise mean of
    the training CTs. ``(B, V, H, W) -> (B, 1, D, H, W)``. A reconstruction network that does not
    beat it has learnt nothing case-specific. Evaluate it through ``evaluate.yaml`` (the same
    metric code as the model) with ``configs/baseline_mean.yaml``."""

    def __init__(self, mean: torch.Tensor) -> None:
        super().__init__()
        if mean.ndim != 4 or mean.shape[0] != 1:
            raise ValueError(f"the mean volume must be (1, D, H, W), got {tuple(mean.shape)}")
        self.register_buffer("mean", mean.float())

    @classmethod
    def from_datalist(cls, datalist: str, split: str = "training", size: Optional[int] = None) -> "MeanVolume":
        """Average the ``ct`` volumes of ``split`` of a prepared ``datalist.json`` (checked to be
        ``size``^3 when given)."""
        import nibabel as nib

        items = load_datalist(datalist, split)
        if not items:
            raise ValueError(f"{datalist}: no '{split}' case to average")
        total = None
        for item in items:
            vol = np.asarray(nib.load(item[CT_KEY]).dataobj, dtype=np.float64)
            if size is not None and vol.shape != (size,) * 3:
                raise ValueError(f"{item[CT_KEY]}: CT of shape {vol.shape}, expected {(size,) * 3}")
            total = vol if total is None else total + vol
        return cls(torch.from_numpy(total / len(items))[None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mean[None].expand(x.shape[0], *self.mean.shape).to(x.dtype)
