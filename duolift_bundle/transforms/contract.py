"""The data contract (``docs/README.md``, "Conventions") as a MONAI transform that checks it."""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import torch
from duolift_bundle.constants import CT_KEY, LUNG_MASK_KEY, XRAY_KEY
from duolift_bundle.errors import DuoLiftError
from duolift_bundle.geometry import CTProtocol
from monai.transforms import MapTransform

__all__ = ["DataContractError", "CheckContractd"]


class DataContractError(DuoLiftError, ValueError):
    """A case that violates the data contract; the message names the case and the problem."""


def _case_name(d: Mapping) -> str:
    if "case" in d:
        return str(d["case"])
    img = d.get(CT_KEY)
    meta = getattr(img, "meta", {}) or {}
    return str(meta.get("filename_or_obj", "<unnamed case>"))


class CheckContractd(MapTransform):
    """Validate one sample against the data contract (shapes, dtypes, value ranges, finiteness).

    Raises :class:`DataContractError` naming the case, the key, the expected and received values.
    """

    def __init__(
        self, size: int = CTProtocol.size, views: int = 2, xray_size: int | None = None, require_mask: bool = True
    ) -> None:
        keys = [CT_KEY, XRAY_KEY] + ([LUNG_MASK_KEY] if require_mask else [])
        super().__init__(keys, allow_missing_keys=False)
        self.size, self.views = int(size), int(views)
        self.xray_size = int(xray_size or size)
        self.require_mask = require_mask

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        case = _case_name(d)
        for key in self.keys:
            if key not in d:
                raise DataContractError(
                    f"{case}: missing '{key}' (a lung mask is required for the masked loss)"
                    if key == LUNG_MASK_KEY
                    else f"{case}: missing '{key}'"
                )
        expected = {
            CT_KEY: (1, self.size, self.size, self.size),
            LUNG_MASK_KEY: (1, self.size, self.size, self.size),
            XRAY_KEY: (self.views, self.xray_size, self.xray_size),
        }
        for key in self.keys:
            shape = tuple(d[key].shape)
            if shape != expected[key]:
                raise DataContractError(f"{case}: '{key}' has shape {shape}, expected {expected[key]}")
        for key in (CT_KEY, XRAY_KEY):
            t = torch.as_tensor(d[key])
            if not bool(torch.isfinite(t).all()):
                raise DataContractError(f"{case}: '{key}' contains NaN/Inf")
            lo, hi = float(t.min()), float(t.max())
            if lo < -1e-4 or hi > 1 + 1e-4:
                raise DataContractError(f"{case}: '{key}' values in [{lo:.4g}, {hi:.4g}], expected [0, 1]")
        if self.require_mask:
            m = torch.as_tensor(d[LUNG_MASK_KEY])
            if not bool(((m == 0) | (m == 1)).all()):
                raise DataContractError(f"{case}: '{LUNG_MASK_KEY}' must be binary (0/1)")
            d[LUNG_MASK_KEY] = d[LUNG_MASK_KEY].to(torch.uint8)
        return d
