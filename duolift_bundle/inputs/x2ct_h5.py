"""X2CT-GAN's preprocessed HDF5 layout: one ``<case>/ct_xray_data.h5`` per case.

Keys (as X2CT-GAN's data loader reads them): ``ct`` - the volume, stored as HU + 1024 (their
``CT_MIN_MAX`` is 0..2500 on that scale), indexed ``(D, H, W)``; ``xray1`` - the frontal (PA) DRR
and ``xray2`` - the lateral DRR, 8-bit 0..255 (their ``XRAY*_MIN_MAX``). Files written by the
bundle store the [0, 1] contract volume as ``HU + 1024`` float32 and the DRRs as uint8.

Reading maps the values to the data contract (``HU = ct - 1024`` on the protocol's HU window, ``ct / 2500``
for the default one, clipped to [0, 1]; ``xray / 255``)
and resizes to the configured size when the file holds another one. X2CT's own files were written
from SimpleITK arrays; where their axis order differs from the bundle's convention, ``flip``
(per axis of ``(D, H, W)``) and ``flip_frontal`` adapt them without rewriting the files.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from duolift_bundle.constants import view_names
from duolift_bundle.errors import DuoLiftError, ShapeError
from duolift_bundle.geometry import CTProtocol, Protocol
from duolift_bundle.io_utils import atomic_path
from monai.config import KeysCollection
from monai.transforms import MapTransform

__all__ = ["X2CT_FILENAME", "X2CTDataError", "write_x2ct_h5", "read_x2ct_h5", "LoadX2CTH5d", "find_x2ct_cases"]

X2CT_FILENAME = "ct_xray_data.h5"
#: X2CT's stored CT: HU + 1024, clipped to [0, 2500] (their CT_MIN_MAX), a file format of its own;
#: the bundle maps it to [0, 1] with the protocol's HU window (the same map for the default window)
X2CT_HU_OFFSET = 1024.0
X2CT_CT_MAX = 2500.0


class X2CTDataError(DuoLiftError, ValueError):
    """An X2CT HDF5 file that cannot be used; the message names the file and the problem."""


def write_x2ct_h5(
    path: str | os.PathLike, ct: np.ndarray, xray: np.ndarray, protocol: CTProtocol | None = None
) -> None:
    """Write one case in X2CT's layout, atomically.

    Args:
        path: the ``.h5`` file to write.
        ct: ``(D, H, W)`` contract volume in [0, 1], on the HU window of ``protocol``.
        xray: ``(2, S, S)`` frontal and lateral DRRs in [0, 1].
        protocol: the :class:`CTProtocol` (X2CT's by default).
    """
    p = protocol or CTProtocol()
    import h5py

    ct = np.asarray(ct, dtype=np.float32)
    xray = np.asarray(xray, dtype=np.float32)
    if ct.ndim != 3 or xray.ndim != 3 or xray.shape[0] != 2:
        raise ShapeError(f"write_x2ct_h5 needs ct (D, H, W) and xray (2, S, S), got {ct.shape} and {xray.shape}")
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        stored = np.clip(p.to_hu(np.clip(ct, 0, 1)) + X2CT_HU_OFFSET, 0.0, X2CT_CT_MAX).astype(np.float32)
        f.create_dataset("ct", data=stored, compression="gzip", compression_opts=1)
        for i, key in enumerate(("xray1", "xray2")):
            f.create_dataset(key, data=np.round(np.clip(xray[i], 0, 1) * 255).astype(np.uint8))


def read_x2ct_h5(
    path: str | os.PathLike, views: int = 2, protocol: CTProtocol | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Read ``(ct (D, H, W) in [0, 1], xray (views, S, S) in [0, 1])`` from an X2CT file, the CT
    on the HU window of ``protocol`` (X2CT's by default)."""
    import h5py

    path = str(path)
    if not os.path.isfile(path):
        raise X2CTDataError(f"{path}: no such file")
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("ct", "xray1", "xray2")[: 1 + views] if k not in f]
            if missing:
                raise X2CTDataError(f"{path}: missing dataset(s) {missing} (present: {sorted(f.keys())})")
            ct = np.asarray(f["ct"], dtype=np.float32)
            xr = [np.asarray(f[k], dtype=np.float32) for k in ("xray1", "xray2")[:views]]
    except X2CTDataError:
        raise
    except Exception as exc:  # h5py raises OSError / KeyError on corrupt files
        raise X2CTDataError(f"{path}: unreadable HDF5 ({type(exc).__name__}: {exc})") from exc
    if ct.ndim != 3:
        raise X2CTDataError(f"{path}: 'ct' must be 3D, got shape {ct.shape}")
    if any(x.ndim != 2 for x in xr):
        raise X2CTDataError(f"{path}: X-rays must be 2D, got shapes {[x.shape for x in xr]}")
    if not np.isfinite(ct).all() or not all(np.isfinite(x).all() for x in xr):
        raise X2CTDataError(f"{path}: NaN/Inf values")
    ct = np.clip((protocol or CTProtocol()).to_unit(ct - X2CT_HU_OFFSET), 0.0, 1.0).astype(np.float32)
    xray = np.stack([np.clip(x / 255.0, 0.0, 1.0) for x in xr])
    return ct, xray


