"""U-Net++ (Zhou et al. 2018) with deep supervision, run so that its input can be freed early."""

from __future__ import annotations

from typing import Callable, List, NamedTuple, Union

import torch
import torch.nn.functional as F
from duolift_bundle.errors import ConfigError
from monai.networks.nets import BasicUNetPlusPlus

__all__ = ["UNetPlusPlusHeads", "InputPart"]


class InputPart(NamedTuple):
    """A block of the U-Net++ input's channels: where it starts (``offset``) and the tensor, or a
    function that makes it when it is needed (so that two large parts are never alive at once)."""

    offset: int
    value: Union[torch.Tensor, Callable[[], torch.Tensor]]


class UNetPlusPlusHeads(BasicUNetPlusPlus):
    """MONAI's :class:`~monai.networks.nets.BasicUNetPlusPlus` (deep supervision on) with a
    :meth:`forward_heads` that takes its input inside a list and drops it after the first block.

    MONAI's ``forward(x)`` keeps ``x`` referenced until it returns. In DuoLift that input is F_u
    (224 channels at D'^3: 1.9 GB at 128^3 in fp32) and the peak of U-Net++ comes late, at the
    last nested decoder x_0_4, so holding F_u there costs 1.9 GB of peak memory for nothing.
    :meth:`forward_heads` computes the same graph (same modules, same order as MONAI's forward,
    so weights and outputs are identical) but pops the input from the list it is given.

    Without autograd (inference) no full-resolution concatenation is made at all: the first
    convolution of each full-resolution block (x_0_0 on the input, x_0_k on
    ``[x_0_0, .., x_0_{k-1}, up(x_1_{k-1})]``) is the sum of its weight's channel blocks applied
    to each part in turn (:meth:`block_on_parts`). At 128^3 in fp32 that saves the 1.9 GB of F_u
    (given as :class:`InputPart` blocks, made one at a time) and the 1.3 GB concatenation of
    x_0_4 at the network's memory peak, for the same FLOPs. With autograd the plain
    concatenations are kept, since the skips stay alive for backward.
    """

    def __init__(self, spatial_dims: int, in_channels: int, out_channels: int, features, act, norm) -> None:
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            features=features,
            deep_supervision=True,
            act=act,
            norm=norm,
        )

    @staticmethod
    def block_on_parts(block: torch.nn.Module, parts: list[InputPart]) -> torch.Tensor:
        """MONAI ``TwoConv`` ``block`` on the channel concatenation of ``parts`` (any order;
        together they cover its input channels), without making it: the first convolution is
        summed over the parts' weight blocks. ``parts`` is emptied, each part freed after use.
        ``(B, C_part, D, H, W)`` parts -> ``(B, C_out, D, H, W)``."""
        conv = block.conv_0.conv
        if not isinstance(conv, torch.nn.Conv3d) or conv.padding_mode != "zeros" or conv.groups != 1:
            raise ConfigError("block_on_parts needs a TwoConv whose first layer is a zero-padded Conv3d")
        total, y = 0, None
        while parts:
            offset, value = parts.pop(0)
            part = value() if callable(value) else value
            del value
            width = part.shape[1]
            total += width
            weight = conv.weight[:, offset : offset + width]
            term = F.conv3d(part, weight, None, conv.stride, conv.padding, conv.dilation)
            del part
            y = term if y is None else y.add_(term)
            del term
        if y is None or total != conv.in_channels:
            raise ConfigError(f"the input parts have {total} channels; the block takes {conv.in_channels}")
        if conv.bias is not None:
            y = y.add_(conv.bias.view(1, -1, 1, 1, 1).to(y.dtype))
        return block.conv_1(block.conv_0.adn(y))

    def _full_resolution(self, k: int, skips: List[torch.Tensor], deeper: torch.Tensor) -> torch.Tensor:
        """x_0_k from ``skips = [x_0_0, .., x_0_{k-1}]`` and x_1_{k-1} (``deeper``), as MONAI's
        ``UpCat`` (``convs(cat([x_e, upsample(x)]))``; sizes divisible by 16 need no padding)."""
        if not torch.jit.is_scripting() and not torch.is_grad_enabled():
            return self._full_resolution_on_parts(k, skips, deeper)
        x_e = torch.cat(skips, dim=1) if len(skips) > 1 else skips[0]
        if k == 1:
            return self.upcat_0_1(deeper, x_e)
        if k == 2:
            return self.upcat_0_2(deeper, x_e)
        if k == 3:
            return self.upcat_0_3(deeper, x_e)
        return self.upcat_0_4(deeper, x_e)

    @torch.jit.unused
    def _full_resolution_on_parts(self, k: int, skips: List[torch.Tensor], deeper: torch.Tensor) -> torch.Tensor:
        upcat = getattr(self, f"upcat_0_{k}")
        parts, offset = [], 0
        for skip in skips:
            parts.append(InputPart(offset, skip))
            offset += skip.shape[1]
        parts.append(InputPart(offset, lambda: upcat.upsample(deeper)))
        return self.block_on_parts(upcat.convs, parts)

    def forward_heads(self, inputs: List[torch.Tensor], average: bool = False) -> List[torch.Tensor]:
        """``[x (B, C_in, D, H, W)]`` -> the four heads ``[x_0_1, .., x_0_4]`` (each
        ``(B, out_channels, D, H, W)``), or with ``average`` the one-element list of their mean
        (accumulated as the heads appear). ``inputs`` is emptied. D, H, W divisible by 16."""
        return self._nested(self.conv_0_0(inputs.pop()), average)

    @torch.jit.unused
    def forward_heads_on_parts(self, parts: list[InputPart], average: bool = False) -> List[torch.Tensor]:
        """:meth:`forward_heads` of the input given as :class:`InputPart` blocks, without autograd
        (``parts`` is emptied)."""
        if torch.is_grad_enabled():
            raise ConfigError("U-Net++ input parts are for inference (no autograd)")
        return self._nested(self.block_on_parts(self.conv_0_0, parts), average)

    def _nested(self, x_0_0: torch.Tensor, average: bool) -> List[torch.Tensor]:
        """The nested U-Net++ from x_0_0 on, in MONAI's order."""
        x_1_0 = self.conv_1_0(x_0_0)
        x_0_1 = self._full_resolution(1, [x_0_0], x_1_0)
        heads = [self.final_conv_0_1(x_0_1)]

        x_2_0 = self.conv_2_0(x_1_0)
        x_1_1 = self.upcat_1_1(x_2_0, x_1_0)
        x_0_2 = self._full_resolution(2, [x_0_0, x_0_1], x_1_1)
        heads = self._add_head(heads, self.final_conv_0_2(x_0_2), average)

        x_3_0 = self.conv_3_0(x_2_0)
        x_2_1 = self.upcat_2_1(x_3_0, x_2_0)
        x_1_2 = self.upcat_1_2(x_2_1, torch.cat([x_1_0, x_1_1], dim=1))
        x_0_3 = self._full_resolution(3, [x_0_0, x_0_1, x_0_2], x_1_2)
        heads = self._add_head(heads, self.final_conv_0_3(x_0_3), average)

        x_4_0 = self.conv_4_0(x_3_0)
        x_3_1 = self.upcat_3_1(x_4_0, x_3_0)
        x_2_2 = self.upcat_2_2(x_3_1, torch.cat([x_2_0, x_2_1], dim=1))
        x_1_3 = self.upcat_1_3(x_2_2, torch.cat([x_1_0, x_1_1, x_1_2], dim=1))
        x_0_4 = self._full_resolution(4, [x_0_0, x_0_1, x_0_2, x_0_3], x_1_3)
        heads = self._add_head(heads, self.final_conv_0_4(x_0_4), average)
        if average:
            return [heads[0] / 4.0]
        return heads

    @staticmethod
    def _add_head(heads: List[torch.Tensor], head: torch.Tensor, average: bool) -> List[torch.Tensor]:
        if average:
            return [heads[0] + head]
        heads.append(head)
        return heads
