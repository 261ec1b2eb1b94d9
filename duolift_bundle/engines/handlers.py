"""Ignite handlers of the training workflow: best-model selection, seeding, the validation curve,
the time budget (finding checkpoints: :mod:`duolift_bundle.engines.resume`).

Full checkpoints are Ignite's own ``Checkpoint`` with ``DiskSaver(atomic=True)`` (wired in
``configs/train.yaml``; MONAI's ``CheckpointSaver`` uses ``atomic=False``, so a killed run could
leave a truncated file), loaded back for ``--resume`` by MONAI's ``CheckpointLoader``.
:class:`BestModelSaver` writes the generator's bare ``state_dict`` to one fixed file name
(``model.pt``, what inference loads); Ignite's ``Checkpoint`` with a score function names files by
score and would delete the previous best before writing the new one, so it keeps its own writer
(atomic, through :func:`duolift_bundle.io_utils.atomic_path`).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from typing import Any, Callable, Mapping, Optional, Sequence

import ignite.distributed as idist
import torch
from duolift_bundle.errors import ConfigError, MissingKeyError
from duolift_bundle.io_utils import atomic_path, read_json, write_json
from duolift_bundle.networks.loading import unwrap
from ignite.engine import Engine, Events

__all__ = [
    "BestModelSaver",
    "FinalModelSaver",
    "ValidationCurve",
    "read_validation_curve",
    "log_run_weights",
    "EpochSeedHandler",
    "TimeBudget",
    "is_main_process",
    "save_atomic",
]

logger = logging.getLogger(__name__)


def is_main_process() -> bool:
    """True outside ``torch.distributed`` or on rank 0: only that process writes files."""
    return idist.get_rank() == 0


def save_atomic(obj: Any, path: str) -> None:
    """``torch.save`` to ``path`` through a temporary file renamed into place."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


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

    def __init__(
        self, network: torch.nn.Module, filepath: str, key_metric: str = "val_psnr", mode: str = "max"
    ) -> None:
        if mode not in ("max", "min"):
            raise ConfigError(f"mode must be 'max' or 'min', got {mode!r}")
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
            save_atomic(unwrap(self.network).state_dict(), self.filepath)

    def __call__(self, engine: Engine) -> None:
        if self.key_metric not in engine.state.metrics:
            raise MissingKeyError(
                f"validation metric {self.key_metric!r} not computed; metrics are {sorted(engine.state.metrics)}"
            )
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


def log_run_weights(filepath: str) -> None:
    """The last line of a training run: where its generator is and how inference takes it (the
    run's weights stay in its own folder; ``models/`` holds the shipped ones)."""
    if not is_main_process():
        return
    if os.path.isfile(filepath):
        logger.info("this run's generator: %s (inference: --ckpt_path %s)", filepath, filepath)
    else:  # never name a file that is not there
        logger.warning("this run wrote no generator (%s does not exist): it trained no epoch", filepath)


class FinalModelSaver:
    """Trainer handler: when training completes without any validation, write the final
    generator where ``saver`` (a :class:`BestModelSaver` on the evaluator) writes the best one.
    (MONAI's ``CheckpointSaver(save_final=True)`` writes a final file on every run, under its own
    name, and not atomically; here the final weights are written only when no best exists.)"""

    def __init__(self, saver: BestModelSaver) -> None:
        self.saver = saver

    def attach(self, engine: Engine) -> None:
        self.saver.attach_final(engine)


