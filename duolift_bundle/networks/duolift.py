"""DuoLiftGenerator: the generator of DuoLift-GAN / DuoLift-CNN (paper: "Generator Architecture").

Data flow for the paper configuration (double view, 128x128 X-rays, D' = H' = W' = 128)::

    x (B, 2, 128, 128) = [I_f, I_s]
    Branch 1  I_f, I_s --ResNet-34--> F^2D_f, F^2D_s (B, 512, 32, 32)
              --Lifting (repeat D'/4 = 32x along FR / LA)--> F^3D_f, F^3D_s (B, 512, 32^3)
              --concat--> F_B (B, 1024, 32^3)
              --ResNet block--> f_u21 (B, 256, 32^3)  --Upsample Type 2--> (B, 256, 64^3)
              --ResNet block--> f_u22 (B, 128, 64^3)  --Upsample Type 2--> (B, 128, 128^3)
              --ResNet block--> f_u23 (B, 64, 128^3)
              f_u21 --Upsample Type 1 (x4)--> f_u11 (B, 64, 128^3)
              f_u22 --Upsample Type 1 (x2)--> f_u12 (B, 64, 128^3)
    Branch 2  I_f, I_s --Lifting (repeat D' = 128x)--> I^3D_f, I^3D_s (B, 1, 128^3) each
              --concat, ResNet block--> F_o (B, 32, 128^3)
    F_u = [f_u11, f_u12, f_u23, F_o] (B, 224, 128^3) --Dropout(0.25)--> U-Net++ (4 heads)
        --mean of heads--> U-Net --sigmoid--> R_v (B, 1, 128^3)

Choices where the paper is silent (and why):

- The paper says each of the three ResNet blocks is "followed by an Upsample Type 2 block" but
  also that the third block's output f_u23 already lies at D'. A third 2x upsampling would leave
  the output grid, so only the first two ResNet blocks are followed by Upsample Type 2.
- Upsample Type 1 / Type 2 are given only as figure boxes: see :mod:`.blocks` for the choices.
- One ResNet-34 encoder per view (``share_encoder=False``), as X2CT-GAN encodes each view with
  its own encoder: frontal and lateral radiographs have different content.
- U-Net++ is MONAI's :class:`~monai.networks.nets.BasicUNetPlusPlus` (via
  :class:`~.unetpp.UNetPlusPlusHeads`, which frees F_u early and in inference never concatenates it; four down-sampling
  encoder levels, four nested decoder columns, dense skips, deep supervision). Its four heads
  (x_0_1..x_0_4, ``unetpp_out_channels`` feature channels each) are averaged into the U-Net's
  input: averaging all deep-supervision heads is the "accurate mode" of Zhou et al. (2018), and
  it gives every head a path to the loss of the final output. For the auxiliary deep-supervision
  losses, each head is also mapped by one shared 1x1x1 convolution and a sigmoid to a volume
  (:meth:`DuoLiftGenerator.forward_with_aux`).
- The U-Net is MONAI's :class:`~monai.networks.nets.BasicUNet`; a sigmoid maps its output to
  [0, 1], the range of the target volumes (data contract in ``../shared/DESIGN.md``).
- When the output grid is not 4x the encoder grid (e.g. 256^3 from 128^2 X-rays), F^2D is
  resized bilinearly to D'/4 before lifting, and the X-rays to D' before branch 2.

Ablations (Table 4): ``lift="conv"`` replaces repetition by a 2D convolution in both branches
(:class:`~.blocks.Lifting`); ``dual_branch=False`` drops branch 2 (F_u then has 192 channels).

Geometry (not in the paper): ``lift="backproject"`` places every lifted map (F^2D of both views
in branch 1, the X-rays in branch 2) along the rays of the DRR geometry of ``protocol`` instead of
repeating it, so that a feature lands where the projector took it from.
"""

from __future__ import annotations

