"""Atomic file and folder writing (temporary name + ``os.replace``), and small JSON helpers.

Every output of the bundle goes through here so that an interrupted run never leaves a
half-written NIfTI, checkpoint, datalist or case folder behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from duolift_bundle.errors import DuoLiftError

__all__ = [
    "atomic_path",
    "atomic_dir",
    "write_json",
    "read_json",
    "write_case_list",
    "check_writable",
    "OutputNotWritableError",
]


class OutputNotWritableError(DuoLiftError, PermissionError):
    """An output folder that cannot be created or written to."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _tmp_name(target: Path, suffix: str = "") -> Path:
    fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=f".tmp{suffix}", dir=target.parent)
    os.close(fd)
    return Path(name)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[str]:
    """Yield a temporary file name beside ``path``; on success it replaces ``path`` atomically.

    The temporary name keeps the target's suffixes (e.g. ``.nii.gz``) so writers that pick the
    format from the name behave as for the final file. On error the temporary file is removed.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(target.suffixes)
    tmp = _tmp_name(target, suffix)
    try:
        yield str(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual file mode
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary folder beside ``path``; on success it becomes ``path`` (replacing an old one).

    On error the temporary folder is deleted, so a folder named ``path`` only ever exists complete.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp creates 0700
        if target.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.parent))
            os.replace(target, old / "x")
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_json(path: str | os.PathLike, obj) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    with atomic_path(path) as tmp, open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=False)
        f.write("\n")


def read_json(path: str | os.PathLike):
    with open(path) as f:
        return json.load(f)


def write_case_list(path: str | os.PathLike, cases: dict[str, Any] | list[Any]) -> None:
    """Write a list of cases (``failed.json``'s ``{case: reason}``, ``skipped.json``'s entries)
    atomically when it holds a case;
    remove a stale file of an earlier run otherwise. The one writer of failed cases: preparation,
    inference and evaluation all list theirs through it."""
    target = Path(path)
    if cases:
        write_json(target, cases)
    elif target.exists():
        target.unlink()


def check_writable(folder: str | os.PathLike) -> bool:
    """Create ``folder`` if needed and make sure files can be written there (before any case runs)."""
    folder = os.fspath(folder)
    try:
        os.makedirs(folder, exist_ok=True)
        with atomic_path(os.path.join(folder, ".write_test")) as tmp:
            Path(tmp).write_bytes(b"")
        os.remove(os.path.join(folder, ".write_test"))
    except OSError as err:
        raise OutputNotWritableError(f"{folder}: output folder is not writable ({err.strerror or err})") from err
    return True
