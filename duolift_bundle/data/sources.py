"""Finding the cases in a source tree for preparation.

A source is one of: a single CT file (NIfTI / MHD / NRRD); a folder holding one DICOM series;
a folder of NIfTI files; a folder tree of DICOM series; or a LIDC-IDRI download in TCIA's layout
(``LIDC-IDRI/LIDC-IDRI-0001/<study>/<series>/*.dcm``), of which only CT series are taken (the
DX / CR radiographs, SEG and SR series that TCIA ships beside them are skipped). Volume files
named like label maps (``*_label``, ``*_mask``, ``*_seg`` ...) are not taken as CTs.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass, field

from duolift_bundle.data.ct_io import NIFTI_SUFFIXES, is_volume_file
from duolift_bundle.data.splits import lidc_patient_id

__all__ = ["CaseSource", "is_dicom_file", "discover_cases", "case_id_from_path"]


@dataclass
class CaseSource:
    """One case to prepare: where its CT is, and optional extra label volumes (phantoms)."""

    case_id: str
    path: str
    series: str | None = None
    labels: dict[str, str] = field(default_factory=dict)


def is_dicom_file(path: str) -> bool:
    """True when ``path`` is a file with the DICOM preamble (or a ``.dcm`` name)."""
    if not os.path.isfile(path):
        return False
    if path.lower().endswith(".dcm"):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def case_id_from_path(path: str) -> str:
    """File name without volume suffixes, made safe as a folder name."""
    name = os.path.basename(os.path.normpath(path))
    for suffix in NIFTI_SUFFIXES + (".mhd", ".mha", ".nrrd", ".nhdr"):
        if name.lower().endswith(suffix):
            name = name[: -len(suffix)]
            break
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "case"


#: volume files whose stem ends like this are label maps beside a CT, not CTs
LABEL_SUFFIXES = ("_label", "_labels", "_mask", "_seg", "_segmentation")


def _is_label_name(name: str) -> bool:
    return case_id_from_path(name).lower().endswith(LABEL_SUFFIXES)


def _modality(folder: str, files: list[str]) -> str:
    import pydicom

    for name in files[:3]:
        try:
            ds = pydicom.dcmread(os.path.join(folder, name), stop_before_pixels=True, specific_tags=["Modality"])
            return str(getattr(ds, "Modality", "")).upper()
        except Exception:  # unreadable header: let the loader report it properly
            continue
    return ""


def discover_cases(src: str | os.PathLike) -> list[CaseSource]:
    """All cases under ``src`` (see the module docstring), sorted by case id.

    Raises:
        FileNotFoundError: ``src`` does not exist.
        ValueError: nothing usable was found (the message says what was looked for).
    """
    src = os.path.abspath(os.fspath(src))
    if not os.path.exists(src):
        raise FileNotFoundError(f"{src}: no such file or folder")
    if os.path.isfile(src):
        if not is_volume_file(src):
            raise ValueError(f"{src}: not a CT volume file (NIfTI / MHD / NRRD) nor a DICOM folder")
        return [CaseSource(case_id_from_path(src), src)]
    cases: list[CaseSource] = []
    for folder, dirs, files in os.walk(src):
        dirs.sort()
        files.sort()
        dicoms = [f for f in files if is_dicom_file(os.path.join(folder, f))]
        if dicoms:
            modality = _modality(folder, dicoms)
            if modality and modality != "CT":
                continue  # e.g. LIDC's DX/CR radiographs, SEG, SR
            rel = os.path.relpath(folder, os.path.dirname(src))
            pid = lidc_patient_id(rel)
            case_id = pid if pid else re.sub(r"[^A-Za-z0-9._-]+", "_", rel)
            cases.append(CaseSource(case_id, folder))
        cases.extend(CaseSource(case_id_from_path(f), os.path.join(folder, f)) for f in files if is_volume_file(f) and not _is_label_name(f))
    if not cases:
        raise ValueError(f"{src}: no CT found (looked for DICOM CT series and {NIFTI_SUFFIXES + ('.mhd', '.mha', '.nrrd')} files)")
    # a LIDC patient with two CT series, or two files with one stem: disambiguate with a path hash
    seen: dict[str, int] = {}
    for c in cases:
        seen[c.case_id] = seen.get(c.case_id, 0) + 1
    for c in cases:
        if seen[c.case_id] > 1:
            c.case_id = f"{c.case_id}_{hashlib.sha1(c.path.encode()).hexdigest()[:6]}"
    return sorted(cases, key=lambda c: c.case_id)
