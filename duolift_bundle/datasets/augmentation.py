"""On-the-fly DRR augmentation: augment the CT, then simulate its X-rays (a new pair every epoch).

X2CT-GAN trained on DRRs computed once; with two or three real CTs that is two or three pairs. Here
each training CT is spatially and intensity augmented with MONAI's random transforms BEFORE the
DRRs are simulated, so the X-rays and the target always describe the same (augmented) chest:

    contract item (ct, lung_mask, ...) -> [to ``device``] -> Rand3DElasticd (rotation, per-axis scale, shift, elastic
    warp; lung mask nearest) -> RandAdjustContrastd (gamma) -> RandGaussianNoised (scanner noise)
    -> clip to [0, 1] -> DRRd (the protocol's projector, on ``device``) -> CheckContractd

:class:`AugmentedDataset` wraps any route's dataset (:func:`~duolift_bundle.datasets.routes.make_dataset`)
and seeds the chain per item from ``(seed, epoch, index)``: an epoch's pairs do not depend on the
worker count, the order or earlier epochs, so a resumed run sees what an uninterrupted one does
(:class:`~duolift_bundle.engines.handlers.EpochSeedHandler` calls :meth:`AugmentedDataset.set_epoch`).
The deterministic part of a route stays cached by the wrapped dataset; only the random part and the
projector run per item.

The default ranges and their reasons are in :data:`DEFAULT_AUGMENTATION`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from duolift_bundle.constants import CT_KEY, LUNG_MASK_KEY, XRAY_KEY, view_names
from duolift_bundle.errors import ConfigError
from duolift_bundle.geometry import Protocol
from duolift_bundle.transforms.contract import CheckContractd
from duolift_bundle.transforms.drr import DRRd
from monai.transforms import (
    Compose,
    Rand3DElasticd,
    RandAdjustContrastd,
    RandGaussianNoised,
    ScaleIntensityRanged,
    ToDeviced,
)

__all__ = ["DEFAULT_AUGMENTATION", "drr_augmentation", "AugmentedDataset"]

#: Ranges of :func:`drr_augmentation` (the training configs' ``augmentation`` block overrides them).
#: rotate_deg: patient rotation on the table (about every axis, degrees);
#: scale: per-axis relative size change (body width and depth; see the realism report,
#:   ``scripts/phantom_realism.py``, for the spread of the real CTs);
#: translate_mm: shift of the body in the field;
#: elastic_sigma / elastic_magnitude_mm: smooth local deformation (breathing, posture), in mm;
#: gamma: contrast change of the [0, 1] CT (scanner kernels / HU calibration);
#: noise_std: scanner noise on the [0, 1] CT (0.008 = 20 HU with the 2500 HU window);
#: prob: probability of each random step.
DEFAULT_AUGMENTATION: dict = {
    "rotate_deg": 5.0,
    "scale": 0.12,
    "translate_mm": 12.0,
    "elastic_sigma_mm": (40.0, 60.0),
    "elastic_magnitude_mm": (0.0, 15.0),
    "gamma": (0.85, 1.15),
    "noise_std": 0.008,
    "prob": 0.9,
}


def drr_augmentation(
    protocol: Protocol | None = None,
    views: int = 2,
    device: str | torch.device | None = None,
    rotate_deg: float = DEFAULT_AUGMENTATION["rotate_deg"],
    scale: float = DEFAULT_AUGMENTATION["scale"],
    translate_mm: float = DEFAULT_AUGMENTATION["translate_mm"],
    elastic_sigma_mm: Sequence[float] = DEFAULT_AUGMENTATION["elastic_sigma_mm"],
    elastic_magnitude_mm: Sequence[float] = DEFAULT_AUGMENTATION["elastic_magnitude_mm"],
    gamma: Sequence[float] = DEFAULT_AUGMENTATION["gamma"],
    noise_std: float = DEFAULT_AUGMENTATION["noise_std"],
    prob: float = DEFAULT_AUGMENTATION["prob"],
) -> Compose:
    """The random chain: contract item -> augmented ``ct`` / ``lung_mask`` and their new ``xray``
    ``(views, X, X)`` (simulated after the augmentation, so the pair stays consistent).

    Distances are in mm and converted with the protocol's voxel size, so one setting means the
    same anatomy change at 64^3 and 128^3. With ``device`` the CT and lung mask move there first,
    so the warp, the intensity steps and the projector all run on it (the GPU in training; the
    augmented ``ct`` / ``lung_mask`` stay there, the ``xray`` comes back to the CPU).
    """
    p = protocol or Protocol()
    names = view_names(views)
    for name, value in (("scale", scale), ("noise_std", noise_std), ("prob", prob)):
        if value < 0:
            raise ConfigError(f"drr_augmentation: {name} must be >= 0, got {value}")
    voxel = p.ct.voxel_mm
    rad = math.radians(rotate_deg)
    spatial = Rand3DElasticd(
        keys=[CT_KEY, LUNG_MASK_KEY],
        sigma_range=tuple(s / voxel for s in elastic_sigma_mm),
        magnitude_range=tuple(m / voxel for m in elastic_magnitude_mm),
        prob=prob,
        rotate_range=(rad, rad, rad),
        scale_range=(scale, scale, scale),
        translate_range=(translate_mm / voxel,) * 3,
        mode=("bilinear", "nearest"),
        padding_mode="zeros",  # 0 = the bottom of the HU window: air outside the field
    )
    to_device = [ToDeviced([CT_KEY, LUNG_MASK_KEY], device=device)] if device is not None else []
    return Compose(
        [
            *to_device,
            spatial,
            RandAdjustContrastd(CT_KEY, prob=prob, gamma=tuple(gamma)),
            RandGaussianNoised(CT_KEY, prob=prob, std=noise_std),
            ScaleIntensityRanged(CT_KEY, a_min=0.0, a_max=1.0, b_min=0.0, b_max=1.0, clip=True),
            DRRd(CT_KEY, XRAY_KEY, views=names, protocol=p, device=device),
            CheckContractd(size=p.size, views=views, xray_size=p.xray_size),
        ]
    )


class AugmentedDataset(torch.utils.data.Dataset):
    """``dataset`` (contract items) with ``transform`` applied per item, seeded from
    ``(seed, epoch, index)``.

    Args:
        dataset: any map-style dataset of contract items (the deterministic, cached part).
        transform: a MONAI ``Compose`` of random transforms (:func:`drr_augmentation`).
        seed: the run's seed.
    """

    def __init__(self, dataset, transform: Compose, seed: int = 0) -> None:
        self.dataset = dataset
        self.transform = transform
        self.seed = int(seed)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose pairs ``__getitem__`` returns (called when each epoch starts)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Mapping:
        item = self.dataset[index]
        entropy = np.random.SeedSequence([self.seed, self.epoch, int(index)]).generate_state(1)[0]
        self.transform.set_random_state(seed=int(entropy))
        return self.transform(dict(item))
