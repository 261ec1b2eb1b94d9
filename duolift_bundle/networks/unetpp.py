"""U-Net++ (Zhou et al. 2018) with deep supervision, run so that its input can be freed early."""

from __future__ import annotations

import torch
from monai.networks.nets import BasicUNetPlusPlus

__all__ = ["UNetPlusPlusHeads"]


class UNetPlusPlusHeads(BasicUNetPlusPlus):
    """MONAI's :class:`~monai.networks.nets.BasicUNetPlusPlus` (deep supervision on) with a
    :meth:`forward_heads` that takes its input inside a list and drops it after the first block.

    MONAI's ``forward(x)`` keeps ``x`` referenced until it returns. In DuoLift that input is F_u
    (224 channels at D'^3: 1.9 GB at 128^3 in fp32) and the peak of U-Net++ comes late, at the
    last nested decoder x_0_4, so holding F_u there costs 1.9 GB of peak memory for nothing.
    :meth:`forward_heads` computes the same graph (same modules, same order as MONAI's forward,
    so weights and outputs are identical) but pops the input from the list it is given.

    Without autograd (inference), the full-resolution skips x_0_0..x_0_3 are also written into
    one preallocated tensor as they are produced, so the dense skip concatenations
    ``[x_0_0, .., x_0_k]`` are slices of it instead of new copies (another 1 GB at 128^3).
    With autograd the plain concatenations are kept, since the skips stay alive for backward.
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

    def forward_heads(self, inputs: list[torch.Tensor], average: bool = False) -> list[torch.Tensor]:
        """``[x (B, C_in, D, H, W)]`` -> the four heads ``[x_0_1, .., x_0_4]`` (each
        ``(B, out_channels, D, H, W)``), or with ``average`` the one-element list of their mean
        (accumulated as the heads appear). ``inputs`` is emptied. D, H, W divisible by 16."""
        x_0_0 = self.conv_0_0(inputs.pop())
        c = x_0_0.shape[1]
        use_buffer = not torch.is_grad_enabled()
        skips = torch.empty(0, dtype=x_0_0.dtype, device=x_0_0.device)
        if use_buffer:
            fmt = (
                torch.channels_last_3d
                if x_0_0.is_contiguous(memory_format=torch.channels_last_3d)
                else torch.contiguous_format
            )
            shape = [x_0_0.shape[0], 4 * c, x_0_0.shape[2], x_0_0.shape[3], x_0_0.shape[4]]
            skips = torch.empty(shape, dtype=x_0_0.dtype, device=x_0_0.device, memory_format=fmt)
            skips[:, :c] = x_0_0
            x_0_0 = skips[:, :c]  # from here on a view: the separate copy is freed
        x_1_0 = self.conv_1_0(x_0_0)
        x_0_1 = self.upcat_0_1(x_1_0, x_0_0)
        heads = [self.final_conv_0_1(x_0_1)]

        x_2_0 = self.conv_2_0(x_1_0)
        x_1_1 = self.upcat_1_1(x_2_0, x_1_0)
        if use_buffer:
            skips[:, c : 2 * c] = x_0_1
            x_0_1 = skips[:, c : 2 * c]
            x_0_2 = self.upcat_0_2(x_1_1, skips[:, : 2 * c])
        else:
            x_0_2 = self.upcat_0_2(x_1_1, torch.cat([x_0_0, x_0_1], dim=1))
        heads = self._add_head(heads, self.final_conv_0_2(x_0_2), average)

        x_3_0 = self.conv_3_0(x_2_0)
        x_2_1 = self.upcat_2_1(x_3_0, x_2_0)
        x_1_2 = self.upcat_1_2(x_2_1, torch.cat([x_1_0, x_1_1], dim=1))
        if use_buffer:
            skips[:, 2 * c : 3 * c] = x_0_2
            x_0_2 = skips[:, 2 * c : 3 * c]
            x_0_3 = self.upcat_0_3(x_1_2, skips[:, : 3 * c])
        else:
            x_0_3 = self.upcat_0_3(x_1_2, torch.cat([x_0_0, x_0_1, x_0_2], dim=1))
        heads = self._add_head(heads, self.final_conv_0_3(x_0_3), average)

        x_4_0 = self.conv_4_0(x_3_0)
        x_3_1 = self.upcat_3_1(x_4_0, x_3_0)
        x_2_2 = self.upcat_2_2(x_3_1, torch.cat([x_2_0, x_2_1], dim=1))
        x_1_3 = self.upcat_1_3(x_2_2, torch.cat([x_1_0, x_1_1, x_1_2], dim=1))
        if use_buffer:
            skips[:, 3 * c :] = x_0_3
            x_0_3 = skips[:, 3 * c :]
            x_0_4 = self.upcat_0_4(x_1_3, skips)
        else:
            x_0_4 = self.upcat_0_4(x_1_3, torch.cat([x_0_0, x_0_1, x_0_2, x_0_3], dim=1))
        heads = self._add_head(heads, self.final_conv_0_4(x_0_4), average)
        if average:
            return [heads[0] / 4.0]
        return heads

    @staticmethod
    def _add_head(heads: list[torch.Tensor], head: torch.Tensor, average: bool) -> list[torch.Tensor]:
        if average:
            return [heads[0] + head]
        heads.append(head)
        return heads
