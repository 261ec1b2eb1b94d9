"""The bundle's user-facing errors, and the line a user reads last.

Every error the bundle raises for bad input or settings derives from :class:`DuoLiftError` (and
from the built-in type a caller would catch: ``ValueError``, ``FileNotFoundError`` ...). Its
message names the file or setting and what is wrong.

``python -m monai.bundle run`` evaluates configs through MONAI's ``ConfigExpression``, which wraps
any exception in ``RuntimeError: Failed to evaluate ConfigExpression ...``; a transform failure is
wrapped again in ``RuntimeError: applying transform ...``. The bundle's message then sits in the
middle of a long traceback. :func:`install_last_line_hook` (installed when the package is imported)
keeps Python's traceback and prints the innermost :class:`DuoLiftError` of the chain (else the
chain's root cause) once more as the very last line, ``error: <Type>: <message>``, and ends the
process there with status 1 (the interpreter's teardown could otherwise print after it). An
exception that wraps nothing is printed exactly as before.
"""

from __future__ import annotations

import logging
import os
import sys
from types import TracebackType
from typing import Optional

__all__ = ["DuoLiftError", "user_error", "error_line", "install_last_line_hook"]


class DuoLiftError(Exception):
    """Base of the bundle's errors about input, settings or files; the message is meant for the user."""


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


def _hook(exc_type: type[BaseException], exc: BaseException, tb: Optional[TracebackType]) -> None:
    _hook.previous(exc_type, exc, tb)  # type: ignore[attr-defined]
    line = error_line(exc)
    if line is not None:
        sys.stderr.flush()
        print(line, file=sys.stderr, flush=True)
        # end here, with status 1: the interpreter's teardown of a failed run can still print
        # after this line (a worker thread's native "terminate called ..."), and nothing is left
        # to clean up that matters once every output was written atomically
        logging.shutdown()
        sys.stdout.flush()
        os._exit(1)


def install_last_line_hook() -> None:
    """Chain :func:`sys.excepthook` so that an uncaught exception carrying a :class:`DuoLiftError`
    ends with that error's one-line message (idempotent)."""
    if sys.excepthook is _hook:
        return
    _hook.previous = sys.excepthook  # type: ignore[attr-defined]
    sys.excepthook = _hook
