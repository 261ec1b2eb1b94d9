"""Data preparation: raw CT -> 128^3 volume, two DRRs and a lung mask per case, plus ``datalist.json``.

Per case ``<out>/<case>/`` holds ``ct.nii.gz`` (float32 in [0, 1], RAS affine in world space),
``xray_frontal.nii.gz`` and ``xray_lateral.nii.gz`` (2D float32 in [0, 1]), ``lung_mask.nii.gz``
(uint8), optional ground-truth labels (phantoms: ``lung_label`` / ``vessel_label``), optional
X2CT-GAN's ``ct_xray_data.h5``, and ``meta.json`` (source, chosen series, protocol, timing).

A case folder is built under a temporary name and renamed when complete, so an interrupted run
leaves no half-written case; a re-run skips the finished ones (resume). Failed cases are reported
with their reason in ``failed.json`` and the summary; the others go on. ``datalist.json`` lists
every finished case under ``training`` / ``validation`` / ``test`` (see
:mod:`duolift_bundle.datasets.splits`).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
from duolift_bundle.constants import CT_KEY, FAILED_NAME, LUNG_MASK_KEY, VIEWS, XRAY_KEY
from duolift_bundle.datasets.raw_chain import raw_ct_chain
from duolift_bundle.datasets.splits import SPLITS, assign_splits
from duolift_bundle.errors import ConfigError, failure_reason
from duolift_bundle.geometry import Protocol
from duolift_bundle.imaging.table import REPORT_KEY
from duolift_bundle.inputs.discovery import CaseSource, discover_cases
from duolift_bundle.inputs.x2ct_h5 import X2CT_FILENAME, write_x2ct_h5
from duolift_bundle.io_utils import atomic_dir, read_json, write_case_list, write_json

__all__ = ["prepare_case", "prepare", "write_datalist", "format_summary", "DATALIST_NAME", "FAILED_NAME", "FORMATS"]

logger = logging.getLogger(__name__)

DATALIST_NAME = "datalist.json"
FORMATS = ("nifti", "x2ct-h5")


def _check_formats(formats: Sequence[str]) -> tuple[str, ...]:
    bad = [f for f in formats if f not in FORMATS]
    if bad:
        raise ConfigError(f"unknown output format(s) {bad}; choose from {FORMATS}")
    return tuple(formats)


def _save_nifti(path: Path, array: np.ndarray, affine: np.ndarray) -> None:
    img = nib.Nifti1Image(np.asarray(array), np.asarray(affine, dtype=np.float64))
    img.header.set_xyzt_units("mm")
    img.to_filename(str(path))


def prepare_case(
    source: CaseSource,
    out_root: str | os.PathLike,
    protocol: Protocol | None = None,
    formats: Sequence[str] = ("nifti",),
) -> dict:
    """Prepare one case into ``out_root/<case_id>/`` atomically (the raw chain plus a writer);
    returns its datalist entry."""
    protocol = protocol or Protocol()
    formats = _check_formats(formats)
    out_root = Path(out_root)
    t0 = time.perf_counter()
    label_keys = list(source.labels)
    data = raw_ct_chain(protocol, views=len(VIEWS), label_keys=label_keys)(
        {"case": source.case_id, CT_KEY: source.path, "series": source.series, **source.labels}
    )
    ct_out = data[CT_KEY]
    affine = ct_out.affine.numpy()
    vol = ct_out[0].numpy().astype(np.float32)
    xray = data[XRAY_KEY].numpy().astype(np.float32)
    mask = data[LUNG_MASK_KEY][0].numpy().astype(np.uint8)
    pix = protocol.drr.geometry.detector_size / protocol.xray_size
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
        if "x2ct-h5" in formats:
            write_x2ct_h5(tmp / X2CT_FILENAME, vol, xray, protocol.ct)
            names["h5"] = X2CT_FILENAME
        rel = os.path.relpath(case_dir, out_root)
        entry = {"case": source.case_id, **{key: f"{rel}/{name}" for key, name in names.items()}}
        meta = {
            "entry": entry,
            "source": source.path,
            "series": ct_out.meta.get("ct_series"),
            "original_shape": ct_out.meta.get("ct_original_shape"),
            "original_spacing": ct_out.meta.get("ct_original_spacing"),
            "protocol": protocol.to_dict(),
            "formats": list(formats),
            "drr": protocol.drr.geometry.summary(),
            "lung_volume_ml": float(mask.sum() * protocol.ct.voxel_mm**3 / 1000.0),
            "table_removal": ct_out.meta.get(REPORT_KEY),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        write_json(tmp / "meta.json", meta)  # written last: its presence marks a complete case
    return entry


def _worker(args: tuple[CaseSource, str, Protocol, tuple[str, ...], int]) -> tuple[str, dict | None, str | None]:
    source, out_root, protocol, formats, threads = args
    torch.set_num_threads(threads)
    try:
        return source.case_id, prepare_case(source, out_root, protocol, formats), None
    except Exception as exc:  # one bad case must not stop the others; the reason is reported
        return source.case_id, None, failure_reason(exc)


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


def write_datalist(
    out_root: str | os.PathLike,
    scheme: str = "auto",
    seed: int = 0,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    extra: dict | None = None,
) -> Path:
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


SKIPPED_NAME = "skipped.json"


def prepare(
    sources: str | os.PathLike | Sequence[CaseSource],
    out: str | os.PathLike,
    protocol: Protocol | None = None,
    formats: Sequence[str] = ("nifti",),
    workers: int = 1,
    overwrite: bool = False,
    split: str = "auto",
    seed: int = 0,
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    progress: bool = True,
) -> dict:
    """Prepare every case of ``sources`` (a path for :func:`discover_cases` or a list) into ``out``.

    Returns a summary ``{"prepared": [...], "already_done": [...], "skipped": [{"path", "reason"}],
    "failed": {case: reason}, "warnings": {case: note}, "datalist": path}``; ``warnings`` names the
    prepared cases whose table removal was refused or unchecked (``meta.json``'s ``table_removal``
    says why); ``skipped`` lists the folders discovery did not
    take (also written to ``skipped.json``), ``failed`` the cases refused or broken on the way
    (also ``failed.json``; nothing of them is left in ``out``).
    """
    from tqdm.auto import tqdm

    protocol = protocol or Protocol()
    formats = _check_formats(formats)
    out_root = Path(out)
    out_root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(out_root)
    skipped_sources: list[dict] = []
    if isinstance(sources, (str, os.PathLike)):
        found = discover_cases(sources)
        cases, skipped_sources = found.cases, found.skipped
    else:
        cases = list(sources)
    ids = [c.case_id for c in cases]
    if len(set(ids)) != len(ids):
        raise ConfigError(f"duplicate case ids among sources: {sorted({i for i in ids if ids.count(i) > 1})}")
    done = set() if overwrite else set(_finished_entries(out_root))
    todo = [c for c in cases if c.case_id not in done]
    already = [c.case_id for c in cases if c.case_id in done]
    workers = max(1, min(int(workers), len(todo) or 1))
    threads = max(1, (os.cpu_count() or 1) // workers)
    jobs = [(c, str(out_root), protocol, formats, threads) for c in todo]
    prepared, failed = [], {}
    bar = tqdm(total=len(jobs), desc="prepare", unit="case", disable=not progress)
    if workers == 1:
        results = map(_worker, jobs)
        pool = None
    else:
        pool = mp.get_context("fork").Pool(workers)
        results = pool.imap_unordered(_worker, jobs)
    warnings: dict[str, str] = {}
    try:
        for case_id, _entry, error in results:
            if error is None:
                prepared.append(case_id)
                note = (read_json(out_root / case_id / "meta.json").get(REPORT_KEY) or {}).get("reason")
                if note:
                    warnings[case_id] = note
            else:
                failed[case_id] = error
                logger.error("case %s failed: %s", case_id, error)
            bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            pool.close()
            pool.join()
    datalist = write_datalist(
        out_root, scheme=split, seed=seed, fractions=fractions, extra={"protocol": protocol.to_dict()}
    )
    write_case_list(out_root / FAILED_NAME, failed)
    write_case_list(out_root / SKIPPED_NAME, skipped_sources)
    return {
        "prepared": sorted(prepared),
        "already_done": sorted(already),
        "skipped": skipped_sources,
        "failed": failed,
        "warnings": warnings,
        "datalist": str(datalist),
    }


def format_summary(summary: dict) -> str:
    """Human-readable summary of :func:`prepare`'s result."""
    lines = [
        f"prepared {len(summary['prepared'])}, already done {len(summary['already_done'])}, "
        f"failed {len(summary['failed'])}, sources skipped {len(summary['skipped'])}",
        f"datalist: {summary['datalist']}",
    ]
    for item in summary["skipped"]:
        lines.append(f"  SKIPPED {item['path']}: {item['reason']}")
    for case_id, note in sorted(summary.get("warnings", {}).items()):
        lines.append(f"  WARNING {case_id}: {note}")
    for case_id, reason in sorted(summary["failed"].items()):
        lines.append(f"  FAILED {case_id}: {reason}")
    return "\n".join(lines)


def main(
    src: str,
    out: str,
    workers: int = 1,
    format: str | Sequence[str] = "nifti",
    split: str = "auto",
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    **protocol: object,
) -> int:
    """Command line of ``scripts/prepare_data.py`` (see its ``--help``). Returns the exit code:
    0 when every case succeeded, 1 when some failed (the others are still written).

    Protocol settings are any field of :class:`~duolift_bundle.geometry.Protocol` (``--size 64``,
    ``--spacing``, ``--crop_size``, ``--z_anchor center``, ``--lazy``, ``--noremove_table``,
    ``--normalize fixed``, ``--flip_frontal``, ``--sad`` ...); their defaults are X2CT's 128^3
    protocol. ``--format x2ct-h5`` also writes X2CT-GAN's HDF5 file per case."""
    formats = (format,) if isinstance(format, str) else tuple(format)
    formats = tuple(dict.fromkeys(("nifti",) + tuple(f.strip() for fs in formats for f in str(fs).split(","))))
    summary = prepare(
        src,
        out,
        Protocol.build(**protocol),
        formats,
        workers=workers,
        overwrite=overwrite,
        split=split,
        seed=seed,
        progress=progress,
    )
    print(format_summary(summary))
    return 1 if summary["failed"] else 0