class ValidationCurve:
    """Attach to the validation evaluator: after each validation, add ``{metric: value}`` of that
    epoch, the generator's learning rate and the seconds the run has trained so far to
    ``filepath`` (``<output_dir>/validation_curve.json``, written atomically), the file the
    records of shipped models read (:func:`read_validation_curve`). A resumed run adds to the
    curve it finds, its seconds counted on from the last entry.

    Args:
        filepath: the JSON file.
        optimizer: the generator's optimizer (its first group's learning rate is recorded).
        clock: the time source in seconds (tests pass a fake one).
    """

    def __init__(self, filepath: str, optimizer: Any = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.filepath = str(filepath)
        self.optimizer = optimizer
        self.clock = clock
        self._start: Optional[float] = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if not is_main_process():
            return
        now = self.clock()
        curve = read_validation_curve(self.filepath) if os.path.isfile(self.filepath) else {}
        epoch = int(engine.state.epoch)
        earlier = [e for e in curve if int(e) < epoch]
        if self._start is None:  # this process's first validation: go on from the curve's last entry
            self._start = now - (float(curve[max(earlier, key=int)]["seconds"]) if earlier else 0.0)
        entry = {name: float(value) for name, value in engine.state.metrics.items()}
        if self.optimizer is not None:
            entry["lr"] = float(self.optimizer.param_groups[0]["lr"])
        entry["seconds"] = round(now - self._start, 1)
        curve = {e: v for e, v in curve.items() if int(e) < epoch}  # a repeated epoch replaces its entry
        curve[str(epoch)] = entry
        write_json(self.filepath, {"epochs": curve})


def read_validation_curve(filepath: str) -> dict[str, dict[str, float]]:
    """``{epoch: {metric: value, "lr", "seconds"}}`` of a :class:`ValidationCurve` file."""
    return dict(read_json(filepath)["epochs"])


class EpochSeedHandler:
    """Reseed Python, NumPy and torch with ``seed + epoch`` when each epoch starts.

    Dropout and any random transform of epoch e then depend only on (seed, e), not on how many
    random numbers earlier epochs drew, so a run resumed from a checkpoint at the end of epoch e
    repeats exactly what an uninterrupted run does in epoch e + 1 (together with a
    ``DistributedSampler``, whose shuffle is seeded by ``seed + epoch`` too). A run resumed in the
    middle of an epoch takes back the random state of the moment it stopped after this reseeding
    (:class:`~duolift_bundle.engines.trainer.DuoLiftTrainer`'s state). Datasets given in
    ``datasets`` that have ``set_epoch`` (:class:`~duolift_bundle.datasets.augmentation.AugmentedDataset`)
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


class TimeBudget:
    """Fit a training run into ``budget_s`` seconds of wall clock, learning-rate drop included.

    A run with a hard time limit (a lent GPU, a cluster job) that is simply stopped at the limit
    never reaches its learning-rate milestones. After each epoch this handler takes the time of
    that epoch (validation included when it is attached after the validation handler), sets
    ``engine.state.max_epochs`` to the epochs that still fit (never more than configured) and
    moves each ``MultiStepLR`` milestone not yet passed to the same fraction of the new length that
    it had of the configured one (``lr_milestone / max_epochs``), always after the current epoch.
    Ignite's ``TimeLimit`` only stops a run; it does not move the schedule, hence this handler.

    Args:
        budget_s: seconds from the start of this run (a resumed run gets a new budget); ``None`` or
            ``<= 0``: no budget, the handler does nothing.
        schedulers: ``torch.optim.lr_scheduler.MultiStepLR`` objects (``None`` entries are skipped).
        clock: the time source in seconds (tests pass a fake one).
    """

    def __init__(
        self, budget_s: Optional[float], schedulers: Sequence = (), clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.budget_s = float(budget_s) if budget_s else 0.0
        self.schedulers = [s for s in schedulers if s is not None]
        for s in self.schedulers:
            if not isinstance(s, torch.optim.lr_scheduler.MultiStepLR):
                raise ConfigError(f"TimeBudget moves MultiStepLR milestones; got {type(s).__name__}")
        self.clock = clock
        self._start = self._last = 0.0
        self._max_epochs = 0
        self._plans: list[list[list[int]]] = []  # per scheduler: [configured milestone, where it is now]

    def attach(self, engine: Engine) -> None:
        if self.budget_s <= 0:
            return
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)

    def _started(self, engine: Engine) -> None:
        self._start = self._last = self.clock()
        self._max_epochs = int(engine.state.max_epochs)
        self._plans = [[[m, m] for m in sorted(s.milestones.elements())] for s in self.schedulers]

    def _epoch_completed(self, engine: Engine) -> None:
        now = self.clock()
        epoch_s, self._last = now - self._last, now
        epoch = int(engine.state.epoch)
        fit = epoch + int(max(0.0, self.budget_s - (now - self._start)) // max(epoch_s, 1e-9))
        new_max = max(epoch, min(self._max_epochs, fit))
        if new_max != engine.state.max_epochs:
            logger.info(
                "TimeBudget: %.1f s per epoch, %.0f of %.0f s used: %d epochs in all",
                epoch_s,
                now - self._start,
                self.budget_s,
                new_max,
            )
            engine.state.max_epochs = new_max
        for sched, plan in zip(self.schedulers, self._plans):
            for entry in plan:
                configured, current = entry
                if current > sched.last_epoch:  # not passed yet: follow the new length
                    entry[1] = min(
                        max(sched.last_epoch + 1, round(configured * new_max / self._max_epochs)),
                        max(new_max, sched.last_epoch + 1),
                    )
            sched.milestones = Counter(entry[1] for entry in plan)
