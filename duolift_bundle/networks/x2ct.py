"""An X2CT-style baseline generator, reimplemented from the X2CT-GAN paper's description.

Ying et al., "X2CT-GAN: Reconstructing CT from Biplanar X-Rays with Generative Adversarial
Networks", CVPR 2019, Sec. 3.2 and Fig. 3. Written from the paper's text, not from its code
(GPL/LGPL). The pieces, as the paper names them:

- one 2D DenseNet encoder per view (dense blocks with down-sampling transitions);
- Connection-A: the deepest 2D feature map is flattened, passed through a fully-connected layer
  and reshaped into a small 3D feature cube (4^3), the bridge from 2D to 3D;
- Connection-B: every encoder level is mapped by a 1x1 2D convolution to the matching decoder
  width and expanded along the view's ray direction (repetition) into a 3D skip connection;
- one 3D decoder per view (transposed-convolution up-sampling plus 3D convolution, adding the
  view's skips), and Connection-C: a fusion decoder whose every level adds the average of the
  per-view decoder features at that level;
- the output is a 1x1x1 convolution; a sigmoid maps it to [0, 1] (the bundle's data contract;
  X2CT-GAN used a ReLU on a [0, 1] target).

Widths are smaller than X2CT-GAN's by default (its fully-connected bridge alone is tens of
millions of parameters); they are constructor arguments. Input and output follow the DuoLift
generator: ``(B, V, S, S) -> (B, 1, S, S, S)`` with S = ``image_size`` (a power of two >= 8).
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn
from duolift_bundle.constants import view_names
from duolift_bundle.errors import ConfigError
from duolift_bundle.networks.blocks import check_xray_input, lift_repeat

__all__ = ["DenseBlock2D", "X2CTGenerator"]


class DenseBlock2D(nn.Module):
    """A DenseNet block (Huang et al. 2017): each layer (norm, ReLU, 3x3 conv) adds ``growth``
    channels, concatenated to its input. ``(B, C, H, W) -> (B, C + layers * growth, H, W)``.

    Written here because MONAI's and torchvision's dense blocks are private API
    (``_DenseBlock``) whose signatures may change between releases.
    """

    def __init__(self, in_channels: int, growth: int, layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            [
                nn.Sequential(
                    nn.InstanceNorm2d(in_channels + i * growth, affine=True),
                    nn.ReLU(inplace=False),
                    nn.Conv2d(in_channels + i * growth, growth, 3, padding=1, bias=False),
                )
                for i in range(layers)
            ]
        )
        self.out_channels = in_channels + layers * growth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.cat([x, layer(x)], dim=1)
        return x


def _norm_act3d(channels: int) -> list[nn.Module]:
    return [nn.InstanceNorm3d(channels, affine=True), nn.ReLU(inplace=True)]


class _Encoder2D(nn.Module):
    """Per-view DenseNet encoder: ``(B, 1, S, S)`` -> feature maps at S, S/2, ..., 4."""

    def __init__(self, stem_channels: int, channels: Sequence[int], growth: int, layers: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(1, stem_channels, 3, padding=1, bias=False),
            nn.InstanceNorm2d(stem_channels, affine=True),
            nn.ReLU(inplace=True),
        )
        blocks = []
        in_ch = stem_channels
        for out_ch in channels:
            dense = DenseBlock2D(in_ch, growth, layers)
            blocks.append(
                nn.Sequential(
                    dense,
                    nn.InstanceNorm2d(dense.out_channels, affine=True),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(dense.out_channels, out_ch, 1, bias=False),
                    nn.AvgPool2d(2),
                )
            )
            in_ch = out_ch
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = [self.stem(x)]
        for block in self.blocks:
            feats.append(block(feats[-1]))
        return feats  # sizes S, S/2, ..., 4


class _UpBlock3D(nn.Module):
    """Decoder level: 2x transposed convolution, then a 3x3x3 convolution."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.up = nn.Sequential(nn.ConvTranspose3d(in_channels, out_channels, 2, stride=2), *_norm_act3d(out_channels))
        self.conv = nn.Sequential(nn.Conv3d(out_channels, out_channels, 3, padding=1), *_norm_act3d(out_channels))

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(self.up(x) + skip)


