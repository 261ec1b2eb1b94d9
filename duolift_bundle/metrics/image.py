"""Pixel-level metrics of the paper's Tables 1-3: PSNR(2D), PSNR(3D), SSIM(2D), SSIM(3D), MAE.

Inputs are single volumes ``(D, H, W)`` (or ``(1, D, H, W)``) in the [0, 1] window of the data
contract, data range 1. Definitions:

- **PSNR(3D)**: ``10 log10(1 / MSE)`` over the whole volume.
- **PSNR(2D)** / **SSIM(2D)**: computed on every 2D slice and averaged; ``axes`` says along
  which array axes the slices are taken (default all three: axial, coronal and sagittal, as
  X2CT-GAN averaged them). A slice identical in both volumes (MSE 0, e.g. all air) would give an
  infinite PSNR; its MSE is floored at 1e-10 (100 dB), which is documented in every report.
- **SSIM**: Wang et al. (2004) with K1 = 0.01, K2 = 0.03, a Gaussian window of 11 taps and
  sigma 1.5 (a 3D window for SSIM(3D), a 2D window per slice for SSIM(2D)), population
  covariances, averaged over the positions where the window fits inside the image ("valid"),
  which equals scikit-image's ``structural_similarity(gaussian_weights=True, sigma=1.5,
  use_sample_covariance=False)`` (it filters with padding and then crops the window radius).
- **x2ct mode** reproduces X2CT-GAN's published metric code so numbers compare with papers that
  used it: values on its 0..2500 scale with PSNR peak 4095 (+20 log10(4095 / 2500) = +4.29 dB
  over the [0, 1] definition), and SSIM with a 7x7 uniform window and sample covariances,
  slice-wise over the three axes.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from duolift_bundle.errors import ConfigError, ShapeError
from monai.metrics import CumulativeIterationMetric

__all__ = [
    "X2CT_PSNR_OFFSET_DB",
    "psnr_3d",
    "psnr_2d",
    "ssim_3d",
    "ssim_2d",
    "mae",
    "slices",
    "psnr_image",
    "ssim_image",
    "VolumeMetric",
]

#: PSNR difference of X2CT-GAN's code (peak 4095 on a 0..2500 scale) over the [0, 1] definition.
X2CT_PSNR_OFFSET_DB = 20.0 * math.log10(4095.0 / 2500.0)
_MSE_FLOOR = 1e-10


def _volume(x: torch.Tensor | "np.ndarray") -> torch.Tensor:  # noqa: F821
    t = torch.as_tensor(x).detach().to(torch.float64)
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 3:
        raise ShapeError(f"expected a volume (D, H, W) or (1, D, H, W), got shape {list(t.shape)}")
    return t


def _pair(pred, target) -> tuple[torch.Tensor, torch.Tensor]:
    p, t = _volume(pred), _volume(target)
    if p.shape != t.shape:
        raise ShapeError(f"prediction shape {list(p.shape)} differs from target shape {list(t.shape)}")
    return p, t


def slices(volume: torch.Tensor, axis: int) -> torch.Tensor:
    """``(D, H, W)`` -> the stack of 2D slices along ``axis``, ``(N, h, w)``."""
    return volume.movedim(axis, 0)


def mae(pred, target) -> float:
    """Mean absolute error on the [0, 1] scale."""
    p, t = _pair(pred, target)
    return float((p - t).abs().mean())


def psnr_3d(pred, target, mode: str = "paper") -> float:
    """PSNR of the whole volume (``mode="x2ct"``: X2CT-GAN's peak-4095 definition)."""
    p, t = _pair(pred, target)
    value = 10.0 * math.log10(1.0 / max(float((p - t).square().mean()), _MSE_FLOOR))
    return value + (X2CT_PSNR_OFFSET_DB if mode == "x2ct" else 0.0)


def psnr_2d(pred, target, axes: Sequence[int] = (0, 1, 2), mode: str = "paper") -> float:
    """Mean slice-wise PSNR over the slices along each of ``axes`` (then averaged over axes)."""
    p, t = _pair(pred, target)
    per_axis = []
    for axis in axes:
        mse = (slices(p, axis) - slices(t, axis)).square().flatten(1).mean(1).clamp_min(_MSE_FLOOR)
        per_axis.append(float((10.0 * torch.log10(1.0 / mse)).mean()))
    return sum(per_axis) / len(per_axis) + (X2CT_PSNR_OFFSET_DB if mode == "x2ct" else 0.0)


def _gaussian_1d(size: int, sigma: float) -> torch.Tensor:
    """Normalised 1D Gaussian ``(size,)``, float64; SSIM's window is its outer product over the axes."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def _separable_filter(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """``x`` ``(N, C, *spatial)`` filtered with the outer product of the 1D ``kernel`` over every
    spatial axis, valid positions only: one 1D convolution per axis. The result equals the full
    ``window`` convolution (the Gaussian and uniform windows are separable) at ``3 * size``
    instead of ``size**3`` multiplications per voxel; float64 convolutions get no oneDNN kernels
    on the CPU, so the full 11^3 window made SSIM(3D) of one 64^3 volume take seconds."""
    dims = x.dim() - 2
    conv = F.conv3d if dims == 3 else F.conv2d
    channels = x.shape[1]
    for axis in range(dims):
        shape = [1] * dims
        shape[axis] = kernel.numel()
        x = conv(x, kernel.to(x).reshape(1, 1, *shape).expand(channels, 1, *shape), groups=channels)
    return x


def _ssim_map(p: torch.Tensor, t: torch.Tensor, kernel: torch.Tensor, sample_cov: bool) -> torch.Tensor:
    """SSIM map over the valid positions; ``p``, ``t`` ``(N, 1, *spatial)``; the window is the
    outer product of the 1D ``kernel`` over the spatial axes."""
    stats = _separable_filter(torch.cat([p, t, p * p, t * t, p * t], 1), kernel)
    mu_p, mu_t, pp, tt, pt = stats.unbind(1)
    var_p, var_t, cov = pp - mu_p**2, tt - mu_t**2, pt - mu_p * mu_t
    if sample_cov:
        n = kernel.numel() ** (p.dim() - 2)
        var_p, var_t, cov = (v * n / (n - 1) for v in (var_p, var_t, cov))
    c1, c2 = 0.01**2, 0.03**2
    return (((2 * mu_p * mu_t + c1) * (2 * cov + c2)) / ((mu_p**2 + mu_t**2 + c1) * (var_p + var_t + c2)))[:, None]


def ssim_3d(pred, target, win_size: int = 11, sigma: float = 1.5) -> float:
    """SSIM of the whole volume with a 3D Gaussian window: MONAI's ``SSIMMetric`` (data range 1),
    in float32 (float64 convolutions have no fast CPU kernels)."""
    from monai.metrics import SSIMMetric

    p, t = _pair(pred, target)
    if min(p.shape) < win_size:
        raise ShapeError(f"SSIM(3D) needs every edge >= {win_size}, got shape {list(p.shape)}")
    metric = SSIMMetric(spatial_dims=3, data_range=1.0, kernel_type="gaussian", win_size=win_size, kernel_sigma=sigma)
    return float(metric(p.float()[None, None], t.float()[None, None]).mean())


def ssim_2d(
    pred, target, axes: Sequence[int] = (0, 1, 2), win_size: int = 11, sigma: float = 1.5, mode: str = "paper"
) -> float:
    """Mean slice-wise SSIM (2D Gaussian window) over the slices along each of ``axes``.

    ``mode="x2ct"``: a 7x7 uniform window with sample covariances (X2CT-GAN's code)."""
    p, t = _pair(pred, target)
    if mode == "x2ct":
        kernel, sample_cov = torch.full((7,), 1.0 / 7, dtype=torch.float64), True  # the 7x7 uniform window
    else:
        kernel, sample_cov = _gaussian_1d(win_size, sigma), False
    per_axis = []
    for axis in axes:
        ps, ts = slices(p, axis)[:, None], slices(t, axis)[:, None]
        per_slice = _ssim_map(ps, ts, kernel, sample_cov).flatten(1).mean(1)
        per_axis.append(float(per_slice.mean()))
    return sum(per_axis) / len(per_axis)


def _image_pair(pred, target) -> tuple[torch.Tensor, torch.Tensor]:
    p, t = torch.as_tensor(pred).detach().double(), torch.as_tensor(target).detach().double()
    if p.dim() != 2 or p.shape != t.shape:
        raise ShapeError(f"expected two 2D images of one shape, got {list(p.shape)} and {list(t.shape)}")
    return p, t


def psnr_image(pred, target) -> float:
    """PSNR of two 2D images in [0, 1] (MSE floored at 1e-10), e.g. a DRR and a radiograph."""
    p, t = _image_pair(pred, target)
    return 10.0 * math.log10(1.0 / max(float((p - t).square().mean()), _MSE_FLOOR))


def ssim_image(pred, target, win_size: int = 11, sigma: float = 1.5) -> float:
    """SSIM of two 2D images in [0, 1] with the 2D Gaussian window of SSIM(2D)."""
    p, t = _image_pair(pred, target)
    return float(_ssim_map(p[None, None], t[None, None], _gaussian_1d(win_size, sigma), False).mean())


class VolumeMetric(CumulativeIterationMetric):
    """A per-volume metric of this module as a MONAI metric, for ``IgniteMetricHandler``: training
    selects its best model with the same code that writes the evaluation reports.

    ``VolumeMetric("psnr_3d")(y_pred, y)`` with ``(B, 1, D, H, W)`` batches in [0, 1] gives
    ``(B, 1)`` values; :meth:`aggregate` returns their mean over every volume seen (the paper's
    "mean over the test set").

    Args:
        name: ``"psnr_3d"``, ``"ssim_3d"``, ``"psnr_2d"``, ``"ssim_2d"`` or ``"mae"``.
    """

    _FUNCTIONS = {"psnr_3d": psnr_3d, "ssim_3d": ssim_3d, "psnr_2d": psnr_2d, "ssim_2d": ssim_2d, "mae": mae}

    def __init__(self, name: str = "psnr_3d") -> None:
        super().__init__()
        if name not in self._FUNCTIONS:
            raise ConfigError(f"VolumeMetric name must be one of {sorted(self._FUNCTIONS)}, got {name!r}")
        self.name = name

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        fn = self._FUNCTIONS[self.name]
        values = [fn(p, t) for p, t in zip(y_pred.detach().cpu(), y.detach().cpu())]
        return torch.tensor(values, dtype=torch.float64)[:, None]

    def aggregate(self) -> torch.Tensor:  # type: ignore[override]
        data = self.get_buffer()
        if not isinstance(data, torch.Tensor) or data.numel() == 0:
            raise ConfigError(f"{self.name}: no volume was measured")
        return data.float().mean()
