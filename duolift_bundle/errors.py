"""The bundle's user-facing errors, and the line a user reads last.

Every error the bundle raises for bad input or settings derives from :class:`DuoLiftError` (and
from the built-in type a caller would catch: ``ValueError``, ``FileNotFoundError`` ...). Its
message names the file or setting and what is wrong.

``python -m monai.bundle run`` evaluates configs through MONAI's ``ConfigExpression``, which wraps
any exception in ``RuntimeError: Failed to evaluate ConfigExpression ...``; a transform failure is
wrapped again in ``RuntimeError: applying transform ...``. The bundle's message then sits in the
middle of a long traceback. :func:`install_last_line_hook` keeps Python's traceback and prints
the innermost :class:`DuoLiftError` of the chain (else the chain's root cause) once more as the
last line, ``error: <Type>: <message>``; the interpreter then ends as usual (status 1, atexit
handlers such as MLflow's run end still run). An exception that wraps nothing is printed exactly
as before.

The hook is installed by the bundle's entry points (the configs' ``initialize``, the scripts'
``main`` blocks), never by importing the package: a host that imports it (the MONAI Label server,
a notebook) keeps its own ``sys.excepthook``.

:func:`failure_reason` is the one-line reason of a failed case, used by every batch that goes on
past a bad case (preparation, inference, evaluation).
"""

from __future__ import annotations

import sys
import threading
import time
from types import TracebackType
from typing import Optional

__all__ = [
    "DuoLiftError",
    "ConfigError",
    "ShapeError",
    "InputFileError",
    "MissingFileError",
    "MissingKeyError",
    "RunError",
    "user_error",
    "error_line",
    "failure_reason",
    "install_last_line_hook",
]


class DuoLiftError(Exception):
    """Base of the bundle's errors about input, settings or files; the message is meant for the user."""


class ConfigError(DuoLiftError, ValueError):
    """A setting (a config key, a spec's field, an argument a config passes) that is unknown or has
    a value the bundle cannot use; the message names the setting, the value and what is allowed."""


class ShapeError(DuoLiftError, ValueError):
    """An array or tensor of a shape the receiving step cannot take; the message gives both shapes."""


class InputFileError(DuoLiftError, ValueError):
    """A file (datalist, checkpoint, weights, volume) whose content the bundle cannot use; the
    message names the file."""


class MissingFileError(DuoLiftError, FileNotFoundError):
    """A file or folder the run needs is not there; the message names it and how to make it."""


class MissingKeyError(DuoLiftError, KeyError):
    """An entry a step needs (a datalist field, a batch key, a metric) is not there."""

    def __str__(self) -> str:  # KeyError would print the message as a quoted repr
        return str(self.args[0]) if self.args else ""


class RunError(DuoLiftError, RuntimeError):
    """The run's environment cannot do what was asked (not started by torchrun, a third-party
    model's classes changed)."""


def user_error(exc: Optional[BaseException]) -> Optional[BaseException]:
    """The error a user should read in ``exc``'s chain (``__cause__`` / ``__context__``): the
    innermost :class:`DuoLiftError`, else the innermost exception (the root cause under MONAI's
    wrappers); None for None."""
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ if exc.__cause__ is not None else exc.__context__
    ours = [e for e in chain if isinstance(e, DuoLiftError)]
    if ours:
        return ours[-1]
    return chain[-1] if chain else None


def error_line(exc: Optional[BaseException]) -> Optional[str]:
    """``"error: <Type>: <message>"`` of :func:`user_error`, when it is not ``exc`` itself (whose
    message is already the traceback's last line); None otherwise. A message of several lines (a
    list of missing files) keeps them."""
    err = user_error(exc)
    if err is None or err is exc:
        return None
    return f"error: {type(err).__name__}: {str(err).strip()}"


def failure_reason(exc: BaseException) -> str:
    """``"<Type>: <message>"`` on one line, of :func:`user_error` of ``exc`` (the bundle's own
    error under MONAI's ``applying transform`` / ``ConfigExpression`` wrappers, else the root cause)."""
    err = user_error(exc) or exc
    return " ".join(f"{type(err).__name__}: {err}".split())


def _settle_thread_pools(timeout_s: float = 30.0) -> None:
    """Wait (up to ``timeout_s`` in all) for the workers of ``multiprocessing.pool.ThreadPool``s to
    finish their task. A failed run can leave such daemon threads (MONAI's ``CacheDataset`` fills
    its cache with one) inside native code; if the interpreter shut down under them, the C++ runtime
    would abort with "terminate called without an active exception" after the bundle's last line.
    Other daemon threads (tqdm's monitor) never end by themselves and are left alone."""
    from multiprocessing.dummy import DummyProcess  # the thread class of ThreadPool's workers

    deadline = time.monotonic() + timeout_s
    for thread in threading.enumerate():
        if isinstance(thread, DummyProcess) and thread.is_alive():
            thread.join(max(0.0, deadline - time.monotonic()))


def _hook(exc_type: type[BaseException], exc: BaseException, tb: Optional[TracebackType]) -> None:
    _hook.previous(exc_type, exc, tb)  # type: ignore[attr-defined]
    line = error_line(exc)
    if line is not None:
        _settle_thread_pools()
        sys.stderr.flush()
        print(line, file=sys.stderr, flush=True)


def install_last_line_hook() -> None:
    """Chain :func:`sys.excepthook` so that an uncaught exception carrying a :class:`DuoLiftError`
    ends with that error's one-line message (idempotent)."""
    if sys.excepthook is _hook:
        return
    _hook.previous = sys.excepthook  # type: ignore[attr-defined]
    sys.excepthook = _hook
