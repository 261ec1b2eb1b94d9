"""Building blocks of the DuoLift generator (paper: "Generator Architecture", Fig. 1).

Names follow the paper: the ResNet-34 2D feature encoder, the Lifting module, the 3D ResNet
block, Upsample Type 1 and Upsample Type 2. Shapes use the bundle's axis convention
(:mod:`duolift_bundle`): a volume is ``(B, C, D, H, W)`` with D superior -> inferior,
H anterior -> posterior, W patient right -> left; the frontal view is ``(D, W)`` and the lateral
view ``(D, H)`` of that volume. Lifting a frontal map therefore repeats it along H (the frontal
ray direction) and lifting a lateral map repeats it along W (the lateral ray direction).

Choices where the paper is silent (and why):

- Normalisation is instance norm with affine parameters everywhere: the paper trains with batch
  size 1, where batch statistics are meaningless, and X2CT-GAN, whose recipe the paper follows,
  uses instance norm too.
- The 3D instance norm is :class:`InstanceNorm3dCL`, numerically PyTorch's instance norm but
  keeping the ``channels_last_3d`` layout (see :class:`~.duolift.DuoLiftGenerator`).
- 3D activations are LeakyReLU(0.1), MONAI's U-Net default, so that the U-Net++ / U-Net stages
  and the blocks in front of them behave alike; the 2D encoder keeps ResNet's ReLU.
"""

from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F
from duolift_bundle.errors import ConfigError, ShapeError
from monai.networks.blocks import Convolution, UnetResBlock
from monai.networks.layers.factories import Norm
from torchvision.models.resnet import BasicBlock

__all__ = [
    "InstanceNorm3dCL",
    "channel_var_mean",
    "channel_affine_",
    "NORM_3D",
    "ACT_3D",
    "ResNet34Encoder2D",
    "ResBlock3D",
    "UpsampleType1",
    "UpsampleType2",
    "Lifting",
    "LIFT_MODES",
    "lift_repeat",
    "check_xray_input",
]


#: rows of the (voxels, channels) matrix one step of :func:`channel_var_mean` reads at a time
STAT_ROWS = 1 << 15


def _voxel_rows(x: torch.Tensor) -> torch.Tensor:
    """A view of ``x`` ``(B, C, *spatial)`` as ``(B, voxels, C)``, without a copy for both
    layouts (for channels-first its voxel stride is 1)."""
    b, c = x.shape[:2]
    if x.dim() == 5 and c > 1 and x.is_contiguous(memory_format=torch.channels_last_3d):
        return x.permute(0, 2, 3, 4, 1).reshape(b, -1, c)
    return x.reshape(b, c, -1).transpose(1, 2)


def channel_var_mean(x: torch.Tensor, rows: int = STAT_ROWS) -> tuple[torch.Tensor, torch.Tensor]:
    """Biased variance and mean of every channel of ``x`` ``(B, C, *spatial)`` over its voxels,
    ``((B, C), (B, C))`` in float32 whatever ``x``'s dtype, without autograd.

    One pass over the ``(B, voxels, C)`` view in blocks of ``rows`` voxels, on data shifted by the
    first block's mean K: ``var = E[(x - K)^2] - E[x - K]^2``. With K near the mean there is no
    cancellation (the shifted-data algorithm), so this stays as exact as ``torch.var_mean`` in
    float32, unlike ``F.batch_norm``'s single-pass statistics (off by 2e-3 at a mean of 6
    standard deviations), and on a CPU it runs about 4x faster than ``torch.var_mean`` over the
    spatial dims of a channels-last tensor (a strided reduction) (``tests/networks/test_networks.py``)."""
    m = _voxel_rows(x)
    n = m.shape[1]
    shift = m[:, :rows].float().mean(dim=1, keepdim=True)
    total = torch.zeros_like(shift[:, 0])
    squares = torch.zeros_like(total)
    for start in range(0, n, rows):
        d = m[:, start : start + rows].float() - shift
        total += d.sum(dim=1)
        squares += torch.linalg.vecdot(d, d, dim=1)
    mean_d = total / n
    return (squares / n - mean_d * mean_d).clamp_min(0.0), shift[:, 0] + mean_d


def channel_affine_(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, rows: int = STAT_ROWS) -> torch.Tensor:
    """``x * scale + shift`` per channel (``scale``, ``shift``: ``(B, C)`` float32), in place, computed
    in float32 block by block and stored in ``x``'s dtype: in bfloat16 itself, ``x * scale`` and
    ``+ shift`` nearly cancel where the mean is large and lose the result's digits."""
    m = _voxel_rows(x)
    scale, shift = scale[:, None], shift[:, None]
    for start in range(0, m.shape[1], rows):
        block = m[:, start : start + rows]
        if block.dtype == torch.float32:
            block.mul_(scale).add_(shift)
        else:
            block.copy_(block.float().mul_(scale).add_(shift))
    return x