import logging
from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from duolift_bundle.constants import view_names
from duolift_bundle.errors import ConfigError
from duolift_bundle.geometry import Protocol
from duolift_bundle.networks.blocks import (
    ACT_3D,
    LIFT_MODES,
    NORM_3D,
    Lifting,
    ResBlock3D,
    ResNet34Encoder2D,
    UpsampleType1,
    UpsampleType2,
    check_xray_input,
)
from duolift_bundle.networks.unetpp import InputPart, UNetPlusPlusHeads
from monai.networks.nets import BasicUNet

__all__ = ["DuoLiftGenerator", "WithAuxiliaryOutputs", "scale_width", "PAPER_WIDTHS"]

logger = logging.getLogger(__name__)

#: The paper's channel widths (Fig. 1 and "Generator Architecture"); U-Net++ / U-Net use MONAI's
#: default 3D features, which the paper does not state.
PAPER_WIDTHS: dict[str, tuple[int, ...]] = {
    "encoder_channels": (64, 128, 256, 512),
    "branch1_channels": (256, 128, 64),
    "fuse_channels": (64,),
    "image_branch_channels": (32,),
    "unetpp_features": (32, 32, 64, 128, 256, 32),
    "unetpp_out_channels": (32,),
    "unet_features": (32, 32, 64, 128, 256, 32),
}


def scale_width(channels: Sequence[int], width: float, minimum: int = 2) -> tuple[int, ...]:
    """Scale channel counts by ``width`` (rounded, at least ``minimum``): reduced-width models."""
    return tuple(max(minimum, int(round(c * width))) for c in channels)


