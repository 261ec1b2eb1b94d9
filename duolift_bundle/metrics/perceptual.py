"""LPIPS(vgg) of the paper's Tables 1-3, slice by slice, with offline-resolved VGG16 weights.

The ``lpips`` package (Zhang et al. 2018) ships its linear calibration layers but takes the VGG16
backbone from torchvision, which downloads ``vgg16-397923af.pth``. Here the backbone is built
without download (``pnet_rand=True``) and its convolutions are filled from the file that
:func:`duolift_bundle.metrics.weights.resolve_weights` finds (explicit path, ``$DUOLIFT_VGG16_WEIGHTS``,
the torch hub cache, or a download where allowed). Files holding either torchvision's whole
VGG16 ``state_dict`` or only its ``features.*`` entries are accepted.

A volume's LPIPS is the mean over its 2D slices along ``axes`` (default all three, like PSNR(2D)
and SSIM(2D)); each slice in [0, 1] is mapped to [-1, 1] and repeated to 3 channels, as LPIPS
expects of grey images.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
from duolift_bundle.errors import InputFileError, ShapeError
from duolift_bundle.metrics.image import _pair, slices
from duolift_bundle.metrics.weights import VGG16, resolve_weights

__all__ = ["SliceLPIPS", "load_vgg16_features"]


def load_vgg16_features(lpips_model: torch.nn.Module, path: str) -> None:
    """Copy torchvision VGG16 ``features.<i>.{weight,bias}`` into lpips' ``net.slice<k>.<i>``."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    features = {k[len("features.") :]: v for k, v in state.items() if k.startswith("features.")}
    if not features:
        raise InputFileError(f"{path}: no 'features.*' entries; expected torchvision's vgg16 state_dict")
    copied = 0
    for name, param in lpips_model.net.named_parameters():
        _slice, index, kind = name.split(".")  # e.g. slice1.0.weight
        key = f"{index}.{kind}"
        if key not in features or features[key].shape != param.shape:
            raise ShapeError(f"{path}: missing or mis-shaped VGG16 entry features.{key}")
        with torch.no_grad():
            param.copy_(features[key])
        copied += 1
    if copied != 26:  # 13 convolutions x (weight, bias)
        raise InputFileError(f"{path}: copied {copied} VGG16 tensors, expected 26")


class SliceLPIPS:
    """LPIPS(vgg) of two volumes, averaged over 2D slices.

    Args:
        vgg_weights: explicit path of the VGG16 weights (see module docstring).
        allow_download: let the resolver fetch ``vgg16-397923af.pth`` into the torch hub cache.
        axes: slice axes of the ``(D, H, W)`` volume.
        batch_size: slices per forward pass.
        device: where the network runs.
    """

    name = "LPIPS(vgg)"

    def __init__(
        self,
        vgg_weights: Optional[str] = None,
        allow_download: bool = False,
        axes: Sequence[int] = (0, 1, 2),
        batch_size: int = 32,
        device: str | torch.device = "cpu",
    ) -> None:
        import lpips

        self.weights = resolve_weights(VGG16, vgg_weights, allow_download)
        self.model = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
        load_vgg16_features(self.model, str(self.weights))
        self.model = self.model.to(device).eval()
        self.device = torch.device(device)
        self.axes = tuple(axes)
        self.batch_size = batch_size

    @torch.no_grad()
    def per_slice(self, pred, target, axis: int) -> torch.Tensor:
        """LPIPS of every slice along ``axis``, shape ``(N,)``."""
        p, t = _pair(pred, target)
        ps, ts = slices(p, axis).float(), slices(t, axis).float()
        out = []
        for i in range(0, ps.shape[0], self.batch_size):
            a = (ps[i : i + self.batch_size, None] * 2 - 1).repeat(1, 3, 1, 1).to(self.device)
            b = (ts[i : i + self.batch_size, None] * 2 - 1).repeat(1, 3, 1, 1).to(self.device)
            out.append(self.model(a, b).flatten().cpu())
        return torch.cat(out)

    def __call__(self, pred, target) -> float:
        return float(sum(float(self.per_slice(pred, target, a).mean()) for a in self.axes) / len(self.axes))
