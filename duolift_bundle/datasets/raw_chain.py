"""The raw-CT chain, built in one place: CT file -> 128^3 protocol -> DRRs -> lung mask.

``LoadCTd`` -> (label volumes) -> :func:`~duolift_bundle.transforms.ct_protocol.ct_protocol`
(with the table removal at its 1 mm stage) -> :class:`~duolift_bundle.transforms.drr.DRRd`
-> :class:`~duolift_bundle.imaging.lung_mask.LungMaskd` -> :class:`~duolift_bundle.transforms.contract.CheckContractd`,
all set by one :class:`~duolift_bundle.geometry.Protocol`. The preparation is this chain plus a
writer (:mod:`duolift_bundle.datasets.prepare`); the ``raw`` dataset route of the training configs
runs it inside the config (:func:`duolift_bundle.datasets.routes.raw_ct_dataset`); inference runs it
on CT inputs to simulate their X-rays.
"""

from __future__ import annotations

from collections.abc import Sequence

from duolift_bundle.constants import CT_KEY, LUNG_MASK_KEY, XRAY_KEY, view_names
from duolift_bundle.geometry import Protocol
from duolift_bundle.imaging.lung_mask import LungMaskd
from duolift_bundle.inputs.ct_io import LoadCTd, without_decoder_notice
from duolift_bundle.transforms.contract import CheckContractd
from duolift_bundle.transforms.ct_protocol import ct_protocol
from duolift_bundle.transforms.drr import DRRd
from monai.data import NibabelReader
from monai.transforms import Compose, LoadImaged

__all__ = ["raw_ct_chain"]


def raw_ct_chain(protocol: Protocol | None = None, views: int = 2, label_keys: Sequence[str] = ()) -> Compose:
    """``{"ct": path[, "series": id][, label_key: path]}`` -> the data contract's ``ct``,
    ``xray`` ``(views, S, S)`` and ``lung_mask`` (label volumes resampled alongside, nearest).

    Args:
        protocol: the protocol (X2CT's 128^3 by default).
        views: 1 (frontal) or 2 (frontal + lateral).
        label_keys: keys of extra label volumes (NIfTI paths) to carry through the protocol.
    """
    p = protocol or Protocol()
    names = view_names(views)
    label_keys = list(label_keys)
    steps = [LoadCTd(CT_KEY)]
    if label_keys:
        with without_decoder_notice():
            steps.append(LoadImaged(label_keys, reader=NibabelReader(), image_only=True, ensure_channel_first=True))
    steps.append(ct_protocol(CT_KEY, label_keys, p.ct))
    steps += [
        DRRd(CT_KEY, XRAY_KEY, views=names, protocol=p),
        LungMaskd(CT_KEY, LUNG_MASK_KEY, protocol=p.ct),
        CheckContractd(size=p.size, views=views, xray_size=p.xray_size),
    ]
    # lazy=None: the nested protocol Compose keeps its own lazy setting (MONAI would otherwise
    # force the outer Compose's lazy=False on it)
    return Compose(steps, lazy=None)