class DuoLiftGenerator(nn.Module):
    """DuoLift generator: one or two X-rays ``(B, V, H, W)`` -> a CT volume ``(B, 1, D', D', D')``.

    Args:
        views: 1 (frontal only, single view) or 2 (frontal + lateral, double view).
        image_size: H = W of the input X-rays; must be divisible by 4.
        volume_size: D' = H' = W' of the output volume (64, 128, 256, ...); divisible by 16.
        width: multiplier of every default channel count (1.0 = the paper's widths); explicit
            channel arguments below are used as given.
        encoder_channels, encoder_blocks: ResNet-34 stages (channels[-1] is F^2D's 512).
        branch1_channels: channels of f_u21, f_u22, f_u23 (256, 128, 64).
        fuse_channels: channels of f_u11 and f_u12 (64).
        image_branch_channels: channels of F_o (32).
        unetpp_features, unet_features: MONAI ``features`` of the U-Net++ and the U-Net.
        unetpp_out_channels: channels of each U-Net++ head (the U-Net's input channels).
        dropout: dropout probability on F_u (0.25).
        lift: "repeat" (paper), "conv" (Table 4 ablation) or "backproject" (along the DRR rays of
            ``protocol``).
        dual_branch: False drops branch 2 (Table 4 ablation).
        share_encoder: one ResNet-34 for both views instead of one per view.
        channels_last: keep 3D weights and feature maps in ``torch.channels_last_3d`` layout.
            On CPU, oneDNN then convolves without copying each input into its blocked layout:
            at 128^3 this removes a 1.9 GB copy of F_u and runs the 3D convolutions ~25% faster
            (``scripts/benchmark.py``). Values are identical; only strides differ.
        protocol: the :class:`~duolift_bundle.geometry.Protocol` whose DRR geometry and field of
            view the ``backproject`` lift follows (X2CT's by default); unused by the other lifts.

    Forward: ``(B, V, image_size, image_size)`` in [0, 1] -> ``(B, 1, D', D', D')`` in [0, 1].
    """

    def __init__(
        self,
        views: int = 2,
        image_size: int = 128,
        volume_size: int = 128,
        width: float = 1.0,
        encoder_channels: Optional[Sequence[int]] = None,
        encoder_blocks: Sequence[int] = (3, 4, 6, 3),
        branch1_channels: Optional[Sequence[int]] = None,
        fuse_channels: Optional[int] = None,
        image_branch_channels: Optional[int] = None,
        unetpp_features: Optional[Sequence[int]] = None,
        unetpp_out_channels: Optional[int] = None,
        unet_features: Optional[Sequence[int]] = None,
        dropout: float = 0.25,
        lift: str = "repeat",
        dual_branch: bool = True,
        share_encoder: bool = False,
        channels_last: bool = True,
        protocol: Optional[Protocol] = None,
    ) -> None:
        super().__init__()
        view_names(views)
        if image_size <= 0 or image_size % 4:
            raise ConfigError(f"image_size must be a positive multiple of 4, got {image_size}")
        if volume_size <= 0 or volume_size % 16:
            raise ConfigError(
                f"volume_size must be a positive multiple of 16 (U-Net++ has four 2x poolings), got {volume_size}"
            )
        if lift not in LIFT_MODES:
            raise ConfigError(f"lift must be one of {LIFT_MODES}, got {lift!r}")
        if not 0.0 <= dropout < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {dropout}")

        def pick(value, key: str) -> tuple[int, ...]:
            if value is None:
                return scale_width(PAPER_WIDTHS[key], width)
            return tuple(int(v) for v in (value if isinstance(value, Sequence) else (value,)))

        enc = pick(encoder_channels, "encoder_channels")
        b1 = pick(branch1_channels, "branch1_channels")
        fuse = pick(fuse_channels, "fuse_channels")[0]
        img_ch = pick(image_branch_channels, "image_branch_channels")[0]
        upp = pick(unetpp_features, "unetpp_features")
        upp_out = pick(unetpp_out_channels, "unetpp_out_channels")[0]
        unet = pick(unet_features, "unet_features")
        if len(b1) != 3:
            raise ConfigError(f"branch1_channels needs three values (f_u21, f_u22, f_u23), got {b1}")

        self.views = views
        self.image_size = image_size
        self.volume_size = volume_size
        self.feature_size = volume_size // 4
        self.lift = lift
        self.dual_branch = dual_branch
        self.share_encoder = share_encoder

        # Branch 1: 2D encoders and feature lifting.
        n_enc = 1 if share_encoder else views
        self.encoders = nn.ModuleList([ResNet34Encoder2D(1, enc, tuple(encoder_blocks)) for _ in range(n_enc)])
        protocol = protocol or Protocol()
        rays = {
            "geometry": protocol.drr.geometry,
            "fov_mm": protocol.ct.fov_mm,
            "flip_frontal": protocol.drr.flip_frontal,
        }
        self.feature_lifting = nn.ModuleList(
            [Lifting(enc[-1], self.feature_size, v, mode=lift, kernel_size=1, **rays) for v in range(views)]
        )
        f_b = enc[-1] * views
        self.resblock1 = ResBlock3D(f_b, b1[0])
        self.up2_1 = UpsampleType2(b1[0])
        self.resblock2 = ResBlock3D(b1[0], b1[1])
        self.up2_2 = UpsampleType2(b1[1])
        self.resblock3 = ResBlock3D(b1[1], b1[2])
        self.up1_1 = UpsampleType1(b1[0], fuse, 4)
        self.up1_2 = UpsampleType1(b1[1], fuse, 2)

        # Branch 2: image lifting and one ResNet block.
        self.image_lifting = nn.ModuleList(
            [Lifting(1, volume_size, v, mode=lift, kernel_size=3, **rays) for v in range(views)] if dual_branch else []
        )
        self.image_block = ResBlock3D(views, img_ch) if dual_branch else nn.Identity()

        # Reconstruction: Dropout, U-Net++ with deep supervision, U-Net.
        self.fuse_channels = fuse
        self.fu_channels = 2 * fuse + b1[2] + (img_ch if dual_branch else 0)
        self.dropout = nn.Dropout(dropout)
        self.unetpp = UNetPlusPlusHeads(3, self.fu_channels, upp_out, upp, act=ACT_3D, norm=NORM_3D)
        self.aux_head = nn.Conv3d(upp_out, 1, kernel_size=1)
        self.unet = BasicUNet(
            spatial_dims=3, in_channels=upp_out, out_channels=1, features=unet, act=ACT_3D, norm=NORM_3D
        )
        self.channels_last = channels_last
        if channels_last:
            for module in self.modules():
                if isinstance(module, (nn.Conv3d, nn.ConvTranspose3d)):
                    module.weight.data = module.weight.data.contiguous(memory_format=torch.channels_last_3d)
        # a word before a forward pass that may take a minute on a CPU (verify_net_in_out at 128^3)
        logger.info(
            "DuoLift generator: %d view(s) %d^2 -> %d^3 volume, width x %g, %.2f M parameters",
            views, image_size, volume_size, width, sum(p.numel() for p in self.parameters()) / 1e6,
        )  # fmt: skip

    def _layout(self, t: torch.Tensor) -> torch.Tensor:
        """Put a 5D feature map into the network's memory layout."""
        if self.channels_last:
            return t.contiguous(memory_format=torch.channels_last_3d)
        return t

    def _encode(self, x: torch.Tensor, view: int) -> torch.Tensor:
        """``(B, V, H, W)`` -> F^2D of one view ``(B, C, D'/4, D'/4)``."""
        image = x[:, view : view + 1]
        feats = torch.empty(0, dtype=x.dtype, device=x.device)
        for i, encoder in enumerate(self.encoders):
            if i == (0 if self.share_encoder else view):
                feats = encoder(image)
        if feats.shape[-1] != self.feature_size:
            feats = F.interpolate(
                feats, size=(self.feature_size, self.feature_size), mode="bilinear", align_corners=False
            )
        return feats

    def _branch1(self, x: torch.Tensor, record: Optional[dict[str, torch.Tensor]]) -> list[torch.Tensor]:
        """Branch 1 up to the ResNet blocks: X-rays -> [f_u21, f_u22, f_u23] at D'/4, D'/2, D'."""
        lifted: list[torch.Tensor] = []
        for v, lifting in enumerate(self.feature_lifting):
            f2d = self._encode(x, v)
            f3d = lifting(f2d)
            if record is not None:
                record[f"F2D_{v}"] = f2d
                record[f"F3D_{v}"] = f3d
            lifted.append(f3d)
        f_b = self._layout(torch.cat(lifted, dim=1))
        f_u21 = self.resblock1(f_b)
        f_u22 = self.resblock2(self.up2_1(f_u21))
        f_u23 = self.resblock3(self.up2_2(f_u22))
        if record is not None:
            record["F_B"] = f_b
            record["f_u21"] = f_u21
            record["f_u22"] = f_u22
            record["f_u23"] = f_u23
        return [f_u21, f_u22, f_u23]

    def _branch2(self, x: torch.Tensor, record: Optional[dict[str, torch.Tensor]]) -> torch.Tensor:
        """Branch 2: X-rays -> F_o ``(B, 32, D', D', D')``."""
        images = x
        if self.image_size != self.volume_size:
            images = F.interpolate(x, size=(self.volume_size, self.volume_size), mode="bilinear", align_corners=False)
        i3d: list[torch.Tensor] = []
        for v, image_lifting in enumerate(self.image_lifting):
            i3d.append(image_lifting(images[:, v : v + 1]))
        f_o = self.image_block(self._layout(torch.cat(i3d, dim=1)))
        if record is not None:
            for v in range(len(i3d)):
                record[f"I3D_{v}"] = i3d[v]
            record["F_o"] = f_o
        return f_o

    def _fused_features(self, x: torch.Tensor, record: Optional[dict[str, torch.Tensor]]) -> torch.Tensor:
        """F_u = [f_u11, f_u12, f_u23, F_o] ``(B, 224, D', D', D')`` (192 channels without branch 2)."""
        f_u21, f_u22, f_u23 = self._branch1(x, record)
        parts = [self.up1_1(f_u21), self.up1_2(f_u22), f_u23]
        if record is not None:
            record["f_u11"] = parts[0]
            record["f_u12"] = parts[1]
        if self.dual_branch:
            parts.append(self._branch2(x, record))
        return torch.cat(parts, dim=1)

    @torch.jit.unused
    def _fused_parts(self, x: torch.Tensor) -> list[InputPart]:
        """F_u as U-Net++ input parts, without autograd: f_u23 first (it exists already), then
        f_u11, f_u12 and F_o, each made only when U-Net++'s first convolution reaches it, so F_u
        (1.9 GB at 128^3 in float32) and two of its parts are never alive at once."""
        f_u21, f_u22, f_u23 = self._branch1(x, None)
        c1 = self.fuse_channels
        parts = [
            InputPart(2 * c1, f_u23),
            InputPart(0, lambda: self.up1_1(f_u21)),
            InputPart(c1, lambda: self.up1_2(f_u22)),
        ]
        if self.dual_branch:
            parts.append(InputPart(2 * c1 + f_u23.shape[1], lambda: self._branch2(x, None)))
        return parts

    def _forward(
        self, x: torch.Tensor, record: Optional[dict[str, torch.Tensor]]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        check_xray_input(x, self.views, self.image_size)
        if record is not None:
            f_u = self._fused_features(x, record)
            record["F_u"] = f_u
            heads = self.unetpp.forward_heads([self.dropout(f_u)], False)
        elif torch.jit.is_scripting() or torch.is_grad_enabled() or self.training:  # dropout on all of F_u
            heads = self.unetpp.forward_heads([self.dropout(self._fused_features(x, None))], not self.training)
        else:
            heads = self.unetpp.forward_heads_on_parts(self._fused_parts(x), True)
        fused = heads[0]
        for h in heads[1:]:
            fused = fused + h
        r_v = torch.sigmoid(self.unet(fused / len(heads)) if len(heads) > 1 else self.unet(fused))
        aux: list[torch.Tensor] = []
        if self.training:
            aux = [torch.sigmoid(self.aux_head(h)) for h in heads]
        if record is not None:
            for i in range(len(heads)):
                record[f"head_{i + 1}"] = heads[i]
            record["R_v"] = r_v
        return r_v, aux

    def forward_with_aux(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Reconstruction and, in training mode, the four deep-supervision volumes.

        Returns:
            ``R_v`` ``(B, 1, D', D', D')`` and a list of four ``(B, 1, D', D', D')`` volumes from
            the U-Net++ heads x_0_1..x_0_4 (an empty list in eval mode).
        """
        return self._forward(x, None)

    @torch.jit.unused
    def intermediates(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Every named tensor of the paper's Fig. 1 (F2D_v, F3D_v, F_B, f_u21..f_u23, f_u11, f_u12,
        I3D_v, F_o, F_u, head_1..head_4, R_v); for shape tests on the ``meta`` device."""
        record: dict[str, torch.Tensor] = {}
        self._forward(x, record)
        return record

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, V, H, W)`` X-rays in [0, 1] -> ``(B, 1, D', D', D')`` volume in [0, 1]."""
        return self._forward(x, None)[0]


class WithAuxiliaryOutputs(nn.Module):
    """Training view of a generator: ``forward(x)`` returns ``(R_v, aux)``.

    ``aux`` holds the deep-supervision volumes of :meth:`DuoLiftGenerator.forward_with_aux`
    (empty for a generator without them, e.g. the X2CT baseline). Being a module, it can be
    wrapped by DistributedDataParallel, whose gradient reduction needs the forward to go through
    the wrapper; the generator itself keeps its one-tensor forward for inference and export.
    """

    wraps_generator = True

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        if hasattr(self.net, "forward_with_aux"):
            return self.net.forward_with_aux(x)
        return self.net(x), []
