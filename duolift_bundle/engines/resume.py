"""Where a training run continues from, and how it continues exactly.

Full checkpoints live in ``resume_dir`` under two names:

- ``checkpoint_epoch=0007.pt``: written by Ignite's ``Checkpoint`` when epoch 7 is complete
  (``configs/train.yaml``, every ``ckpt_interval`` epochs);
- ``checkpoint_epoch=0008_iteration=00000123.pt``: written by
  :class:`~duolift_bundle.engines.preemption.Preemption` when a SIGTERM / SIGINT stopped the run
  in epoch 8 after iteration 123 (or at the end of an epoch that had no regular checkpoint).

:func:`resume_checkpoint` picks the newest complete one; a run resumed from the middle of an epoch
skips the batches that epoch has already trained on (:class:`ResumableSampler`) and takes back the
random state of the moment it stopped (:func:`capture_rng` / :func:`restore_rng`, kept in the
trainer's state), so that it reproduces the uninterrupted run.
"""

from __future__ import annotations

import glob
import logging
import math
import os
import random
import re
import zipfile
from typing import Any, Iterator, Optional

import numpy as np
import torch
from duolift_bundle.errors import ConfigError, MissingFileError
from ignite.engine import Engine
from torch.utils.data import DistributedSampler

__all__ = [
    "CHECKPOINT_FILENAME_PATTERN",
    "RESUME_MODES",
    "epoch_of",
    "interrupted_checkpoint_name",
    "newest_complete_checkpoint",
    "latest_checkpoint",
    "resume_checkpoint",
    "remove_superseded",
    "capture_rng",
    "restore_rng",
    "ResumableSampler",
]

logger = logging.getLogger(__name__)

#: Ignite ``Checkpoint`` file name pattern of the epoch checkpoints (``checkpoint_epoch=0007.pt``)
CHECKPOINT_FILENAME_PATTERN = "{name}_epoch={global_step:04d}.{ext}"
_CHECKPOINT_RE = re.compile(r"checkpoint_epoch=(\d+)(?:_iteration=(\d+))?\.pt$")

#: the values of ``--resume``: no, yes (a checkpoint must be there), or whichever applies
RESUME_MODES = (False, True, "auto")


def epoch_of(engine: Engine, event: Any = None) -> int:
    """``global_step_transform`` of the epoch checkpoints: the trainer's epoch."""
    return int(engine.state.epoch)


def interrupted_checkpoint_name(epoch: int, iteration: int) -> str:
    """File name of a checkpoint written in (or at the end of) ``epoch`` after ``iteration``."""
    return f"checkpoint_epoch={int(epoch):04d}_iteration={int(iteration):08d}.pt"


def _order(path: str) -> Optional[tuple[int, float]]:
    """(epoch, iteration) of a checkpoint name; an epoch checkpoint comes after every interrupted
    one of its epoch (it holds the whole epoch)."""
    m = _CHECKPOINT_RE.search(os.path.basename(path))
    if m is None:
        return None
    return int(m.group(1)), (float(m.group(2)) if m.group(2) else math.inf)


def _checkpoints(ckpt_dir: str) -> list[tuple[tuple[int, float], str]]:
    found = []
    for path in glob.glob(os.path.join(glob.escape(str(ckpt_dir)), "checkpoint_epoch=*.pt")):
        key = _order(path)
        if key is not None:
            found.append((key, path))
    return sorted(found, reverse=True)


