"""MONAI ``prepare_batch`` functions for the bundle's data contract (training, evaluation, inference)."""

from __future__ import annotations

from typing import Any

import torch
from duolift_bundle.constants import CT_KEY, XRAY_KEY
from duolift_bundle.errors import MissingKeyError

__all__ = ["prepare_xray_batch", "prepare_inference_batch", "plain"]


def prepare_xray_batch(
    batchdata: dict, device: torch.device | str | None = None, non_blocking: bool = False, **kwargs: Any
):
    """MONAI ``prepare_batch`` for the bundle's data contract: ``(xray, ct)`` on ``device``.

    ``xray`` ``(B, V, H, W)`` is the network input and ``ct`` ``(B, 1, D, H, W)`` the target
    (MONAI evaluators then store them as ``pred`` / ``label``).
    """
    for key in (XRAY_KEY, CT_KEY):
        if key not in batchdata:
            raise MissingKeyError(
                f"batch has no {key!r} entry (keys: {sorted(batchdata)}); see the data contract in docs/README.md"
            )
    # plain tensors: the networks need no image metadata, and MetaTensor bookkeeping on every
    # operation of a 3D generator costs time
    xray = plain(batchdata[XRAY_KEY]).to(device=device, non_blocking=non_blocking, **kwargs)
    ct = plain(batchdata[CT_KEY]).to(device=device, non_blocking=non_blocking, **kwargs)
    return xray, ct


def plain(x: Any) -> torch.Tensor:
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


def prepare_inference_batch(batchdata: dict, device=None, non_blocking: bool = False, **kwargs):
    """MONAI ``prepare_batch``: the X-rays as a plain tensor, no target."""
    return plain(batchdata[XRAY_KEY]).to(device=device, non_blocking=non_blocking, **kwargs), None