def _resize(arr: np.ndarray, size: Sequence[int], mode: str) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(arr))[None]
    if tuple(t.shape[2:]) == tuple(size):
        return arr
    kw = {"align_corners": False} if mode in ("trilinear", "bilinear") else {}
    return F.interpolate(t, size=tuple(size), mode=mode, **kw)[0].numpy()


class LoadX2CTH5d(MapTransform):
    """``data[key]`` = path of a ``ct_xray_data.h5`` -> ``data["ct"]`` ``(1, S, S, S)`` and
    ``data["xray"]`` ``(views, X, X)``, both float32 in [0, 1].

    Args:
        protocol: the :class:`Protocol`: the output CT side ``size`` (resized trilinearly if the
            file holds another), the X-ray side ``xray_size`` (area-resized) and the HU window.
        views: 1 (frontal) or 2 (frontal + lateral).
        flip: per-axis flips of the stored ``(D, H, W)`` volume to reach the bundle convention.
        flip_frontal: mirror the frontal X-ray's columns (undo X2CT's PA flip).
    """

    def __init__(
        self,
        keys: KeysCollection = "h5",
        ct_key: str = "ct",
        xray_key: str = "xray",
        protocol: Protocol | None = None,
        views: int = 2,
        flip: Sequence[bool] = (False, False, False),
        flip_frontal: bool = False,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        view_names(views)
        self.ct_key, self.xray_key = ct_key, xray_key
        self.protocol = protocol or Protocol()
        self.views = int(views)
        self.flip = tuple(bool(f) for f in flip)
        self.flip_frontal = bool(flip_frontal)

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            ct, xray = read_x2ct_h5(str(d[key]), views=self.views, protocol=self.protocol.ct)
            axes = tuple(i for i, f in enumerate(self.flip) if f)
            if axes:
                ct = np.flip(ct, axis=axes)
            if self.flip_frontal:
                xray[0] = xray[0][:, ::-1]
            ct = _resize(ct[None], (self.protocol.size,) * 3, "trilinear")
            xray = _resize(xray, (self.protocol.xray_size,) * 2, "area")
            d[self.ct_key] = torch.from_numpy(np.ascontiguousarray(ct, dtype=np.float32))
            d[self.xray_key] = torch.from_numpy(np.ascontiguousarray(xray, dtype=np.float32))
        return d


def find_x2ct_cases(root: str | os.PathLike, names: Sequence[str] | None = None) -> list[dict]:
    """Items ``{"case": name, "h5": path}`` for ``root/<name>/ct_xray_data.h5``.

    ``names`` (e.g. read from X2CT's ``train.txt``) restricts and orders the cases; a listed case
    without its file is an error naming the expected path.
    """
    root = str(root)
    if names is None:
        names = sorted(n for n in os.listdir(root) if os.path.isfile(os.path.join(root, n, X2CT_FILENAME)))
    items = []
    for name in names:
        path = os.path.join(root, name, X2CT_FILENAME)
        if not os.path.isfile(path):
            raise X2CTDataError(f"{path}: listed case {name!r} has no {X2CT_FILENAME}")
        items.append({"case": name, "h5": path})
    return items
