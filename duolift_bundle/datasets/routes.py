"""Datasets for the bundle configs; every route yields the data contract's keys.

Three routes (``data_format`` of :func:`make_dataset`, the one entry the configs use), all MONAI
datasets over dictionaries:

- ``prepared``: cases written by ``scripts/prepare_data.py`` / ``make_phantoms.py``, listed in
  ``datalist.json`` (fast; the default for training);
- ``raw``: raw CT files or DICOM folders (:mod:`duolift_bundle.inputs.discovery`), split like the
  preparation splits them (:mod:`duolift_bundle.datasets.splits`), through the whole raw chain
  (:func:`~duolift_bundle.datasets.raw_chain.raw_ct_chain`) inside the config; the chain is
  deterministic, so MONAI caching (in memory, or on disk with ``cache_dir``) runs it once;
- ``x2ct``: X2CT-GAN's ``<case>/ct_xray_data.h5`` folders, lung masks computed (and cached) on
  the fly.

Keys produced: ``ct`` ``(1, S, S, S)`` float32 [0, 1], ``xray`` ``(V, X, X)`` float32 [0, 1],
``lung_mask`` ``(1, S, S, S)`` uint8, plus ``case``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import torch
from duolift_bundle.constants import CT_KEY, LUNG_MASK_KEY, XRAY_KEY, view_names
from duolift_bundle.datasets.raw_chain import raw_ct_chain
from duolift_bundle.datasets.splits import SPLITS, assign_splits
from duolift_bundle.errors import ConfigError, MissingFileError, MissingKeyError
from duolift_bundle.geometry import CTProtocol, Protocol
from duolift_bundle.imaging.lung_mask import LungMaskd
from duolift_bundle.inputs.ct_io import without_decoder_notice
from duolift_bundle.inputs.discovery import discover_cases
from duolift_bundle.inputs.x2ct_h5 import LoadX2CTH5d, find_x2ct_cases
from duolift_bundle.io_utils import read_json
from duolift_bundle.transforms.contract import CheckContractd
from monai.data import CacheDataset, NibabelReader, PersistentDataset
from monai.transforms import Compose, ConcatItemsd, DeleteItemsd, EnsureTyped, LoadImaged

__all__ = [
    "DATA_FORMATS",
    "DATA_COMMANDS",
    "xray_keys",
    "load_datalist",
    "prepared_transforms",
    "x2ct_transforms",
    "prepared_dataset",
    "raw_ct_dataset",
    "x2ct_h5_dataset",
    "make_dataset",
]

logger = logging.getLogger(__name__)

DATA_FORMATS = ("prepared", "raw", "x2ct")
#: datalist keys holding files besides the X-rays (see xray_keys)
_FILE_KEYS = (CT_KEY, LUNG_MASK_KEY)


#: what a run without training data is told to do (the last line of its error)
DATA_COMMANDS = (
    "python scripts/make_phantoms.py --out data/phantoms --n 12 --size 64 --seed 0, then "
    "--dataset_dir data/phantoms --size 64 (or scripts/prepare_data.py --src <your CTs> --out data/mine, "
    'then --dataset_dir data/mine); README, "Train a small model on a CPU in minutes"'
)


def xray_keys(views: int) -> list[str]:
    """Datalist keys of the X-ray files: ``xray_frontal`` (+ ``xray_lateral``)."""
    return [f"xray_{v}" for v in view_names(views)]


def load_datalist(
    path: str | os.PathLike, split: str = "training", views: int = 2, check_files: bool = True
) -> list[dict]:
    """Items of one split of a ``datalist.json``, file paths made absolute and checked.

    Raises:
        FileNotFoundError: the datalist or a file it lists is missing (named in the message).
        KeyError: unknown split or an item lacking a required key.
    """
    path = os.fspath(path)
    if split not in SPLITS:
        raise MissingKeyError(f"split must be one of {SPLITS}, got {split!r}")
    if not os.path.isfile(path):
        raise MissingFileError(f"{path}: datalist not found. Make data and point the run at it: {DATA_COMMANDS}")
    doc = read_json(path)
    base = os.path.dirname(os.path.abspath(path))
    items = []
    needed = list(_FILE_KEYS) + xray_keys(views)
    for raw in doc.get(split, []):
        item = dict(raw)
        case = item.get("case", "<unnamed>")
        for key in needed:
            if key not in item:
                raise MissingKeyError(f"{path}: case {case!r} in '{split}' has no '{key}' entry")
        for key, value in list(item.items()):
            if isinstance(value, str) and (key in needed or key.endswith("_label")):
                full = value if os.path.isabs(value) else os.path.join(base, value)
                if check_files and not os.path.isfile(full):
                    raise MissingFileError(f"{path}: case {case!r} lists '{key}' = {full}, which does not exist")
                item[key] = full
        items.append(item)
    return items


def prepared_transforms(views: int = 2, size: int = CTProtocol.size, extra_keys: Sequence[str] = ()) -> Compose:
    """Load a prepared case: NIfTI files -> contract tensors (``xray`` = concatenated views)."""
    xk = xray_keys(views)
    image_keys = [CT_KEY, LUNG_MASK_KEY, *xk, *extra_keys]
    with without_decoder_notice():
        load = LoadImaged(image_keys, reader=NibabelReader(), image_only=True, ensure_channel_first=True)
    return Compose(
        [
            load,
            ConcatItemsd(xk, XRAY_KEY, dim=0),
            DeleteItemsd(xk),
            EnsureTyped([CT_KEY, XRAY_KEY], dtype=torch.float32),
            EnsureTyped([LUNG_MASK_KEY, *extra_keys], dtype=torch.uint8),
            CheckContractd(size=size, views=views),
        ]
    )


def x2ct_transforms(protocol: Protocol | None = None, views: int = 2, **kwargs) -> Compose:
    """X2CT HDF5 path (``h5`` key) -> contract at the sizes and HU window of ``protocol``, lung
    mask computed with the classical segmenter; ``kwargs`` go to :class:`LoadX2CTH5d` (flips)."""
    p = protocol or Protocol()
    return Compose(
        [
            LoadX2CTH5d("h5", protocol=p, views=views, **kwargs),
            LungMaskd(CT_KEY, output_key=LUNG_MASK_KEY, protocol=p.ct),
            CheckContractd(size=p.size, views=views, xray_size=p.xray_size),
        ]
    )


def prepared_dataset(
    datalist: str | os.PathLike,
    split: str = "training",
    views: int = 2,
    size: int = CTProtocol.size,
    cache_rate: float = 1.0,
    num_workers: int = 0,
) -> CacheDataset:
    """A :class:`monai.data.CacheDataset` over one split of a prepared ``datalist.json``."""
    items = load_datalist(datalist, split, views=views)
    return CacheDataset(
        items, prepared_transforms(views, size), cache_rate=cache_rate, num_workers=num_workers, progress=False
    )


def raw_ct_dataset(
    source: str | os.PathLike,
    split: str | None = "training",
    views: int = 2,
    protocol: Protocol | None = None,
    cache_dir: str | os.PathLike | None = None,
    scheme: str = "auto",
    seed: int = 0,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    num_workers: int = 0,
):
    """Raw CTs under ``source`` (anything :func:`~duolift_bundle.inputs.discovery.discover_cases`
    takes) through the raw chain; ``split`` picks the cases the preparation would put in that
    split (``None``: every case). Folders discovery skips are logged with their reason.

    With ``cache_dir`` a :class:`monai.data.PersistentDataset` keeps the results on disk across
    runs; otherwise a :class:`monai.data.CacheDataset` keeps them in memory.
    """
    found = discover_cases(source)
    cases = found.cases
    if split is not None:
        if split not in SPLITS:
            raise MissingKeyError(f"split must be one of {SPLITS} or None, got {split!r}")
        assigned = assign_splits([c.case_id for c in cases], scheme=scheme, fractions=fractions, seed=seed)
        cases = [c for c in cases if assigned[c.case_id] == split]
    items = [{"case": c.case_id, CT_KEY: c.path, **({"series": c.series} if c.series else {})} for c in cases]
    transform = raw_ct_chain(protocol, views)
    if cache_dir is not None:
        return PersistentDataset(items, transform, cache_dir=cache_dir)
    return CacheDataset(items, transform, num_workers=num_workers, progress=False)


def x2ct_h5_dataset(
    root: str | os.PathLike,
    names_file: str | os.PathLike | None = None,
    views: int = 2,
    protocol: Protocol | None = None,
    num_workers: int = 0,
    **kwargs,
) -> CacheDataset:
    """X2CT-GAN's preprocessed folders; ``names_file`` is e.g. their ``train.txt`` / ``test.txt``;
    volumes and X-rays at the sizes of ``protocol`` (the data contract)."""
    names = None
    if names_file is not None:
        with open(names_file) as f:
            names = [line.strip() for line in f if line.strip()]
    items = find_x2ct_cases(root, names)
    return CacheDataset(items, x2ct_transforms(protocol, views, **kwargs), num_workers=num_workers, progress=False)


def make_dataset(
    data_format: str,
    split: str | None,
    views: int = 2,
    protocol: Protocol | None = None,
    datalist: str | os.PathLike | None = None,
    raw_source: str | os.PathLike | None = None,
    raw_cache_dir: str | os.PathLike | None = None,
    x2ct_root: str | os.PathLike | None = None,
    x2ct_names_file: str | os.PathLike | Mapping[str, str | None] | None = None,
    cache_rate: float = 1.0,
    num_workers: int = 0,
    seed: int = 0,
    augmentation: Mapping | None = None,
    device: str | torch.device | None = None,
):
    """One split for the configs (see the module docstring): ``prepared`` reads ``datalist``,
    ``raw`` runs the raw chain on ``raw_source`` (cached in ``raw_cache_dir`` when given),
    ``x2ct`` reads X2CT-GAN's HDF5 folders under ``x2ct_root`` listed in ``x2ct_names_file``
    (their train.txt / test.txt; or a mapping split -> names file). Sizes come from
    ``protocol``. ``split=None`` or ``"all"`` takes every case (``run preparing``, ``--split all``).

    ``augmentation`` (a mapping of :func:`~duolift_bundle.datasets.augmentation.drr_augmentation`'s
    ranges; ``{}`` for the defaults, ``None`` for none) makes the ``training`` split an
    :class:`~duolift_bundle.datasets.augmentation.AugmentedDataset`: every epoch each CT is augmented
    and its X-rays simulated again (on ``device``). Other splits are never augmented."""
    protocol = protocol or Protocol()
    if split == "all":  # what a command line can say for every split (None cannot be passed there)
        split = None
    if augmentation is not None and split == "training":
        from duolift_bundle.datasets.augmentation import AugmentedDataset, drr_augmentation

        base = make_dataset(
            data_format,
            split,
            views,
            protocol,
            datalist,
            raw_source,
            raw_cache_dir,
            x2ct_root,
            x2ct_names_file,
            cache_rate,
            num_workers,
            seed,
        )
        return AugmentedDataset(base, drr_augmentation(protocol, views, device=device, **dict(augmentation)), seed=seed)
    if isinstance(x2ct_names_file, Mapping):  # one names file per split
        x2ct_names_file = x2ct_names_file.get(split) if split is not None else None
    if data_format == "prepared":
        if datalist is None:
            raise ConfigError("data_format 'prepared' needs a datalist (datalist.json)")
        if split is None:  # every split
            parts = [
                prepared_dataset(datalist, name, views=views, size=protocol.size, cache_rate=0.0) for name in SPLITS
            ]
            return torch.utils.data.ConcatDataset(parts)
        return prepared_dataset(
            datalist, split, views=views, size=protocol.size, cache_rate=cache_rate, num_workers=num_workers
        )
    if data_format == "raw":
        if raw_source is None:
            raise ConfigError("data_format 'raw' needs raw_source (a folder of CTs)")
        return raw_ct_dataset(
            raw_source, split, views, protocol, cache_dir=raw_cache_dir, seed=seed, num_workers=num_workers
        )
    if data_format == "x2ct":
        if x2ct_root is None:
            raise ConfigError("data_format 'x2ct' needs x2ct_root")
        return x2ct_h5_dataset(
            x2ct_root,
            x2ct_names_file,
            views=views,
            protocol=protocol,
            num_workers=num_workers,
        )
    raise ConfigError(f"data_format must be one of {DATA_FORMATS}, got {data_format!r}")
