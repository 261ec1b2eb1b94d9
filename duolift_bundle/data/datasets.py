"""Datasets for the bundle configs; every route yields the data contract's keys.

Three routes, all MONAI datasets over dictionaries:

- :func:`prepared_dataset`: cases written by ``scripts/prepare_data.py`` / ``make_phantoms.py``,
  listed in ``datalist.json`` (fast; the default for training);
- :func:`raw_ct_dataset`: raw CT files or DICOM folders through the whole chain inside the
  config (LoadCTd -> 128^3 protocol -> table removal -> DRR -> lung mask); the chain is
  deterministic, so MONAI caching (in memory, or on disk with ``cache_dir``) runs it once;
- :func:`x2ct_h5_dataset`: X2CT-GAN's ``<case>/ct_xray_data.h5`` folders, lung masks computed
  (and cached) on the fly.

Keys produced: ``ct`` ``(1, S, S, S)`` float32 [0, 1], ``xray`` ``(V, X, X)`` float32 [0, 1],
``lung_mask`` ``(1, S, S, S)`` uint8, plus ``case``.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping, Sequence

import torch
from monai.data import CacheDataset, NibabelReader, PersistentDataset
from monai.transforms import (
    Compose,
    ConcatItemsd,
    DeleteItemsd,
    EnsureTyped,
    LoadImaged,
    MapTransform,
)

from duolift_bundle.constants import CT_KEY, LUNG_MASK_KEY, VIEWS, XRAY_KEY
from duolift_bundle.data.ct_io import LoadCTd, is_volume_file
from duolift_bundle.data.sources import case_id_from_path, is_dicom_file
from duolift_bundle.data.splits import SPLITS
from duolift_bundle.data.x2ct_h5 import LoadX2CTH5d, find_x2ct_cases
from duolift_bundle.io_utils import read_json
from duolift_bundle.transforms.ct_protocol import ct_protocol
from duolift_bundle.transforms.drr import DRRd
from duolift_bundle.transforms.lung_mask import LungMaskd, RemoveTabled

__all__ = [
    "DataContractError",
    "CheckContractd",
    "xray_keys",
    "load_datalist",
    "prepared_transforms",
    "raw_ct_transforms",
    "x2ct_transforms",
    "prepared_dataset",
    "raw_ct_dataset",
    "x2ct_h5_dataset",
    "make_dataset",
]

#: datalist keys holding files besides the X-rays (see xray_keys)
_FILE_KEYS = (CT_KEY, LUNG_MASK_KEY)


class DataContractError(ValueError):
    """A case that violates the data contract; the message names the case and the problem."""


def xray_keys(views: int) -> list[str]:
    """Datalist keys of the X-ray files: ``xray_frontal`` (+ ``xray_lateral``)."""
    if views not in (1, 2):
        raise ValueError(f"views must be 1 (frontal) or 2 (frontal + lateral), got {views}")
    return [f"xray_{v}" for v in VIEWS[:views]]


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

    def __init__(self, size: int = 128, views: int = 2, xray_size: int | None = None, require_mask: bool = True) -> None:
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
                raise DataContractError(f"{case}: missing '{key}' (a lung mask is required for the masked loss)" if key == LUNG_MASK_KEY else f"{case}: missing '{key}'")
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


def load_datalist(path: str | os.PathLike, split: str = "training", views: int = 2, check_files: bool = True) -> list[dict]:
    """Items of one split of a ``datalist.json``, file paths made absolute and checked.

    Raises:
        FileNotFoundError: the datalist or a file it lists is missing (named in the message).
        KeyError: unknown split or an item lacking a required key.
    """
    path = os.fspath(path)
    if split not in SPLITS:
        raise KeyError(f"split must be one of {SPLITS}, got {split!r}")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: datalist not found (write one with scripts/prepare_data.py or scripts/make_phantoms.py)")
    doc = read_json(path)
    base = os.path.dirname(os.path.abspath(path))
    items = []
    needed = list(_FILE_KEYS) + xray_keys(views)
    for raw in doc.get(split, []):
        item = dict(raw)
        case = item.get("case", "<unnamed>")
        for key in needed:
            if key not in item:
                raise KeyError(f"{path}: case {case!r} in '{split}' has no '{key}' entry")
        for key, value in list(item.items()):
            if isinstance(value, str) and (key in needed or key.endswith("_label")):
                full = value if os.path.isabs(value) else os.path.join(base, value)
                if check_files and not os.path.isfile(full):
                    raise FileNotFoundError(f"{path}: case {case!r} lists '{key}' = {full}, which does not exist")
                item[key] = full
        items.append(item)
    return items


def prepared_transforms(views: int = 2, size: int = 128, extra_keys: Sequence[str] = ()) -> Compose:
    """Load a prepared case: NIfTI files -> contract tensors (``xray`` = concatenated views)."""
    xk = xray_keys(views)
    image_keys = [CT_KEY, LUNG_MASK_KEY, *xk, *extra_keys]
    return Compose(
        [
            LoadImaged(image_keys, reader=NibabelReader(), image_only=True, ensure_channel_first=True),
            ConcatItemsd(xk, XRAY_KEY, dim=0),
            DeleteItemsd(xk),
            EnsureTyped([CT_KEY, XRAY_KEY], dtype=torch.float32),
            EnsureTyped([LUNG_MASK_KEY, *extra_keys], dtype=torch.uint8),
            CheckContractd(size=size, views=views),
        ]
    )


def raw_ct_transforms(
    views: int = 2,
    size: int = 128,
    protocol: Mapping | None = None,
    drr: Mapping | None = None,
    remove_table: bool = True,
) -> Compose:
    """Raw CT path -> contract: LoadCTd, the 128^3 protocol, table removal, DRRs, lung mask.

    Args:
        views: 1 or 2.
        size: volume side (the protocol's ``size``).
        protocol: keyword arguments of :func:`~duolift_bundle.transforms.ct_protocol.ct_protocol`.
        drr: keyword arguments of :class:`~duolift_bundle.transforms.drr.DRRd`.
        remove_table: apply :class:`~duolift_bundle.transforms.lung_mask.RemoveTabled`.
    """
    protocol = dict(protocol or {})
    protocol.setdefault("size", size)
    drr = dict(drr or {})
    drr.setdefault("views", VIEWS[:views])
    steps = [LoadCTd(CT_KEY), ct_protocol(keys=CT_KEY, **protocol)]
    if remove_table:
        steps.append(RemoveTabled(CT_KEY))
    steps += [DRRd(CT_KEY, output_key=XRAY_KEY, **drr), LungMaskd(CT_KEY, output_key=LUNG_MASK_KEY)]
    geom = drr.get("geometry")
    xray_size = geom.get("output_size", 128) if isinstance(geom, Mapping) else getattr(geom, "output_size", 128)
    steps.append(CheckContractd(size=protocol["size"], views=views, xray_size=int(xray_size)))
    # lazy=None: the nested protocol Compose keeps its own lazy setting (MONAI would otherwise
    # force the outer Compose's lazy=False on it)
    return Compose(steps, lazy=None)


def x2ct_transforms(views: int = 2, size: int = 128, xray_size: int = 128, **kwargs) -> Compose:
    """X2CT HDF5 path (``h5`` key) -> contract, lung mask computed with the classical segmenter."""
    return Compose(
        [
            LoadX2CTH5d("h5", size=size, xray_size=xray_size, views=views, **kwargs),
            LungMaskd(CT_KEY, output_key=LUNG_MASK_KEY),
            CheckContractd(size=size, views=views, xray_size=xray_size),
        ]
    )


def prepared_dataset(
    datalist: str | os.PathLike,
    split: str = "training",
    views: int = 2,
    size: int = 128,
    cache_rate: float = 1.0,
    num_workers: int = 0,
) -> CacheDataset:
    """A :class:`monai.data.CacheDataset` over one split of a prepared ``datalist.json``."""
    items = load_datalist(datalist, split, views=views)
    return CacheDataset(items, prepared_transforms(views, size), cache_rate=cache_rate, num_workers=num_workers, progress=False)


def _raw_items(sources: str | os.PathLike | Sequence[str]) -> list[dict]:
    if isinstance(sources, (str, os.PathLike)):
        src = os.fspath(sources)
        if os.path.isdir(src) and not _has_dicom_files(src):
            names = sorted(n for n in os.listdir(src) if is_volume_file(n) or os.path.isdir(os.path.join(src, n)))
            sources = [os.path.join(src, n) for n in names]
        else:
            sources = [src]
    return [{"case": case_id_from_path(os.fspath(s)), CT_KEY: os.fspath(s)} for s in sources]


def _has_dicom_files(folder: str) -> bool:
    return any(is_dicom_file(os.path.join(folder, n)) for n in sorted(os.listdir(folder))[:20])


def raw_ct_dataset(
    sources: str | os.PathLike | Sequence[str],
    views: int = 2,
    size: int = 128,
    cache_dir: str | os.PathLike | None = None,
    protocol: Mapping | None = None,
    drr: Mapping | None = None,
    remove_table: bool = True,
    num_workers: int = 0,
):
    """Raw CTs (a folder of NIfTI / DICOM-series folders, one CT, or a list) through the full chain.

    With ``cache_dir`` a :class:`monai.data.PersistentDataset` keeps the results on disk across
    runs; otherwise a :class:`monai.data.CacheDataset` keeps them in memory.
    """
    items = _raw_items(sources)
    transform = raw_ct_transforms(views, size, protocol, drr, remove_table)
    if cache_dir is not None:
        return PersistentDataset(items, transform, cache_dir=cache_dir)
    return CacheDataset(items, transform, num_workers=num_workers, progress=False)


def x2ct_h5_dataset(
    root: str | os.PathLike,
    names_file: str | os.PathLike | None = None,
    views: int = 2,
    size: int = 128,
    xray_size: int = 128,
    num_workers: int = 0,
    **kwargs,
) -> CacheDataset:
    """X2CT-GAN's preprocessed folders; ``names_file`` is e.g. their ``train.txt`` / ``test.txt``."""
    names = None
    if names_file is not None:
        with open(names_file) as f:
            names = [line.strip() for line in f if line.strip()]
    items = find_x2ct_cases(root, names)
    return CacheDataset(items, x2ct_transforms(views, size, xray_size, **kwargs), num_workers=num_workers, progress=False)


def make_dataset(
    data_format: str,
    split: str,
    views: int = 2,
    size: int = 128,
    datalist: str | os.PathLike | None = None,
    x2ct_root: str | os.PathLike | None = None,
    x2ct_names_file: str | os.PathLike | None = None,
    cache_rate: float = 1.0,
    num_workers: int = 0,
) -> CacheDataset:
    """One split for the training configs: ``data_format`` "prepared" reads ``datalist`` (the
    ``datalist.json`` of ``prepare_data.py`` / ``make_phantoms.py``), "x2ct" reads X2CT-GAN's
    HDF5 folders under ``x2ct_root`` listed in ``x2ct_names_file`` (their train.txt / test.txt)."""
    if data_format == "prepared":
        if datalist is None:
            raise ValueError("data_format 'prepared' needs a datalist (datalist.json)")
        return prepared_dataset(datalist, split, views=views, size=size, cache_rate=cache_rate, num_workers=num_workers)
    if data_format == "x2ct":
        if x2ct_root is None:
            raise ValueError("data_format 'x2ct' needs x2ct_root")
        return x2ct_h5_dataset(x2ct_root, x2ct_names_file, views=views, size=size, xray_size=size, num_workers=num_workers)
    raise ValueError(f"data_format must be 'prepared' or 'x2ct', got {data_format!r}")