def _complete(path: str) -> bool:
    """True for a checkpoint file written to its end: ``torch.save``'s zip archive opens and every
    member's CRC matches (a file cut short by a killed copy or a full disk does not)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError):
        return False


def newest_complete_checkpoint(ckpt_dir: str) -> Optional[str]:
    """The newest full checkpoint of ``ckpt_dir`` that is complete, or None; each newer file that
    is not complete is passed over with a warning. Files older than the answer are not read (a
    completeness check reads the whole file)."""
    for _, path in _checkpoints(ckpt_dir):
        if _complete(path):
            return path
        logger.warning("%s: an incomplete checkpoint (cut short while written?); not resumed from", path)
    return None


def latest_checkpoint(ckpt_dir: str) -> str:
    """Path of the newest complete full checkpoint in ``ckpt_dir``; a clear error if none. A newest
    file that is not complete is passed over, with a warning, for the one before."""
    newest = newest_complete_checkpoint(ckpt_dir)
    if newest is None:
        raise MissingFileError(
            f"--resume: no full checkpoint (checkpoint_epoch=NNNN.pt) in {os.path.abspath(ckpt_dir)}; "
            "start without --resume (or with --resume auto), or point --output_dir (or --resume_dir) at the run "
            "to continue"
        )
    return newest


def resume_checkpoint(resume: bool | str, ckpt_dir: str) -> Optional[str]:
    """The full checkpoint a run continues from (``train.yaml``'s ``resume``): None for
    ``resume=False``; the newest complete one for ``True`` (an error when there is none); for
    ``"auto"`` the newest complete one, or None with a warning when there is none yet, so that one
    job script serves the first start of a preemptible job and every restart."""
    if isinstance(resume, str) and resume.lower() in ("true", "false"):
        resume = resume.lower() == "true"
    if resume not in RESUME_MODES:
        raise ConfigError(f"resume must be one of {RESUME_MODES}, got {resume!r}")
    if resume is False:
        return None
    if resume is True:
        return latest_checkpoint(ckpt_dir)
    newest = newest_complete_checkpoint(ckpt_dir)
    if newest is None:
        logger.warning("--resume auto: no full checkpoint in %s yet; training starts fresh", os.path.abspath(ckpt_dir))
        return None
    logger.info("--resume auto: continuing from %s", newest)
    return newest


def remove_superseded(ckpt_dir: str) -> list[str]:
    """Delete the interrupted checkpoints that a newer checkpoint holds everything of: all but the
    newest interrupted one, and that one too once an epoch checkpoint is newer. (Ignite's
    ``Checkpoint`` prunes its own epoch files; the interrupted ones are not on its list.) Called
    after every epoch: with no interrupted file it reads nothing; otherwise it checks the
    completeness of the newer files only until one is complete. Returns the removed paths."""
    found = _checkpoints(ckpt_dir)
    if all(math.isinf(iteration) for (_, iteration), _ in found):
        return []
    removed = []
    newer_exists = False
    for (_, iteration), path in found:
        if not math.isinf(iteration) and newer_exists:
            os.remove(path)
            removed.append(path)
        elif not newer_exists:
            newer_exists = _complete(path)
    return removed


def capture_rng() -> dict[str, Any]:
    """The random state of Python, NumPy and torch (CPU, and every CUDA device when present) in
    types ``torch.load(weights_only=True)`` reads back (NumPy's key array as a tensor)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "kind": kind,
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any]) -> None:
    """Set the random state captured by :func:`capture_rng` (a CUDA state only where CUDA runs)."""
    random.setstate(_as_tuples(state["python"]))
    n = state["numpy"]
    np.random.set_state((n["kind"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _as_tuples(value: Any) -> Any:
    """``random.setstate`` wants tuples; a checkpoint may hand back lists."""
    if isinstance(value, (list, tuple)):
        return tuple(_as_tuples(v) for v in value)
    return value


class ResumableSampler(DistributedSampler):
    """``torch.utils.data.DistributedSampler`` (shuffle seeded by ``seed + epoch``) whose next
    epoch can start after its first ``n`` indices: a run resumed in the middle of an epoch then
    trains on exactly the batches the interrupted run had not reached.

    Ignite restarts an epoch's data iterator from its first batch when it resumes mid-epoch (its
    ``DeterministicEngine`` skips batches instead, but MONAI's trainers derive from ``Engine``),
    hence this sampler. It stays a ``DistributedSampler``, so MONAI's workflow still calls
    :meth:`set_epoch`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._skip = 0

    def skip_next(self, n: int) -> None:
        """Leave out the first ``n`` indices of the next epoch's order (this process's shard)."""
        if n < 0:
            raise ConfigError(f"cannot skip {n} samples")
        self._skip = int(n)

    def __iter__(self) -> Iterator[int]:
        indices = list(super().__iter__())
        skip, self._skip = self._skip, 0
        return iter(indices[skip:])
