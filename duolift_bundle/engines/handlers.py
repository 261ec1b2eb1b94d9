"""Ignite handlers of the training workflow: best-model selection, seeding, finding checkpoints.

Full checkpoints are Ignite's own ``Checkpoint`` with ``DiskSaver(atomic=True)`` (wired in
``configs/train.yaml``; MONAI's ``CheckpointSaver`` uses ``atomic=False``, so a killed run could
leave a truncated file), loaded back for ``--resume`` by MONAI's ``CheckpointLoader``.
:class:`BestModelSaver` writes the generator's bare ``state_dict`` to one fixed file name
(``model.pt``, what inference loads); Ignite's ``Checkpoint`` with a score function names files by
score and would delete the previous best before writing the new one, so it keeps its own writer
(atomic, through :func:`duolift_bundle.io_utils.atomic_path`).
"""

from __future__ import annotations

import glob
import logging
import os
import re
from typing import Any, Callable, Mapping, Optional, Sequence

import torch
import ignite.distributed as idist
from ignite.engine import Engine, Events

from duolift_bundle.networks.loading import unwrap
from duolift_bundle.io_utils import atomic_path

__all__ = [
    "BestModelSaver",
    "FinalModelSaver",
    "EpochSeedHandler",
    "latest_checkpoint",
    "CHECKPOINT_FILENAME_PATTERN",
    "epoch_of",
    "is_main_process",
]

logger = logging.getLogger(__name__)

#: Ignite ``Checkpoint`` file name pattern of the full checkpoints (``checkpoint_epoch=0007.pt``)
CHECKPOINT_FILENAME_PATTERN = "{name}_epoch={global_step:04d}.{ext}"
_CHECKPOINT_RE = re.compile(r"checkpoint_epoch=(\d+)\.pt$")


def is_main_process() -> bool:
    """True outside ``torch.distributed`` or on rank 0: only that process writes files."""
    return idist.get_rank() == 0


def _save_atomic(obj: Any, path: str) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def epoch_of(engine: Engine, event: Any = None) -> int:
    """``global_step_transform`` of the full checkpoints: the trainer's epoch."""
    return int(engine.state.epoch)


def latest_checkpoint(ckpt_dir: str) -> str:
    """Path of the newest full checkpoint (highest epoch) in ``ckpt_dir``; a clear error if none."""
    found = []
    for path in glob.glob(os.path.join(glob.escape(str(ckpt_dir)), "checkpoint_epoch=*.pt")):
        m = _CHECKPOINT_RE.search(os.path.basename(path))
        if m:
            found.append((int(m.group(1)), path))
    if not found:
        raise FileNotFoundError(
            f"--resume: no full checkpoint (checkpoint_epoch=NNNN.pt) in {os.path.abspath(ckpt_dir)}; "
            "start without --resume, or point --output_dir (or --checkpoint_dir) at the run to continue"
        )
    return max(found)[1]


class BestModelSaver:
    """Attach to the validation evaluator: when ``key_metric`` improves, write the generator's
    ``state_dict`` (unwrapped from DDP / wrappers) atomically to ``filepath`` (``models/model.pt``,
    what inference loads). With :meth:`attach_final` a trainer that never validated still leaves
    its final weights there. Its ``state_dict`` (the best value so far) goes into the full
    checkpoint, so a resumed run keeps comparing against the right best.

    Args:
        network: the generator (or a wrapper of it).
        filepath: where to write the weights.
        key_metric: name of the evaluator metric (``engine.state.metrics``).
        mode: "max" (PSNR, SSIM) or "min".
    """

    def __init__(self, network: torch.nn.Module, filepath: str, key_metric: str = "val_psnr", mode: str = "max") -> None:
        if mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {mode!r}")
        self.network = network
        self.filepath = str(filepath)
        self.key_metric = key_metric
        self.mode = mode
        self.best: Optional[float] = None
        self.best_epoch: int = -1
        self._better: Callable[[float, float], bool] = (lambda a, b: a > b) if mode == "max" else (lambda a, b: a < b)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def attach_final(self, trainer: Engine) -> None:
        trainer.add_event_handler(Events.COMPLETED, self._final)


    def _write(self) -> None:
        if is_main_process():
            _save_atomic(unwrap(self.network).state_dict(), self.filepath)

    def __call__(self, engine: Engine) -> None:
        if self.key_metric not in engine.state.metrics:
            raise KeyError(f"validation metric {self.key_metric!r} not computed; metrics are {sorted(engine.state.metrics)}")
        value = float(engine.state.metrics[self.key_metric])
        if self.best is None or self._better(value, self.best):
            self.best, self.best_epoch = value, int(engine.state.epoch)
            self._write()
            logger.info("best %s = %.4f at epoch %d: wrote %s", self.key_metric, value, self.best_epoch, self.filepath)

    def _final(self, engine: Engine) -> None:
        if self.best is None:
            self._write()
            logger.info("no validation ran: wrote the final generator to %s", self.filepath)

    def state_dict(self) -> dict:
        return {"best": self.best, "best_epoch": self.best_epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.best = state["best"]
        self.best_epoch = state["best_epoch"]


class FinalModelSaver:
    """Trainer handler: when training completes without any validation, write the final
    generator where ``saver`` (a :class:`BestModelSaver` on the evaluator) writes the best one."""

    def __init__(self, saver: BestModelSaver) -> None:
        self.saver = saver

    def attach(self, engine: Engine) -> None:
        self.saver.attach_final(engine)


class EpochSeedHandler:
    """Reseed Python, NumPy and torch with ``seed + epoch`` when each epoch starts.

    Dropout and any random transform of epoch e then depend only on (seed, e), not on how many
    random numbers earlier epochs drew, so a run resumed from a checkpoint at the end of epoch e
    repeats exactly what an uninterrupted run does in epoch e + 1 (together with a
    ``DistributedSampler``, whose shuffle is seeded by ``seed + epoch`` too). Datasets given in
    ``datasets`` that have ``set_epoch`` (:class:`~duolift_bundle.data.augmentation.AugmentedDataset`)
    are told the epoch too.
    """

    def __init__(self, seed: int, datasets: Sequence | None = None) -> None:
        self.seed = int(seed)
        self.datasets = [d for d in (datasets or []) if hasattr(d, "set_epoch")]

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        from monai.utils import set_determinism

        set_determinism(seed=self.seed + int(engine.state.epoch))
        for dataset in self.datasets:
            dataset.set_epoch(int(engine.state.epoch))
