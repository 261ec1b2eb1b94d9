"""CT table removal that never erases the patient.

X2CT-GAN stripped the bed with a body mask before projecting; without it the table shows in the
lateral DRR. The body mask must resolve a thin chest wall, or its slice-wise hole filling no
longer closes and the lungs (and the wall itself) become "outside": the protocol therefore runs
this step at its 1 mm stage (:func:`~duolift_bundle.transforms.ct_protocol.ct_protocol`, after
the crop, before the resize) and every radius is in millimetres.

Steps (``(D, H, W)`` HU, the bundle's axes):

1. ``dense = hu > threshold_hu`` (-500: soft tissue and bone, not lung or foam pads);
2. a morphological opening with a ball of ``opening_mm`` (1 mm) detaches a thin table that
   touches the patient; the components of at least ``keep_fraction`` of the largest are the body
   (arms held beside the trunk included);
3. the surface the opening shaved off is grown back inside ``dense`` (geodesic dilation by the
   same radius), holes are filled slice by slice (the lungs are inside the body): steps 1-3 are
   :func:`~duolift_bundle.imaging.lung_mask.body_mask` with ``grow_back``; the body is then
   dilated by one voxel (the partial-volume skin);
4. **the check**: the enclosed air spaces of the chest (3D components of ``hu < threshold_hu``
   in the inner 80 % of the scanned slices that do not touch the in-plane border and hold at
   least ``min_lung_ml``: the lungs) must lie
   inside the body (``lungs_enclosed`` >= ``min_enclosed``), and the dense tissue the removal
   would take within ``margin_mm`` of them (the chest wall, vessels) must stay below
   ``max_patient_loss_ml``. A removal that fails either keeps the whole volume (no removal), and
   the reason is reported (``meta.json`` and the preparation summary list it).

Why keep the case instead of failing it: the table is a small artefact of the lateral DRR, while
a dropped case is one patient fewer for a project that has few (LIDC-IDRI has many thin and
elderly patients); the summary names every such case so that a user can look at it.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
from duolift_bundle.geometry import AIR_HU, CTProtocol, TableRemoval, voxel_spacing
from duolift_bundle.imaging.lung_mask import ball, body_mask, in_plane_border_labels
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform
from scipy import ndimage as ndi

__all__ = ["TableRemovalReport", "remove_table", "RemoveTabled", "REPORT_KEY"]

logger = logging.getLogger(__name__)

#: Meta-data key of a CT's :class:`TableRemovalReport` (a plain dict).
REPORT_KEY = "table_removal"


def _dilate_mm(mask: np.ndarray, margin_mm: float, spacing: Sequence[float]) -> np.ndarray:
    """Dilation by a box of half-width ``margin_mm`` (separable 1D maxima: cheap on 320^3)."""
    out = mask.astype(np.uint8)
    for axis, s in enumerate(spacing):
        size = 2 * int(round(margin_mm / float(s))) + 1
        if size > 1:
            out = ndi.maximum_filter1d(out, size=size, axis=axis, mode="constant")
    return out.astype(bool)


@dataclass(frozen=True)
class TableRemovalReport:
    """What :func:`remove_table` did to one CT.

    ``applied`` is False when the check refused the removal (``reason`` says why) and the CT was
    kept whole; volumes are in ml; ``lungs_enclosed`` is the fraction of the enclosed air spaces
    inside the body (1.0 when none was found: ``reason`` then says the check could not run).
    """

    applied: bool
    removed_ml: float
    patient_removed_ml: float
    lungs_ml: float
    lungs_enclosed: float
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def _enclosed_air(hu: np.ndarray, voxel_ml: float, s: TableRemoval) -> np.ndarray:
    """The lungs for the check: 3D air components away from the in-plane border, >= min_lung_ml,
    within the inner slices of the scan."""
    # only the inner 80 % of the slices that hold tissue: the protocol's padding above / below a
    # short scan is air, and the scan's first slices may cut the upper airway open to the outside
    scanned = np.flatnonzero((hu > s.threshold_hu).any(axis=(1, 2)))
    inner = np.zeros(hu.shape[0], dtype=bool)
    if scanned.size:
        margin = int(0.1 * (scanned[-1] - scanned[0] + 1))
        inner[scanned[0] + margin : scanned[-1] + 1 - margin] = True
    labels, n = ndi.label((hu < s.threshold_hu) & inner[:, None, None])
    if n == 0:
        return np.zeros(hu.shape, dtype=bool)
    sizes = np.bincount(labels.ravel(), minlength=n + 1) * voxel_ml
    keep = ~in_plane_border_labels(labels, n) & (sizes >= s.min_lung_ml)
    keep[0] = False
    return keep[labels]


def remove_table(
    hu: np.ndarray, spacing: Sequence[float], settings: TableRemoval | None = None
) -> tuple[np.ndarray, TableRemovalReport]:
    """The body mask of a chest CT and whether removing the rest is safe.

    Args:
        hu: ``(D, H, W)`` HU volume.
        spacing: its voxel size in mm (the protocol calls this at 1 mm).
        settings: :class:`TableRemoval` (defaults above).

    Returns:
        ``(keep, report)``: ``keep`` is the bool ``(D, H, W)`` mask of voxels to keep (all True
        when the check refused the removal), ``report`` the :class:`TableRemovalReport`.
    """
    s = settings or TableRemoval()
    hu = np.asarray(hu, dtype=np.float32)
    voxel_ml = float(np.prod([float(v) for v in spacing])) / 1000.0
    radius = int(round(s.opening_mm / min(float(v) for v in spacing)))
    body = body_mask(hu, s.threshold_hu, radius, s.keep_fraction, grow_back=True)
    body = ndi.binary_dilation(body, structure=ball(1))  # the partial-volume skin
    removed = (hu > s.threshold_hu) & ~body
    lungs = _enclosed_air(hu, voxel_ml, s)
    lungs_ml = float(lungs.sum()) * voxel_ml
    if lungs.any():
        enclosed = float((lungs & body).sum() / lungs.sum())
        patient = float((removed & _dilate_mm(lungs, s.margin_mm, spacing)).sum()) * voxel_ml
    else:
        enclosed, patient = 1.0, 0.0
    problems = []
    if enclosed < s.min_enclosed:
        problems.append(f"only {100 * enclosed:.1f} % of the lungs ({lungs_ml:.0f} ml) would stay inside the body")
    if patient > s.max_patient_loss_ml:
        problems.append(
            f"it would take {patient:.1f} ml of dense tissue within {s.margin_mm:g} mm of the lungs "
            f"(chest wall or vessels; at most {s.max_patient_loss_ml:g} ml allowed)"
        )
    if problems:
        reason = "table removal refused, CT kept whole: " + "; ".join(problems)
    elif not lungs.any():
        reason = "no enclosed lungs found: the removal could not be checked"
    else:
        reason = ""
    report = TableRemovalReport(
        applied=not problems,
        removed_ml=round(float(removed.sum()) * voxel_ml, 2),
        patient_removed_ml=round(patient, 2),
        lungs_ml=round(lungs_ml, 1),
        lungs_enclosed=round(enclosed, 4),
        reason=reason,
    )
    return (body if not problems else np.ones_like(body)), report


class RemoveTabled(MapTransform):
    """Set everything outside the body (CT table, blankets, tubes) to air, where that is safe.

    Works on the [0, 1] contract volume (``input_range="unit"``, with the HU window of
    ``protocol``) or on HU, with the :class:`TableRemoval` settings of ``protocol`` (the
    :class:`CTProtocol`, X2CT's by default); the voxel size comes from ``spacing`` or the image's
    affine (MetaTensor). The
    :class:`TableRemovalReport` is stored as a dict in the image's meta data under
    ``"table_removal"`` (and logged as a warning when the removal was refused or unchecked).
    """

    def __init__(
        self,
        keys: KeysCollection = "ct",
        input_range: str = "unit",
        protocol: CTProtocol | None = None,
        spacing: Sequence[float] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.input_range = CTProtocol.check_input_range(input_range)
        self.protocol = protocol or CTProtocol()
        self.settings = self.protocol.table_removal
        self.spacing = None if spacing is None else tuple(float(v) for v in spacing)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        air = float(self.protocol.to_unit(AIR_HU)) if self.input_range == "unit" else AIR_HU
        for key in self.key_iterator(d):
            img = d[key]
            arr = img[0].detach().cpu().numpy().astype(np.float32)
            hu = self.protocol.as_hu(arr, self.input_range)
            keep, report = remove_table(hu, voxel_spacing(img, self.spacing, who="RemoveTabled"), self.settings)
            if report.reason:
                source = img.meta.get("filename_or_obj", key) if isinstance(img, MetaTensor) else key
                logger.warning("%s: %s", source, report.reason)
            base = img.as_tensor() if isinstance(img, MetaTensor) else img
            mask = torch.from_numpy(keep[None]).to(base.device)
            out = torch.where(mask, base, torch.as_tensor(air, dtype=base.dtype, device=base.device))
            if isinstance(img, MetaTensor):
                meta = {**img.meta, REPORT_KEY: report.to_dict()}
                out = MetaTensor(out, meta=meta, applied_operations=list(img.applied_operations))
            d[key] = out
        return d
