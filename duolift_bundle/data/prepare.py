"""Data preparation: raw CT -> 128^3 volume, two DRRs and a lung mask per case, plus ``datalist.json``.

Per case ``<out>/<case>/`` holds ``ct.nii.gz`` (float32 in [0, 1], RAS affine in world space),
``xray_frontal.nii.gz`` and ``xray_lateral.nii.gz`` (2D float32 in [0, 1]), ``lung_mask.nii.gz``
(uint8), optional ground-truth labels (phantoms: ``lung_label`` / ``vessel_label``), optional
X2CT-GAN's ``ct_xray_data.h5``, and ``meta.json`` (source, chosen series, protocol, timing).

A case folder is built under a temporary name and renamed when complete, so an interrupted run
leaves no half-written case; a re-run skips the finished ones (resume). Failed cases are reported
with their reason in ``failed.json`` and the summary; the others go on. ``datalist.json`` lists
every finished case under ``training`` / ``validation`` / ``test`` (see
:mod:`duolift_bundle.data.splits`).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from duolift_bundle.constants import CT_KEY, HU_MAX, HU_MIN, LUNG_MASK_KEY, VIEWS, XRAY_KEY
from duolift_bundle.data.ct_io import load_ct
from duolift_bundle.data.sources import CaseSource, discover_cases
from duolift_bundle.data.splits import SPLITS, assign_splits
from duolift_bundle.data.x2ct_h5 import X2CT_FILENAME, write_x2ct_h5
from duolift_bundle.io_utils import atomic_dir, read_json, write_json
from duolift_bundle.transforms.ct_protocol import ct_protocol
from duolift_bundle.transforms.drr import DRRd, DRRGeometry, geometry_summary
from duolift_bundle.transforms.lung_mask import LungMaskd, RemoveTabled

__all__ = ["PrepareOptions", "prepare_case", "prepare", "DATALIST_NAME", "FORMATS"]

logger = logging.getLogger(__name__)

DATALIST_NAME = "datalist.json"
FAILED_NAME = "failed.json"
FORMATS = ("nifti", "x2ct-h5")


@dataclass
class PrepareOptions:
    """Everything that shapes a prepared case (written to each case's ``meta.json``)."""

    size: int = 128
    spacing: float = 1.0
    crop_size: int = 320
    z_anchor: str = "superior"
    hu_window: tuple[float, float] = (HU_MIN, HU_MAX)
    lazy: bool = False
    remove_table: bool = True
    normalize: str = "max"
    flip_frontal: bool = False
    geometry: dict = field(default_factory=lambda: DRRGeometry().to_dict())
    formats: tuple[str, ...] = ("nifti",)

    def __post_init__(self) -> None:
        bad = [f for f in self.formats if f not in FORMATS]
        if bad:
            raise ValueError(f"unknown output format(s) {bad}; choose from {FORMATS}")
        DRRGeometry(**self.geometry)  # validates


def _save_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    img = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm")
    img.to_filename(str(path))


def _relative_entry(case_dir: Path, out_root: Path, names: dict[str, str]) -> dict[str, str]:
    rel = os.path.relpath(case_dir, out_root)
    return {key: f"{rel}/{name}" for key, name in names.items()}


def prepare_case(source: CaseSource, out_root: str | os.PathLike, options: PrepareOptions | None = None) -> dict:
    """Prepare one case into ``out_root/<case_id>/`` atomically; returns its datalist entry."""
    from monai.data import NibabelReader
    from monai.transforms import LoadImage

    opts = options or PrepareOptions()
    out_root = Path(out_root)
    t0 = time.perf_counter()
    ct = load_ct(source.path, series=source.series)
    data = {CT_KEY: ct}
    loader = LoadImage(reader=NibabelReader(), image_only=True, ensure_channel_first=True)
    for key, path in source.labels.items():
        data[key] = loader(path)
    label_keys = list(source.labels)
    data = ct_protocol(
        keys=CT_KEY,
        label_keys=label_keys,
        spacing=opts.spacing,
        crop_size=opts.crop_size,
        size=opts.size,
        hu_window=opts.hu_window,
        z_anchor=opts.z_anchor,
        lazy=opts.lazy,
    )(data)
    if opts.remove_table:
        data = RemoveTabled(CT_KEY, hu_window=opts.hu_window)(data)
    data = DRRd(
        CT_KEY, XRAY_KEY, views=VIEWS, geometry=opts.geometry, normalize=opts.normalize, flip_frontal=opts.flip_frontal
    )(data)
    data = LungMaskd(CT_KEY, LUNG_MASK_KEY, hu_window=opts.hu_window)(data)

    ct_out = data[CT_KEY]
    affine = ct_out.affine.numpy()
    vol = ct_out[0].numpy().astype(np.float32)
    xray = data[XRAY_KEY].numpy().astype(np.float32)
    mask = data[LUNG_MASK_KEY][0].numpy().astype(np.uint8)
    pix = opts.geometry.get("detector_size", 500.0) / opts.geometry.get("output_size", xray.shape[-1])
    xray_affine = np.diag([pix, pix, 1.0, 1.0])
    names = {CT_KEY: "ct.nii.gz", LUNG_MASK_KEY: "lung_mask.nii.gz"}
    names.update({f"xray_{v}": f"xray_{v}.nii.gz" for v in VIEWS})
    names.update({key: f"{key}.nii.gz" for key in label_keys})
    case_dir = out_root / source.case_id
    with atomic_dir(case_dir) as tmp:
        _save_nifti(tmp / names[CT_KEY], vol, affine)
        _save_nifti(tmp / names[LUNG_MASK_KEY], mask, affine)
        for i, v in enumerate(VIEWS):
            _save_nifti(tmp / names[f"xray_{v}"], xray[i], xray_affine)
        for key in label_keys:
            _save_nifti(tmp / names[key], data[key][0].numpy().round().astype(np.uint8), affine)
        if "x2ct-h5" in opts.formats:
            write_x2ct_h5(tmp / X2CT_FILENAME, vol, xray)
            names["h5"] = X2CT_FILENAME
        entry = {"case": source.case_id, **_relative_entry(case_dir, out_root, names)}
        meta = {
            "entry": entry,
            "source": source.path,
            "series": ct.meta.get("ct_series"),
            "original_shape": [int(s) for s in ct.shape[1:]],
            "original_spacing": [float(s) for s in ct.pixdim[:3]],
            "options": asdict(opts),
            "drr": geometry_summary(DRRGeometry(**opts.geometry)),
            "lung_volume_ml": float(mask.sum() * np.prod(ct_out.pixdim[:3].numpy()) / 1000.0),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        write_json(tmp / "meta.json", meta)  # written last: its presence marks a complete case
    return entry


def _worker(args: tuple[CaseSource, str, PrepareOptions, int]) -> tuple[str, dict | None, str | None]:
    source, out_root, opts, threads = args
    torch.set_num_threads(threads)
    try:
        return source.case_id, prepare_case(source, out_root, opts), None
    except Exception as exc:  # one bad case must not stop the others; the reason is reported
        return source.case_id, None, f"{type(exc).__name__}: {exc}"


def _finished_entries(out_root: Path) -> dict[str, dict]:
    entries = {}
    for meta_path in sorted(out_root.glob("*/meta.json")):
        try:
            entries[meta_path.parent.name] = read_json(meta_path)["entry"]
        except (ValueError, KeyError, OSError):
            logger.warning("ignoring unreadable %s", meta_path)
    return entries


def _remove_stale_temporaries(out_root: Path) -> None:
    for tmp in out_root.glob(".*.tmp"):
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def write_datalist(out_root: str | os.PathLike, scheme: str = "auto", seed: int = 0, fractions: Sequence[float] = (0.8, 0.1, 0.1), extra: dict | None = None) -> Path:
    """(Re)write ``datalist.json`` from every finished case folder under ``out_root``."""
    out_root = Path(out_root)
    entries = _finished_entries(out_root)
    splits = assign_splits(entries, scheme=scheme, fractions=fractions, seed=seed)
    doc: dict = {split: [] for split in SPLITS}
    for case_id in sorted(entries):
        doc[splits[case_id]].append(entries[case_id])
    doc["split_scheme"] = {"scheme": scheme, "seed": seed, "fractions": list(fractions)}
    if extra:
        doc.update(extra)
    path = out_root / DATALIST_NAME
    write_json(path, doc)
    return path


def prepare(
    sources: str | os.PathLike | Sequence[CaseSource],
    out: str | os.PathLike,
    options: PrepareOptions | None = None,
    workers: int = 1,
    overwrite: bool = False,
    split: str = "auto",
    seed: int = 0,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    progress: bool = True,
) -> dict:
    """Prepare every case of ``sources`` (a path for :func:`discover_cases` or a list) into ``out``.

    Returns a summary ``{"prepared": [...], "skipped": [...], "failed": {case: reason}, "datalist": path}``.
    """
    from tqdm.auto import tqdm

    opts = options or PrepareOptions()
    out_root = Path(out)
    out_root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out_root)
    cases = discover_cases(sources) if isinstance(sources, (str, os.PathLike)) else list(sources)
    ids = [c.case_id for c in cases]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate case ids among sources: {sorted({i for i in ids if ids.count(i) > 1})}")
    done = set() if overwrite else set(_finished_entries(out_root))
    todo = [c for c in cases if c.case_id not in done]
    skipped = [c.case_id for c in cases if c.case_id in done]
    workers = max(1, min(int(workers), len(todo) or 1))
    threads = max(1, (os.cpu_count() or 1) // workers)
    jobs = [(c, str(out_root), opts, threads) for c in todo]
    prepared, failed = [], {}
    bar = tqdm(total=len(jobs), desc="prepare", unit="case", disable=not progress)
    if workers == 1:
        results = map(_worker, jobs)
        pool = None
    else:
        pool = mp.get_context("fork").Pool(workers)
        results = pool.imap_unordered(_worker, jobs)
    try:
        for case_id, _entry, error in results:
            if error is None:
                prepared.append(case_id)
            else:
                failed[case_id] = error
                logger.error("case %s failed: %s", case_id, error)
            bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    datalist = write_datalist(out_root, scheme=split, seed=seed, fractions=fractions, extra={"protocol": asdict(opts)})
    failed_path = out_root / FAILED_NAME
    if failed:
        write_json(failed_path, failed)
    elif failed_path.exists():
        failed_path.unlink()
    return {"prepared": sorted(prepared), "skipped": sorted(skipped), "failed": failed, "datalist": str(datalist)}


def format_summary(summary: dict) -> str:
    """Human-readable summary of :func:`prepare`'s result."""
    lines = [
        f"prepared {len(summary['prepared'])}, skipped (already done) {len(summary['skipped'])}, failed {len(summary['failed'])}",
        f"datalist: {summary['datalist']}",
    ]
    for case_id, reason in sorted(summary["failed"].items()):
        lines.append(f"  FAILED {case_id}: {reason}")
    return "\n".join(lines)


def main(
    src: str,
    out: str,
    workers: int = 1,
    format: str | Sequence[str] = "nifti",
    size: int = 128,
    spacing: float = 1.0,
    crop_size: int = 320,
    z_anchor: str = "superior",
    lazy: bool = False,
    remove_table: bool = True,
    normalize: str = "max",
    flip_frontal: bool = False,
    split: str = "auto",
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> int:
    """Command line of ``scripts/prepare_data.py`` (see its ``--help``). Returns the exit code:
    0 when every case succeeded, 1 when some failed (the others are still written)."""
    formats = (format,) if isinstance(format, str) else tuple(format)
    formats = tuple(dict.fromkeys(("nifti",) + tuple(f.strip() for fs in formats for f in str(fs).split(","))))
    opts = PrepareOptions(
        size=size,
        spacing=spacing,
        crop_size=crop_size,
        z_anchor=z_anchor,
        lazy=lazy,
        remove_table=remove_table,
        normalize=normalize,
        flip_frontal=flip_frontal,
        formats=formats,
    )
    summary = prepare(src, out, opts, workers=workers, overwrite=overwrite, split=split, seed=seed, progress=progress)
    print(format_summary(summary))
    return 1 if summary["failed"] else 0
