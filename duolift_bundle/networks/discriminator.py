"""The 3D discriminator of DuoLift-GAN (paper: "Discriminator Architecture").

The paper: "four convolutional layers, each with a 4x4x4 kernel, a stride of one, and padding
of two, along with average pooling using a 3x3x3 kernel, a stride of two, and padding of one",
encoding a volume "into a 5x5x5 vector" of real / fake logits.

A 4^3 convolution with stride 1 and padding 2 grows an edge by one (n -> n + 1) and the pooling
maps n -> floor((n - 1) / 2) + 1. Four convolution + pooling pairs take 128 to
129 -> 65 -> 66 -> 33 -> 34 -> 17 -> 18 -> 9, i.e. a 9^3 map, not 5^3. The minimal addition
that reaches 5^3 is one more average pooling (3/2/1) after the last convolution (9 -> 5). It adds
no parameters and, placed after the logits layer, averages neighbouring logits (a larger
receptive field per output) instead of blurring the input, which would hide the fine texture
the discriminator is there to judge. For 64^3 inputs the same stack gives 3^3, for 256^3 9^3.

Choices where the paper is silent: channels 64 -> 128 -> 256 -> 1 (the last convolution gives
the logits), instance norm (not on the first layer, as in pix2pix / X2CT-GAN's PatchGAN) and
LeakyReLU(0.2) between layers, no sigmoid (losses take logits; see ``duolift_bundle/losses.py``).

Options:
- ``condition_views`` > 0: X2CT-style conditioning; the X-rays ``(B, V, H, W)`` are lifted to
  the volume grid by repetition along their ray directions (resized to D' when needed) and
  concatenated to the volume as channels (in_channels = 1 + V).
- ``masked_input``: Table 5 "Ablation 3"; the volume (real or fake) is multiplied by the lung
  mask before it is judged, so ``forward`` requires the mask.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from duolift_bundle.errors import ConfigError, ShapeError
from duolift_bundle.networks.blocks import lift_repeat

__all__ = ["DuoLiftDiscriminator", "discriminator_output_size"]


def discriminator_output_size(size: int, n_layers: int = 4, extra_pool: bool = True) -> int:
    """Edge of the logit map for an input edge ``size`` (128 -> 5)."""
    for _ in range(n_layers):
        size = (size + 1 - 1) // 2 + 1  # conv 4/1/2: n -> n + 1; pool 3/2/1: n -> (n - 1) // 2 + 1
    if extra_pool:
        size = (size - 1) // 2 + 1
    return size


class DuoLiftDiscriminator(nn.Module):
    """3D discriminator: a volume ``(B, 1, D, H, W)`` -> logits ``(B, 1, d, d, d)`` (5^3 at 128^3).

    Args:
        channels: output channels of the first three convolutions (the fourth gives 1 logit).
        condition_views: 0 for an unconditional D, 1 or 2 to concatenate lifted X-rays.
        masked_input: multiply the volume by the lung mask before judging it (Ablation 3).
        width: multiplier of ``channels`` (reduced-width models for tests and demos).
    """

    def __init__(
        self,
        channels: Sequence[int] = (64, 128, 256),
        condition_views: int = 0,
        masked_input: bool = False,
        width: float = 1.0,
    ) -> None:
        super().__init__()
        if len(channels) != 3:
            raise ConfigError(f"channels needs three values (the fourth convolution gives the logits), got {channels}")
        if condition_views not in (0, 1, 2):
            raise ConfigError(f"condition_views must be 0, 1 or 2, got {condition_views}")
        chans = [max(2, int(round(c * width))) for c in channels]
        self.condition_views = condition_views
        self.masked_input = masked_input
        in_ch = 1 + condition_views
        layers: list[nn.Module] = []
        for i, out_ch in enumerate(chans):
            layers.append(nn.Conv3d(in_ch, out_ch, kernel_size=4, stride=1, padding=2))
            if i > 0:
                layers.append(nn.InstanceNorm3d(out_ch, affine=True))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            layers.append(nn.AvgPool3d(kernel_size=3, stride=2, padding=1))
            in_ch = out_ch
        layers.append(nn.Conv3d(in_ch, 1, kernel_size=4, stride=1, padding=2))
        layers.append(nn.AvgPool3d(kernel_size=3, stride=2, padding=1))
        layers.append(nn.AvgPool3d(kernel_size=3, stride=2, padding=1))  # the added pooling (see module doc)
        self.model = nn.Sequential(*layers)

    def forward(
        self, volume: torch.Tensor, xray: Optional[torch.Tensor] = None, mask: Optional[torch.Tensor] = None
    ) -> torch.Tensor:
        """Logits of ``volume`` ``(B, 1, D, H, W)``; ``xray`` ``(B, V, H, W)`` when conditioned,
        ``mask`` ``(B, 1, D, H, W)`` when ``masked_input``."""
        if volume.dim() != 5 or volume.shape[1] != 1:
            raise ShapeError(f"expected a volume of shape (B, 1, D, H, W), got shape {list(volume.shape)}")
        if self.masked_input:
            if mask is None:
                raise ShapeError("this discriminator has masked_input=True: pass the lung mask (B, 1, D, H, W)")
            if mask.shape != volume.shape:
                raise ShapeError(f"mask shape {list(mask.shape)} differs from volume shape {list(volume.shape)}")
            volume = volume * mask.to(volume.dtype)
        if self.condition_views > 0:
            if xray is None:
                raise ConfigError(
                    f"this discriminator is conditioned on {self.condition_views} X-ray view(s): pass xray (B, V, H, W)"
                )
            if xray.dim() != 4 or xray.shape[1] != self.condition_views or xray.shape[0] != volume.shape[0]:
                raise ShapeError(
                    f"expected X-rays of shape ({volume.shape[0]}, {self.condition_views}, H, W), got shape {list(xray.shape)}"
                )
            d, h, w = volume.shape[2], volume.shape[3], volume.shape[4]
            if d != h or h != w:
                raise ShapeError(f"conditioning needs a cubic volume, got shape {list(volume.shape)}")
            if xray.shape[2] != d or xray.shape[3] != d:
                xray = F.interpolate(xray, size=(d, d), mode="bilinear", align_corners=False)
            lifted = [lift_repeat(xray[:, v : v + 1], v, d) for v in range(self.condition_views)]
            volume = torch.cat([volume] + lifted, dim=1)
        return self.model(volume)
