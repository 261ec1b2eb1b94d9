"""The shipped files: weights and baselines whose sha256 the bundle records, and the guard that
keeps a workflow from writing over them.

The hashes are the model registry's (``models/registry.json``: every model, baseline and other
shipped file; :mod:`duolift_bundle.registry`). A file counts as shipped when its *content*
hashes to a registered value, wherever it lies: a copy of
``models/model.pt`` is as precious as the original, and a run's own ``model.pt`` is not shipped
even under ``models/``.

Training writes a run's weights under its ``output_dir`` (``train.yaml``: ``ckpt_dir``), so a
default run never comes near ``models/``; a ``--ckpt_dir`` pointing at a shipped file is refused
before the first iteration (:func:`refuse_shipped`) unless ``--replace_shipped True``.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from duolift_bundle.errors import DuoLiftError
from duolift_bundle.registry import REGISTRY, load_registry

__all__ = ["ShippedFileError", "file_sha256", "recorded_hashes", "refuse_shipped"]


class ShippedFileError(DuoLiftError, FileExistsError):
    """A workflow would write over a shipped file (its hash is recorded in the bundle)."""


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """The sha256 hex digest of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def recorded_hashes(bundle_root: str | os.PathLike) -> dict[str, str]:
    """``{sha256: "models/registry.json: <shipped file>"}`` of every file the registry lists
    (empty when ``bundle_root`` holds no registry: nothing there is shipped)."""
    if not (Path(bundle_root) / REGISTRY).is_file():
        return {}
    return {digest: f"{REGISTRY}: {file}" for file, digest in load_registry(bundle_root).shipped_files().items()}


def refuse_shipped(path: str | os.PathLike, bundle_root: str | os.PathLike, replace: bool = False) -> bool:
    """Raise :class:`ShippedFileError` if ``path`` holds a shipped file and ``replace`` is False.

    Returns True when ``path`` is free to write (absent, or not a shipped file), False when it is
    a shipped file that ``replace=True`` allows to be overwritten."""
    if not os.path.isfile(path):
        return True
    shipped = recorded_hashes(bundle_root).get(file_sha256(path))
    if shipped is None:
        return True
    if replace:
        return False
    raise ShippedFileError(
        f"{path}: this is a shipped file (sha256 recorded in {shipped}); a training run writes its "
        "weights under its --output_dir (the default --ckpt_dir), and will not overwrite shipped "
        "weights. To replace them on purpose, pass --replace_shipped True, or copy the run's "
        "<output_dir>/models/model.pt over it and re-record the hashes "
        f"(scripts/record_shipped_models.py writes them into {REGISTRY})"
    )
