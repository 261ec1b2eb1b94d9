"""Finding the cases in a source tree: the one discovery of the bundle, and a loud one.

Used by the preparation (``scripts/prepare_data.py``), the raw-CT dataset route of the training
configs and inference. A source is one of: a single CT file (NIfTI / MHD / NRRD); a folder
holding one DICOM series; a folder of NIfTI files; a folder tree of DICOM series; a LIDC-IDRI
download in TCIA's layout (``LIDC-IDRI/LIDC-IDRI-0001/<study>/<series>/*.dcm``); and, for
inference (``xray_cases=True``), folders of radiographs named ``frontal*`` / ``lateral*``.

Symbolic links to folders or files are followed (common on shared clusters), each real folder
once, so a link loop ends. Nothing is dropped silently: every folder that is not taken is listed
in :attr:`Discovery.skipped` with its reason (an empty folder, a folder with no image files, a
DICOM series that is not a CT, such as LIDC's DX / CR radiographs, SEG and SR objects beside the
CT). Volume files named like label maps (``*_label``, ``*_mask``, ``*_seg`` ...) are not CTs.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from duolift_bundle.constants import view_names
from duolift_bundle.errors import DuoLiftError
from duolift_bundle.inputs.ct_io import ITK_SUFFIXES, NIFTI_SUFFIXES, is_dicom_file, is_volume_file
from duolift_bundle.inputs.radiograph_io import find_view_files

__all__ = [
    "CaseSource",
    "Discovery",
    "discover_cases",
    "is_dicom_file",
    "holds_dicom",
    "case_id_from_path",
    "LABEL_SUFFIXES",
    "InputNotFoundError",
    "NoCaseFoundError",
    "lidc_patient_id",
]

logger = logging.getLogger(__name__)

_LIDC = re.compile(r"LIDC-IDRI-\d{4}")


def lidc_patient_id(case_id: str) -> str | None:
    """``"LIDC-IDRI-0256"`` from any case id or path containing it, else None (a case's patient:
    the preparation groups cases by it, the splits keep a patient's cases together)."""
    m = _LIDC.search(case_id)
    return m.group(0) if m else None


class InputNotFoundError(DuoLiftError, FileNotFoundError):
    """The source given (``--input_dir``, ``--dataset_dir`` ...) does not exist."""


class NoCaseFoundError(DuoLiftError, ValueError):
    """A source that holds no usable case; the message lists what was skipped and why."""


#: volume files whose stem ends like this are label maps beside a CT, not CTs
LABEL_SUFFIXES = ("_label", "_labels", "_mask", "_seg", "_segmentation")


@dataclass
class CaseSource:
    """One case: its id and where its data is.

    ``kind`` is ``"ct"`` (``path`` a CT file or DICOM series folder; ``series`` optionally names
    the series; ``labels`` extra label volumes, e.g. a phantom's ground truth) or ``"xray"``
    (``views`` maps ``"frontal"`` / ``"lateral"`` to radiograph files). ``error`` says why a
    radiograph folder cannot be used (a view the model needs is missing): the case is still
    listed, so that a batch reports it beside the others instead of refusing them all.
    """

    case_id: str
    path: str
    series: str | None = None
    labels: dict[str, str] = field(default_factory=dict)
    kind: str = "ct"
    views: dict[str, str] = field(default_factory=dict)
    error: str | None = None


@dataclass
class Discovery:
    """The cases found under a source, and every folder that was not taken, with its reason."""

    source: str
    cases: list[CaseSource] = field(default_factory=list)
    skipped: list[dict] = field(default_factory=list)  # {"path": ..., "reason": ...}

    def skip(self, path: str, reason: str) -> None:
        self.skipped.append({"path": path, "reason": reason})
        logger.warning("%s: skipped, %s", path, reason)


def holds_dicom(folder: str | os.PathLike, probe: int = 20) -> bool:
    """True when one of the first ``probe`` files of ``folder`` is a DICOM file."""
    folder = os.fspath(folder)
    names = sorted(n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n)))[:probe]
    return any(is_dicom_file(os.path.join(folder, n)) for n in names)


def case_id_from_path(path: str) -> str:
    """File name without volume suffixes, made safe as a folder name."""
    name = os.path.basename(os.path.normpath(path))
    for suffix in NIFTI_SUFFIXES + ITK_SUFFIXES:
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "case"


def _is_label_name(name: str) -> bool:
    return case_id_from_path(name).lower().endswith(LABEL_SUFFIXES)


