"""The last line a user reads: the bundle's error out of MONAI's wrappers (duolift_bundle/errors.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from duolift_bundle.data.xray_io import XRayInputError
from duolift_bundle.errors import DuoLiftError, error_line, user_error


def wrapped(inner: BaseException, depth: int) -> BaseException:
    """``inner`` raised under ``depth`` RuntimeErrors, as MONAI's ConfigExpression and Compose wrap it."""
    exc = inner
    for level in range(depth):
        try:
            raise RuntimeError(f"Failed to evaluate ConfigExpression {level}") from exc
        except RuntimeError as outer:
            exc = outer
    return exc


@pytest.mark.parametrize(
    "inner, depth, expected",
    [
        (XRayInputError("a/frontal.png: a RGB image"), 2, "error: XRayInputError: a/frontal.png: a RGB image"),
        (ValueError("plain cause"), 1, "error: ValueError: plain cause"),  # no bundle error: the root cause
        (XRayInputError("alone"), 0, None),  # nothing wraps it: the traceback's last line says it already
        (DuoLiftError("first\nsecond"), 1, "error: DuoLiftError: first\nsecond"),
    ],
)
def test_error_line_names_the_innermost_bundle_error(inner, depth, expected):
    assert error_line(wrapped(inner, depth)) == expected


def test_a_bundle_error_wins_over_a_deeper_os_error():
    """check_writable raises its own error from the OSError: the user reads the bundle's message."""
    try:
        try:
            raise NotADirectoryError(20, "Not a directory")
        except OSError as os_err:
            raise XRayInputError("x.png: unreadable") from os_err
    except XRayInputError as err:
        top = wrapped(err, 2)
    assert isinstance(user_error(top), XRayInputError)
    assert error_line(top) == "error: XRayInputError: x.png: unreadable"


def test_uncaught_error_ends_with_its_message():
    """A real interpreter: the traceback is kept and the bundle's message is the last line."""
    code = (
        "import duolift_bundle\n"
        "from duolift_bundle.data.ct_io import CTInputError\n"
        "try:\n    raise CTInputError('scan/1.dcm: series cut at slice 7')\n"
        "except CTInputError as e:\n    raise RuntimeError('Failed to evaluate ConfigExpression') from e\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == "error: CTInputError: scan/1.dcm: series cut at slice 7"
    assert "RuntimeError: Failed to evaluate ConfigExpression" in lines[-2]
