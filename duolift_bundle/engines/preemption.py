"""Training that survives preemption: SIGTERM / SIGINT -> a full checkpoint -> exit 128 + signal.

A scheduler (Slurm, Kubernetes, torchrun's agent) sends SIGTERM and kills the job some seconds
later (Slurm's ``KillWait`` and torchrun's agent: 30 s by default). :class:`Preemption` turns
that signal, or a Ctrl-C, into a full checkpoint at the next iteration boundary where nothing is
pending: not inside a gradient-accumulation window, and at an epoch's end only after its
validation, its learning-rate step and its regular checkpoint. The run then ends without the
handlers of a finished run (no final ``model.pt``, no final checkpoint), and :meth:`Preemption.exit`
(``train.yaml``'s ``finalize``) ends the process with the conventional code 128 + signal (143 for
SIGTERM, 130 for SIGINT). The same command with ``--resume auto`` continues it, reproducing the
uninterrupted run (:mod:`duolift_bundle.engines.resume`). A second Ctrl-C acts as it did before
(``KeyboardInterrupt`` at once); a repeated SIGTERM is absorbed (torchrun's agent sends its
workers two in a row; a scheduler that will not wait follows with SIGKILL).
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from typing import Any, Mapping, Optional, Sequence

import ignite.distributed as idist
import torch
from duolift_bundle.engines.handlers import is_main_process, save_atomic
from duolift_bundle.engines.resume import CHECKPOINT_FILENAME_PATTERN, interrupted_checkpoint_name, remove_superseded
from duolift_bundle.errors import ConfigError
from ignite.engine import Engine, Events

__all__ = ["Preemption", "SIGNALS"]

logger = logging.getLogger(__name__)

#: the signals a run turns into a checkpoint by default
SIGNALS = ("SIGTERM", "SIGINT")


def _state_of(obj: Any) -> Any:
    """``state_dict()`` of a checkpointed object, through a DDP / DataParallel wrapper (what
    Ignite's ``Checkpoint`` stores, so MONAI's ``CheckpointLoader`` reads both kinds of file)."""
    if isinstance(obj, (torch.nn.DataParallel, torch.nn.parallel.DistributedDataParallel)):
        obj = obj.module
    return obj.state_dict()


class Preemption:
    """Trainer handler: on SIGTERM / SIGINT write a full checkpoint at the next safe iteration
    boundary and stop the run (module docstring).

    Attach it after the regular checkpoint handler (``train.yaml`` does, in ``run``), so that at an
    epoch's end it acts after that epoch's checkpoint. Under ``torch.distributed`` every rank learns
    of a signal that any rank received (an all-reduce at each boundary), so all stop at the same
    iteration; rank 0 writes the file.

    Args:
        to_save: what a full checkpoint holds (``train#checkpoint_state`` plus the regular
            ``Checkpoint`` handler as ``checkpointer``): the same keys as an epoch checkpoint.
        dirname: the folder of the full checkpoints (``resume_dir``).
        accumulation_steps: the trainer's gradient-accumulation window; a checkpoint is written
            only where the window is closed (its gradients are not part of the checkpoint).
        signals: names of the signals handled.
    """

    def __init__(
        self,
        to_save: Mapping[str, Any],
        dirname: str,
        accumulation_steps: int = 1,
        signals: Sequence[str] = SIGNALS,
    ) -> None:
        unknown = [s for s in signals if not isinstance(getattr(signal, str(s), None), signal.Signals)]
        if unknown:
            raise ConfigError(f"unknown signal name(s) {unknown}; e.g. {list(SIGNALS)}")
        if accumulation_steps < 1:
            raise ConfigError(f"accumulation_steps must be >= 1, got {accumulation_steps}")
        self.to_save = dict(to_save)
        self.dirname = str(dirname)
        self.accumulation_steps = int(accumulation_steps)
        self.signals = [getattr(signal, str(s)) for s in signals]
        self.received: Optional[int] = None  # the first signal's number
        self.checkpoint: Optional[str] = None  # the file written on it
        self._previous: dict[int, Any] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._install)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration_completed)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        engine.add_event_handler(Events.COMPLETED, self._uninstall)
        engine.add_event_handler(Events.TERMINATE, self._uninstall)

    # -- signals ------------------------------------------------------------------------------
    def _install(self, engine: Engine) -> None:
        if threading.current_thread() is not threading.main_thread():
            logger.warning("training runs outside the main thread: SIGTERM / SIGINT will not write a checkpoint")
            return
        for sig in self.signals:
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def _uninstall(self, engine: Engine) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)
        self._previous = {}

    def _on_signal(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self.received is None:
            self.received = signum
            logger.warning(
                "%s received: a full checkpoint follows at the next iteration boundary, then the run stops%s",
                name,
                " (a second Ctrl-C stops at once)" if signum == signal.SIGINT else "",
            )
        if signum == signal.SIGINT:  # a person pressing Ctrl-C again means now
            signal.signal(signum, self._previous.get(signum, signal.default_int_handler))
        # a repeated SIGTERM is absorbed: torchrun's agent sends its workers two in a row, and a
        # scheduler that will not wait sends SIGKILL anyway

    def _requested(self) -> int:
        """The signal number to act on (0: none), the same on every rank."""
        number = self.received or 0
        if idist.get_world_size() > 1:
            number = int(idist.all_reduce(torch.tensor(number, device=idist.device()), op="MAX").item())
        return number

    # -- boundaries ---------------------------------------------------------------------------
    def _iteration_completed(self, engine: Engine) -> None:
        iteration, length = int(engine.state.iteration), engine.state.epoch_length
        if length and iteration % length == 0:
            return  # the epoch's end: act after its validation and checkpoint (EPOCH_COMPLETED)
        if iteration % self.accumulation_steps:
            return  # a gradient window is open
        self._stop_if_requested(engine, epoch_end=False)

    def _epoch_completed(self, engine: Engine) -> None:
        if is_main_process() and os.path.isdir(self.dirname):
            for path in remove_superseded(self.dirname):
                logger.info("removed %s: a newer checkpoint holds it", path)
        if engine.state.max_epochs is not None and engine.state.epoch >= engine.state.max_epochs:
            return  # the run is complete: let it finish as any run does
        self._stop_if_requested(engine, epoch_end=True)

    def _stop_if_requested(self, engine: Engine, epoch_end: bool) -> None:
        number = self._requested()
        if not number:
            return
        self.received = number
        regular = CHECKPOINT_FILENAME_PATTERN.format(name="checkpoint", global_step=int(engine.state.epoch), ext="pt")
        path = os.path.join(self.dirname, regular)
        if not (epoch_end and os.path.isfile(path)):  # else this epoch's checkpoint has just been written
            path = os.path.join(self.dirname, interrupted_checkpoint_name(engine.state.epoch, engine.state.iteration))
            self._write(path)
        self.checkpoint = path
        engine.terminate(skip_completed=True)  # not a finished run: no final weights, no final checkpoint

    def _write(self, path: str) -> None:
        if is_main_process():
            os.makedirs(self.dirname, exist_ok=True)
            save_atomic({name: _state_of(obj) for name, obj in self.to_save.items()}, path)
            remove_superseded(self.dirname)

    def exit(self) -> None:
        """After the run (``train.yaml``'s ``finalize``): the last line and exit code 128 + signal
        when a signal stopped it; nothing otherwise."""
        if self.received is None:
            return
        name = signal.Signals(self.received).name
        if self.checkpoint is None:
            logger.warning("%s received in the last epoch: the run finished", name)
            return
        logger.warning(
            "stopped by %s: full checkpoint %s; the same command with --resume auto continues the run",
            name,
            self.checkpoint,
        )
        raise SystemExit(128 + self.received)