def _modality(folder: str, files: list[str]) -> str:
    import pydicom

    for name in files[:3]:
        try:
            ds = pydicom.dcmread(os.path.join(folder, name), stop_before_pixels=True, specific_tags=["Modality"])
            return str(getattr(ds, "Modality", "")).upper()
        except Exception:  # unreadable header: the CT loader reports it with the file name
            continue
    return ""


def _xray_case(folder: str, views: int) -> CaseSource:
    files = find_view_files(folder)
    wanted = view_names(views)
    missing = [v for v in wanted if v not in files]
    if missing:
        error = (
            f"{folder}: the {views}-view model needs {' and '.join(wanted)} X-rays; no {', '.join(missing)}* file "
            f"(found {', '.join(Path(p).name for p in files.values())})"
        )
        logger.warning("%s", error)
        return CaseSource(Path(folder).name, folder, kind="xray", error=error)
    return CaseSource(Path(folder).name, folder, kind="xray", views={v: files[v] for v in wanted})


def discover_cases(src: str | os.PathLike, xray_cases: bool = False, views: int = 2) -> Discovery:
    """All cases under ``src`` (see the module docstring), sorted by case id.

    Args:
        src: a file or folder.
        xray_cases: also take folders of ``frontal*`` / ``lateral*`` radiographs (inference);
            ``views`` says which views such a folder must hold.

    A radiograph folder that lacks a view the model needs is a case with ``error`` set.

    Raises:
        InputNotFoundError: ``src`` does not exist.
        NoCaseFoundError: nothing usable was found (the message lists what was skipped and why).
    """
    src = os.path.abspath(os.fspath(src))
    found = Discovery(src)
    if not os.path.exists(src):
        raise InputNotFoundError(f"{src}: no such file or folder")
    if os.path.isfile(src):
        if not is_volume_file(src):
            raise NoCaseFoundError(f"{src}: not a CT volume file (NIfTI / MHD / NRRD) nor a folder")
        found.cases.append(CaseSource(case_id_from_path(src), src))
        return found
    visited: set[str] = set()
    for folder, dirs, files in os.walk(src, followlinks=True):
        real = os.path.realpath(folder)
        if real in visited:  # a second link to the same folder, or a link loop
            found.skip(folder, f"a link to {real}, which is already taken")
            dirs[:] = []
            continue
        visited.add(real)
        dirs.sort()
        files = sorted(f for f in files if not f.startswith("."))
        if xray_cases and find_view_files(folder):
            found.cases.append(_xray_case(folder, views))
            dirs[:] = []
            continue
        dicoms = [f for f in files if is_dicom_file(os.path.join(folder, f))]
        volumes = [f for f in files if is_volume_file(f) and not _is_label_name(f)]
        if dicoms:
            modality = _modality(folder, dicoms)
            if modality and modality != "CT":
                found.skip(folder, f"DICOM modality {modality} ({len(dicoms)} files), not a CT series")
            else:
                rel = os.path.relpath(folder, os.path.dirname(src))
                pid = lidc_patient_id(rel)
                found.cases.append(CaseSource(pid if pid else re.sub(r"[^A-Za-z0-9._-]+", "_", rel), folder))
        found.cases.extend(CaseSource(case_id_from_path(f), os.path.join(folder, f)) for f in volumes)
        if not dicoms and not volumes and not dirs:
            if not files:
                found.skip(folder, "empty folder")
            elif folder != src or not found.cases:
                shown = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
                found.skip(folder, f"no CT (DICOM series or volume file) among its {len(files)} file(s): {shown}")
    if not found.cases:
        looked = "radiograph folders (frontal* / lateral*), " if xray_cases else ""
        reasons = "; ".join(f"{s['path']}: {s['reason']}" for s in found.skipped[:5])
        raise NoCaseFoundError(
            f"{src}: no case found (looked for {looked}DICOM CT series and {NIFTI_SUFFIXES + ITK_SUFFIXES} files)"
            + (f"; skipped {reasons}" if reasons else "")
        )
    # a LIDC patient with two CT series, or two files with one stem: disambiguate with a path hash
    counts: dict[str, int] = {}
    for c in found.cases:
        counts[c.case_id] = counts.get(c.case_id, 0) + 1
    for c in found.cases:
        if counts[c.case_id] > 1:
            c.case_id = f"{c.case_id}_{hashlib.sha1(c.path.encode()).hexdigest()[:6]}"
    found.cases.sort(key=lambda c: c.case_id)
    return found