class _ViewPath(nn.Module):
    """One view: its 2D encoder, Connection-A, Connection-B skips and its 3D decoder."""

    def __init__(self, view: int, stem: int, enc: Sequence[int], dec: Sequence[int], growth: int, layers: int) -> None:
        super().__init__()
        self.view = view
        self.encoder = _Encoder2D(stem, enc, growth, layers)
        self.bottom = 4
        self.bridge_channels = dec[0]
        self.bridge = nn.Sequential(
            nn.Flatten(), nn.Linear(enc[-1] * self.bottom**2, dec[0] * self.bottom**3), nn.ReLU(inplace=True)
        )
        # Connection-B: one 1x1 2D projection per level, deepest (4x4) first, up to S x S.
        skip_in = [enc[-1 - i] for i in range(len(enc))] + [stem]
        self.bridge_skip = nn.Conv2d(skip_in[0], dec[0], 1)
        self.skips = nn.ModuleList([nn.Conv2d(skip_in[i + 1], dec[i + 1], 1) for i in range(len(dec) - 1)])
        self.decoder = nn.ModuleList([_UpBlock3D(dec[i], dec[i + 1]) for i in range(len(dec) - 1)])

    def forward(self, image: torch.Tensor) -> list[torch.Tensor]:
        """``(B, 1, S, S)`` -> decoder features at 4^3, 8^3, ..., S^3."""
        feats = self.encoder(image)[::-1]  # 4x4 first
        b = image.shape[0]
        x = self.bridge(feats[0]).reshape(b, self.bridge_channels, self.bottom, self.bottom, self.bottom)
        x = x + lift_repeat(self.bridge_skip(feats[0]), self.view, self.bottom)
        skips: list[torch.Tensor] = []
        for i, project in enumerate(self.skips):
            f = feats[i + 1]
            skips.append(lift_repeat(project(f), self.view, f.shape[-1]))
        outs = [x]
        for i, block in enumerate(self.decoder):
            x = block(x, skips[i])
            outs.append(x)
        return outs


class X2CTGenerator(nn.Module):
    """X2CT-style baseline generator: ``(B, V, S, S)`` X-rays -> ``(B, 1, S, S, S)`` volume.

    Args:
        views: 1 or 2.
        image_size: S, a power of two >= 8; the output volume is S^3 (X2CT-GAN: 128).
        stem_channels: channels of the full-resolution 2D stem.
        encoder_channels: output channels of the 2D levels S/2, ..., 4 (log2(S) - 2 values).
        decoder_channels: 3D decoder channels at 4^3, 8^3, ..., S^3 (log2(S) - 1 values).
        growth, dense_layers: DenseNet growth rate and layers per dense block.
    """

    def __init__(
        self,
        views: int = 2,
        image_size: int = 128,
        stem_channels: int = 16,
        encoder_channels: Sequence[int] = (32, 64, 128, 256, 256),
        decoder_channels: Sequence[int] = (256, 128, 64, 32, 16, 16),
        growth: int = 16,
        dense_layers: int = 3,
    ) -> None:
        super().__init__()
        view_names(views)
        levels = image_size.bit_length() - 1
        if image_size < 8 or 2**levels != image_size:
            raise ConfigError(f"image_size must be a power of two >= 8, got {image_size}")
        if len(encoder_channels) != levels - 2 or len(decoder_channels) != levels - 1:
            raise ConfigError(
                f"image_size {image_size} needs {levels - 2} encoder_channels (levels {image_size // 2}..4) and "
                f"{levels - 1} decoder_channels (levels 4..{image_size}); got {len(encoder_channels)} and {len(decoder_channels)}"
            )
        self.views = views
        self.image_size = image_size
        dec = list(decoder_channels)
        self.paths = nn.ModuleList(
            [_ViewPath(v, stem_channels, encoder_channels, dec, growth, dense_layers) for v in range(views)]
        )
        self.fusion = nn.ModuleList([_UpBlock3D(dec[i], dec[i + 1]) for i in range(len(dec) - 1)])
        self.head = nn.Conv3d(dec[-1], 1, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, V, S, S)`` in [0, 1] -> ``(B, 1, S, S, S)`` in [0, 1]."""
        check_xray_input(x, self.views, self.image_size)
        per_view: list[list[torch.Tensor]] = []
        for v, path in enumerate(self.paths):
            per_view.append(path(x[:, v : v + 1]))
        n = float(len(per_view))
        fused = per_view[0][0]
        for outs in per_view[1:]:
            fused = fused + outs[0]
        fused = fused / n
        for i, block in enumerate(self.fusion):
            mean_i = per_view[0][i + 1]
            for outs in per_view[1:]:
                mean_i = mean_i + outs[i + 1]
            fused = block(fused, mean_i / n)  # Connection-C: average of the views' decoders
        return torch.sigmoid(self.head(fused))
