"""Evaluation metrics of the paper's Tables 1-3 (pixel level here; perceptual and anatomical
metrics in their own modules)."""

from __future__ import annotations

from duolift_bundle.metrics.image import (
    X2CT_PSNR_OFFSET_DB,
    VolumeMetric,
    mae,
    psnr_2d,
    psnr_3d,
    psnr_image,
    slices,
    ssim_2d,
    ssim_3d,
    ssim_image,
)

__all__ = [
    "X2CT_PSNR_OFFSET_DB",
    "mae",
    "psnr_2d",
    "psnr_3d",
    "slices",
    "ssim_2d",
    "ssim_3d",
    "psnr_image",
    "ssim_image",
    "VolumeMetric",
]