class InstanceNorm3dCL(nn.InstanceNorm3d):
    """Instance norm (affine only; running statistics are not supported) that preserves the input's memory layout.

    ``nn.InstanceNorm3d`` returns a contiguous (channels-first) tensor, so every norm layer
    would undo a ``channels_last_3d`` layout and make the next oneDNN convolution copy its input
    into a blocked layout (+1 copy of the largest feature map, and slower). Here the statistics
    come from ``torch.var_mean`` (with autograd, or on a GPU) or :func:`channel_var_mean`
    (inference on a CPU: 3x faster), in float32; the affine map is one ``addcmul``, or without
    autograd :func:`channel_affine_` in place (the input is a convolution's output that nothing
    else reads: one full-size tensor less at peak). The output keeps the input's dtype (bfloat16
    under CPU autocast stays bfloat16: no conversion copies between layers).
    The parameters (``weight``, ``bias``) and results equal ``nn.InstanceNorm3d``'s, so
    checkpoints are interchangeable. ``(B, C, D, H, W) -> (B, C, D, H, W)``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight, bias = self.weight, self.bias
        if x.dim() != 5 or weight is None or bias is None:
            raise ShapeError(f"InstanceNorm3dCL needs affine parameters and a 5D input, got shape {list(x.shape)}")
        dense = x.is_contiguous() or x.is_contiguous(memory_format=torch.channels_last_3d)  # views write through
        if torch.is_grad_enabled() or x.device.type != "cpu" or not dense:
            var, mean = torch.var_mean(x.float(), dim=(2, 3, 4), keepdim=True, correction=0)
            scale = weight.view(1, -1, 1, 1, 1) * torch.rsqrt(var + self.eps)
            shift = bias.view(1, -1, 1, 1, 1) - mean * scale
            return torch.addcmul(shift.to(x.dtype), x, scale.to(x.dtype))
        var, mean = channel_var_mean(x)
        scale = weight.float() * torch.rsqrt(var + self.eps)
        return channel_affine_(x, scale, bias.float() - mean * scale)

    def __init__(self, num_features: int, eps: float = 1e-5, affine: bool = True) -> None:
        if not affine:
            raise ConfigError("InstanceNorm3dCL is affine only")
        super().__init__(num_features, eps=eps, affine=True, track_running_stats=False)


# MONAI's extension point for new norm layers (as its "instance_nvfuser"); lets MONAI's blocks
# (UnetResBlock, BasicUNet, BasicUNetPlusPlus) build InstanceNorm3dCL from a name.
if "INSTANCE_CL" not in Norm.names:
    Norm.add_factory_class("instance_cl", InstanceNorm3dCL)

#: Normalisation and activation of every 3D block (MONAI layer-factory notation).
NORM_3D = ("instance_cl", {"affine": True})
ACT_3D = ("leakyrelu", {"negative_slope": 0.1, "inplace": True})


class ResNet34Encoder2D(nn.Module):
    """ResNet-34 (He et al. 2016) feature encoder giving ``F^2D`` at a quarter of the input size.

    ``(B, in_channels, H, W) -> (B, channels[-1], H/4, W/4)``; with the paper's widths
    ``(B, 1, 128, 128) -> (B, 512, 32, 32)``.

    torchvision's ResNet-34 reduces the image 32-fold, but the paper's ``F^2D`` lies at H/4: the
    stem (7x7 stride-2 convolution and stride-2 max pooling) keeps its strides and the four stages
    (3, 4, 6, 3 basic blocks of 64, 128, 256, 512 channels) run at stride 1. Dilation is not used
    (torchvision's ``BasicBlock`` does not support it). The blocks are torchvision's own, with
    instance norm in place of batch norm.

    Args:
        in_channels: channels of one view (1 for an X-ray).
        channels: output channels of the four stages.
        blocks: basic blocks per stage.
    """

    def __init__(
        self,
        in_channels: int = 1,
        channels: tuple[int, ...] = (64, 128, 256, 512),
        blocks: tuple[int, ...] = (3, 4, 6, 3),
    ) -> None:
        super().__init__()
        if len(channels) != len(blocks):
            raise ConfigError(f"channels {channels} and blocks {blocks} must have the same length")
        norm = functools.partial(nn.InstanceNorm2d, affine=True)
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, channels[0], kernel_size=7, stride=2, padding=3, bias=False),
            norm(channels[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(kernel_size=3, stride=2, padding=1),
        )
        stages = []
        inplanes = channels[0]
        for planes, n in zip(channels, blocks):
            layers = []
            for _ in range(n):
                downsample = None
                if inplanes != planes:
                    downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, bias=False), norm(planes))
                layers.append(BasicBlock(inplanes, planes, stride=1, downsample=downsample, norm_layer=norm))
                inplanes = planes
            stages.append(nn.Sequential(*layers))
        self.stages = nn.Sequential(*stages)
        self.out_channels = inplanes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W) -> (B, channels[-1], H/4, W/4)``."""
        return self.stages(self.stem(x))


class ResBlock3D(nn.Module):
    """The paper's 3D "ResNet block": MONAI's :class:`~monai.networks.blocks.UnetResBlock`.

    Two 3x3x3 convolutions with instance norm and LeakyReLU, and a 1x1x1 projection on the
    shortcut when the channel count changes. ``(B, C_in, D, H, W) -> (B, C_out, D, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.block = UnetResBlock(
            3, in_channels, out_channels, kernel_size=3, stride=1, norm_name=NORM_3D, act_name=ACT_3D
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(x)


class UpsampleType2(nn.Module):
    """Upsample Type 2: a learned 2x upsampling that follows a 3D ResNet block.

    A 2x2x2 transposed convolution with stride 2, instance norm and LeakyReLU, keeping the
    channel count (the ResNet block that follows does the channel reduction).
    ``(B, C, D, H, W) -> (B, C, 2D, 2H, 2W)``. The paper shows the block only as a figure; a
    transposed convolution is the learned upsampling it pairs with a ResNet block "to upsample
    the spatial size and preserve information from the previous layer".
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.up = Convolution(
            3,
            channels,
            channels,
            strides=2,
            kernel_size=2,
            act=ACT_3D,
            norm=NORM_3D,
            is_transposed=True,
            padding=0,
            output_padding=0,
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.up(x)


class UpsampleType1(nn.Module):
    """Upsample Type 1: brings a coarse branch-1 map to the output grid with 64 channels.

    A 1x1x1 convolution with instance norm and LeakyReLU to ``out_channels`` at the coarse
    resolution, then trilinear interpolation by ``scale`` (4 for f_u21 -> f_u11, 2 for
    f_u22 -> f_u12). Projecting before interpolating does the convolution on 1/scale^3 of the
    voxels, which keeps these two skip paths cheap at 128^3.
    ``(B, C_in, D/s, H/s, W/s) -> (B, out_channels, D, H, W)``.
    """

    def __init__(self, in_channels: int, out_channels: int, scale: int) -> None:
        super().__init__()
        self.project = Convolution(3, in_channels, out_channels, kernel_size=1, act=ACT_3D, norm=NORM_3D)
        self.scale = float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(self.project(x), scale_factor=self.scale, mode="trilinear", align_corners=False)


def lift_repeat(x: torch.Tensor, view: int, depth: int) -> torch.Tensor:
    """Repeat a 2D map along its view's ray direction (the paper's Lifting by repetition).

    Args:
        x: ``(B, C, h, w)``; for the frontal view (``view=0``) rows are D and columns W of the
            volume, for the lateral view (``view=1``) rows are D and columns H.
        view: 0 frontal, 1 lateral.
        depth: number of repetitions along the ray direction.

    Returns:
        ``(B, C, h, depth, w)`` for the frontal view (repeated along H), ``(B, C, h, w, depth)``
        for the lateral view (repeated along W). The result is an expanded view (no copy).
    """
    if view == 0:
        return x.unsqueeze(3).expand(-1, -1, -1, depth, -1)
    return x.unsqueeze(4).expand(-1, -1, -1, -1, depth)


LIFT_MODES = ("repeat", "conv", "backproject")


class Lifting(nn.Module):
    """The Lifting module: a 2D map of one view to a 3D map on the volume grid.

    ``(B, C, h, w) -> (B, C, h, n, w)`` (frontal) or ``(B, C, h, w, n)`` (lateral), n = ``depth``.

    ``mode="repeat"`` is the paper's lifting (repetition along the ray direction, as if the beam
    were parallel and the map covered the volume's field).
    ``mode="conv"`` is the ablation of Table 4, row 2 ("replaces the duplication operation in the
    Lifting module with a 2D convolution layer"): a 2D convolution maps the C channels to
    ``C * depth`` channels, which are reshaped to ``depth`` positions along the ray, as X2CT-GAN
    treats feature channels as depth. The kernel is 1x1 for feature maps (a 3x3 kernel from 512 to
    512 * 32 channels would add 75 M parameters) and 3x3 for single-channel images (a 1x1
    convolution of one channel would only scale it, i.e. repeat it again).
    ``mode="backproject"`` places the map along the rays of the DRR geometry (not in the paper):
    the map is read as the view's detector image and each plane across the rays receives it
    through the normalised adjoint of the projector's sampling of that plane
    (:func:`duolift_bundle.transforms.drr.lift_matrices`), so a feature lands where the projector
    took it from, magnified by the cone beam (1.35 to 2.49 across X2CT's 320 mm field); voxels no
    ray reaches get 0. Needs ``geometry`` and ``fov_mm`` (the protocol's); the matrices are
    derived buffers, not saved in checkpoints. ``h = w = depth`` (a cube).
    """

    def __init__(
        self,
        channels: int,
        depth: int,
        view: int,
        mode: str = "repeat",
        kernel_size: int = 1,
        geometry: object | None = None,
        fov_mm: float | None = None,
        flip_frontal: bool = False,
    ) -> None:
        super().__init__()
        if mode not in LIFT_MODES:
            raise ConfigError(f"Lifting mode must be one of {LIFT_MODES}, got {mode!r}")
        if view not in (0, 1):
            raise ConfigError(f"view must be 0 (frontal) or 1 (lateral), got {view}")
        self.mode = mode
        self.view = view
        self.depth = depth
        self.channels = channels
        self.flip = bool(flip_frontal) and view == 0
        self.conv = (
            nn.Conv2d(channels, channels * depth, kernel_size, padding=kernel_size // 2)
            if mode == "conv"
            else nn.Identity()
        )
        rows = cols = torch.empty(0)
        if mode == "backproject":
            if geometry is None or fov_mm is None:
                raise ConfigError("Lifting(mode='backproject') needs the DRR geometry and the field of view (fov_mm)")
            from duolift_bundle.transforms.drr import lift_matrices  # the projector's own geometry

            rows, cols = lift_matrices(geometry, ("frontal", "lateral")[view], depth, float(fov_mm), depth)
        self.register_buffer("rows", rows, persistent=False)  # (K, n, h): B_rows of lift_matrices
        self.register_buffer("cols", cols, persistent=False)  # (K, n, w): B_cols

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "repeat":
            return lift_repeat(x, self.view, self.depth)
        if self.mode == "backproject":
            if self.flip:  # the frontal input was mirrored by the projector (X2CT's PA flip)
                x = torch.flip(x, dims=[3])
            rows = self.rows.to(x.dtype)
            cols = self.cols.to(x.dtype)
            # plane k = B_rows[k] @ X @ B_cols[k]^T, for every plane k along the view's rays
            t = torch.einsum("kri,bcij->bckrj", rows, x)
            if self.view == 0:
                return torch.einsum("bckrj,kqj->bcrkq", t, cols)  # (B, C, D, H=K, W)
            return torch.einsum("bckrj,kqj->bcrqk", t, cols)  # (B, C, D, H, W=K)
        b, _, h, w = x.shape
        y = self.conv(x).reshape(b, self.channels, self.depth, h, w)
        if self.view == 0:
            return y.permute(0, 1, 3, 2, 4)  # (B, C, h, depth, w)
        return y.permute(0, 1, 3, 4, 2)  # (B, C, h, w, depth)


def check_xray_input(x: torch.Tensor, views: int, image_size: int) -> None:
    """Raise ``ValueError`` unless ``x`` is a finite ``(B, views, image_size, image_size)`` tensor.

    Never broadcast silently: a wrong view count, rank or size names the expected and received
    shapes. The finiteness check is skipped on the ``meta`` device (no values there).
    """
    shape = list(x.shape)
    if x.dim() != 4:
        raise ShapeError(
            f"expected X-rays of shape (B, {views}, {image_size}, {image_size}), got a {x.dim()}D tensor of shape {shape}"
        )
    if x.shape[1] != views:
        raise ShapeError(
            f"expected {views} view(s) in dim 1, i.e. shape (B, {views}, {image_size}, {image_size}), got shape {shape}"
        )
    if x.shape[2] != image_size or x.shape[3] != image_size:
        raise ShapeError(
            f"expected square {image_size}x{image_size} X-rays, i.e. shape (B, {views}, {image_size}, "
            f"{image_size}), got shape {shape}"
        )
    if x.device.type != "meta":
        if not bool(torch.isfinite(x).all()):
            raise ShapeError(f"X-ray input of shape {shape} contains NaN or Inf values")
