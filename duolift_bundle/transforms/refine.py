"""Projection-consistent refinement: a reconstruction nudged so that its DRRs match the input views.

After the network, a few gradient steps on the volume ``v`` (``(1, 1, D, H, W)`` in [0, 1]) lower

    E(v) = mean_views || P(v) - x ||^2  +  refine_weight * || v - v_0 ||^2 / N_ratio

where ``P`` is the bundle's projector with the protocol's normalisation
(:class:`~duolift_bundle.transforms.drr.DRRProjector`, the same operator as the training DRRs and
the consistency report), ``x`` the input X-rays ``(V, S, S)`` as the network saw them (after the
contrast mapping of a real film), ``v_0`` the network's output and ``N_ratio`` the ratio of voxel
count to detector-pixel count (both terms are means, so ``refine_weight`` is scale-free). Adam
steps on ``v``, projected onto [0, 1] after each. The prior keeps the solution near the network
output: the X-rays fix only line integrals, and the volume's distribution along each ray comes
from the network.

A real film whose pixel size was estimated (no usable size in the file) is refined only when the
quality check trusts its placement: the lung fields found in the film overlap those of the
network's re-projection by at least ``trust_lung_dice`` in every view; otherwise the case is left
as the network made it and the reason is reported.

Adds ``"refinement"``: ``{"steps", "weight", "seconds", "<view>_psnr_before", "<view>_psnr_after"}``
or ``{"skipped": reason}`` (``steps=0`` adds nothing).
"""

from __future__ import annotations

import json
import time
from collections.abc import Hashable, Mapping
from typing import Any

import torch
from duolift_bundle.constants import PRED_KEY, XRAY_KEY, view_names
from duolift_bundle.errors import ConfigError
from duolift_bundle.geometry import Protocol
from duolift_bundle.imaging.radiograph_fields import mask_dice, radiograph_fields
from duolift_bundle.metrics.image import psnr_image
from duolift_bundle.transforms.drr import DRRProjector
from monai.data import MetaTensor
from monai.transforms import MapTransform

__all__ = ["refine_volume", "ProjectionRefined"]


def refine_volume(
    volume: torch.Tensor,
    xray: torch.Tensor,
    projector: DRRProjector,
    steps: int,
    weight: float,
    lr: float = 0.01,
) -> torch.Tensor:
    """Minimise E(v) of the module docstring by ``steps`` projected Adam steps.

    Args:
        volume: ``(B, 1, D, H, W)`` network output ``v_0`` in [0, 1].
        xray: ``(B, V, S, S)`` input views in [0, 1] (the projector's views, same order).
        projector: the DRR operator ``P``.
        steps: gradient steps (0 returns ``volume``).
        weight: ``refine_weight``, the prior's weight.
        lr: Adam step size (in [0, 1] volume units).

    Returns:
        ``(B, 1, D, H, W)`` refined volume in [0, 1] (no autograd history).
    """
    if steps < 0 or weight < 0:
        raise ConfigError(f"refine_steps and refine_weight must be >= 0, got {steps} and {weight}")
    v0 = volume.detach().float()
    if steps == 0:
        return v0
    target = xray.detach().float().to(v0.device)
    ratio = v0[0].numel() / target[0].numel()
    v = v0.clone().requires_grad_(True)
    optimizer = torch.optim.Adam([v], lr=lr)
    with torch.enable_grad():
        for _ in range(int(steps)):
            optimizer.zero_grad(set_to_none=True)
            data = torch.mean((projector(v) - target) ** 2)
            prior = torch.mean((v - v0) ** 2) * ratio
            (data + weight * prior).backward()
            optimizer.step()
            with torch.no_grad():
                v.clamp_(0.0, 1.0)
    return v.detach()


