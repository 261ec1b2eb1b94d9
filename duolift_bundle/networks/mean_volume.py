"""The trivial baseline of every model table: the voxel-wise mean of the training CTs."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Optional

import numpy as np
import torch
from duolift_bundle.constants import CT_KEY
from duolift_bundle.datasets.routes import load_datalist
from duolift_bundle.errors import ConfigError, InputFileError, MissingFileError, ShapeError

__all__ = ["MeanVolume"]


class MeanVolume(torch.nn.Module):
    """The trivial baseline of the model card: whatever the X-rays, predict the voxel-wise mean of
    the training CTs. ``(B, V, H, W) -> (B, 1, D, H, W)``. A reconstruction network that does not
    beat it has learnt nothing case-specific. Evaluate it through ``evaluate.yaml`` (the same
    metric code as the model) with ``configs/baseline_mean.yaml``."""

    def __init__(self, mean: torch.Tensor) -> None:
        super().__init__()
        if mean.ndim != 4 or mean.shape[0] != 1:
            raise ShapeError(f"the mean volume must be (1, D, H, W), got {tuple(mean.shape)}")
        self.register_buffer("mean", mean.float())

    @classmethod
    def from_datalist(cls, datalist: str, split: str = "training", size: Optional[int] = None) -> "MeanVolume":
        """Average the ``ct`` volumes of ``split`` of a prepared ``datalist.json`` (checked to be
        ``size``^3 when given); a CT listed several times (``real_repeats`` of
        :func:`~duolift_bundle.datasets.training_sets.compose_datalist`) counts once."""
        paths = list(dict.fromkeys(item[CT_KEY] for item in load_datalist(datalist, split)))
        if not paths:
            raise InputFileError(f"{datalist}: no '{split}' case to average")
        return cls.from_files(paths, size)

    @classmethod
    def from_files(cls, paths: Sequence[str], size: Optional[int] = None) -> "MeanVolume":
        """Average prepared ``ct.nii.gz`` volumes (``[0, 1]``, ``size``^3 when given)."""
        import nibabel as nib

        if not paths:
            raise ConfigError("MeanVolume.from_files needs at least one CT")
        total = None
        for path in paths:
            vol = np.asarray(nib.load(path).dataobj, dtype=np.float64)
            if size is not None and vol.shape != (size,) * 3:
                raise ShapeError(f"{path}: CT of shape {vol.shape}, expected {(size,) * 3}")
            total = vol if total is None else total + vol
        return cls(torch.from_numpy(total / len(paths))[None])

    @classmethod
    def from_file(cls, path: str, size: Optional[int] = None) -> "MeanVolume":
        """A mean volume saved as NIfTI (``[0, 1]``, ``size``^3 when given), e.g. the shipped
        models' baselines in ``models/baselines/`` (written by :meth:`save`)."""
        import nibabel as nib

        if not os.path.isfile(path):
            raise MissingFileError(f"{path}: mean volume not found")
        vol = np.asarray(nib.load(path).dataobj, dtype=np.float32)
        if vol.ndim != 3 or (size is not None and vol.shape != (size,) * 3):
            raise ShapeError(f"{path}: mean volume of shape {vol.shape}, expected {(size,) * 3 if size else '3D'}")
        return cls(torch.from_numpy(vol)[None])

    def save(self, path: str, affine: Optional[np.ndarray] = None) -> str:
        """Write the mean volume as NIfTI (float32, atomically); ``affine`` default the protocol's grid."""
        import nibabel as nib
        from duolift_bundle.geometry import CTProtocol, grid_affine
        from duolift_bundle.io_utils import atomic_path

        vol = self.mean[0].cpu().numpy().astype(np.float32)
        img = nib.Nifti1Image(vol, grid_affine(vol.shape[0], CTProtocol().fov_mm) if affine is None else affine)
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        with atomic_path(path) as tmp:
            img.to_filename(tmp)
        return path

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mean[None].expand(x.shape[0], *self.mean.shape).to(x.dtype)