class ProjectionRefined(MapTransform):
    """Refine ``data[keys]`` (the reconstruction ``(1, D, H, W)`` in [0, 1]) against
    ``data[xray_key]`` ``(V, S, S)`` with :func:`refine_volume` (see the module docstring).

    Args:
        steps: ``refine_steps`` of ``inference.yaml`` (0: off).
        weight: ``refine_weight``.
        lr: Adam step size.
        views: 1 or 2, as the model.
        protocol: the DRR settings (the projector of the training DRRs).
        trust_lung_dice: for films with an estimated pixel size, the lung-field overlap every view
            needs before it is refined.
        device: where the steps run (the volume is returned on its own device).
    """

    def __init__(
        self,
        keys: Hashable = PRED_KEY,
        steps: int = 0,
        weight: float = 1.0,
        lr: float = 0.01,
        views: int = 2,
        protocol: Protocol | None = None,
        xray_key: str = XRAY_KEY,
        trust_lung_dice: float = 0.7,
        device: str | torch.device | None = None,
    ) -> None:
        super().__init__(keys)
        if int(steps) < 0 or float(weight) < 0 or float(lr) <= 0:
            raise ConfigError(f"refine_steps >= 0, refine_weight >= 0 and lr > 0 needed, got {steps}, {weight}, {lr}")
        self.steps = int(steps)
        self.weight = float(weight)
        self.lr = float(lr)
        self.views = view_names(views)
        self.projector = DRRProjector(protocol, self.views)
        self.xray_key = xray_key
        self.trust_lung_dice = float(trust_lung_dice)
        self.device = device

    def _untrusted(self, d: Mapping[Hashable, Any], reproj: torch.Tensor, xray: torch.Tensor) -> str:
        """Why this case's geometry is not trusted for refinement ('' when it is), from the
        network's re-projection ``reproj`` ``(V, S, S)``."""
        info = json.loads(d["xray_info"]) if d.get("xray_info") else {}
        estimated = [v for v in self.views if info.get(v, {}).get("spacing_estimated")]
        if not estimated:
            return ""
        for i, view in enumerate(self.views):
            seen, made = radiograph_fields(xray[i].numpy()), radiograph_fields(reproj[i].numpy())
            dice = mask_dice(seen.lungs, made.lungs) if seen.found_lungs else 0.0
            if dice < self.trust_lung_dice:
                return (
                    f"refinement skipped: the pixel size of {', '.join(estimated)} was estimated and the {view} lung "
                    f"fields overlap the re-projection by {dice:.2f} < {self.trust_lung_dice:g} (Dice)"
                )
        return ""

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        if self.steps == 0:
            return d
        xray = torch.as_tensor(d[self.xray_key]).float().detach().cpu()
        for key in self.key_iterator(d):
            img = d[key]
            pred = torch.as_tensor(img).float().detach().cpu()
            t0 = time.perf_counter()
            device = torch.device(self.device) if self.device is not None else pred.device
            projector = self.projector.to(device)
            with torch.no_grad():
                before = projector(pred[None].to(device))[0].cpu()  # the network's re-projection, once
            reason = self._untrusted(d, before, xray)
            if reason:
                d["refinement"] = {"skipped": reason}
                d["quality_warnings"] = list(d.get("quality_warnings", [])) + [reason]
                continue
            refined = refine_volume(
                pred[None].to(device), xray[None].to(device), projector, self.steps, self.weight, self.lr
            )[0].cpu()
            record: dict[str, Any] = {"steps": self.steps, "weight": self.weight}
            with torch.no_grad():
                after = projector(refined[None].to(device))[0].cpu()
            for i, view in enumerate(self.views):
                record[f"{view}_psnr_before"] = round(psnr_image(before[i], xray[i]), 3)
                record[f"{view}_psnr_after"] = round(psnr_image(after[i], xray[i]), 3)
            record["seconds"] = round(time.perf_counter() - t0, 2)
            d["refinement"] = record
            out = refined.to(dtype=torch.as_tensor(img).dtype)
            if isinstance(img, MetaTensor):
                out = MetaTensor(out, meta=dict(img.meta), applied_operations=list(img.applied_operations))
            d[key] = out
        return d
