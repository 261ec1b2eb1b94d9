"""The last line a user reads: the bundle's error out of MONAI's wrappers (duolift_bundle/errors.py)."""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import duolift_bundle
import pytest
from duolift_bundle.errors import DuoLiftError, error_line, failure_reason, user_error
from duolift_bundle.inputs.radiograph_io import XRayInputError


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
        "from duolift_bundle.errors import install_last_line_hook\n"
        "install_last_line_hook()\n"
        "from duolift_bundle.inputs.ct_io import CTInputError\n"
        "try:\n    raise CTInputError('scan/1.dcm: series cut at slice 7')\n"
        "except CTInputError as e:\n    raise RuntimeError('Failed to evaluate ConfigExpression') from e\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == "error: CTInputError: scan/1.dcm: series cut at slice 7"
    assert "RuntimeError: Failed to evaluate ConfigExpression" in lines[-2]


def test_importing_the_package_changes_no_hook():
    """A host that imports the bundle (MONAI Label, a notebook) keeps its own ``sys.excepthook``."""
    code = (
        "import sys\nbefore = sys.excepthook\n"
        "import duolift_bundle.engines, duolift_bundle.serving\nprint(sys.excepthook is before)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.stdout.strip().splitlines()[-1] == "True", result.stderr[-2000:]


def test_atexit_handlers_still_run_after_a_failure(tmp_path):
    """The hook ends nothing early: an atexit handler (MLflow's run end, a TensorBoard flush) runs
    after the failure, and the bundle's message is still the last line the user sees."""
    marker = tmp_path / "atexit_ran"
    code = (
        "import atexit, pathlib\n"
        f"atexit.register(lambda: pathlib.Path({str(marker)!r}).write_text('yes'))\n"
        "from duolift_bundle.errors import install_last_line_hook\n"
        "install_last_line_hook()\n"
        "from duolift_bundle.errors import ConfigError\n"
        "try:\n    raise ConfigError('views must be 1 or 2, got 3')\n"
        "except ConfigError as e:\n    raise RuntimeError('Failed to evaluate ConfigExpression') from e\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert marker.read_text() == "yes"
    assert result.stderr.strip().splitlines()[-1] == "error: ConfigError: views must be 1 or 2, got 3"


def test_failure_reason_is_one_line_of_the_bundle_error():
    inner = XRayInputError("a/frontal.png:\n  a RGB image")
    assert failure_reason(wrapped(inner, 2)) == "XRayInputError: a/frontal.png: a RGB image"
    assert failure_reason(ValueError("plain")) == "ValueError: plain"


def _package_modules() -> list:
    return [
        importlib.import_module(info.name)
        for info in pkgutil.walk_packages(duolift_bundle.__path__, prefix="duolift_bundle.")
    ]


def test_every_error_class_of_the_package_derives_from_the_bundle_error():
    classes = {
        obj
        for module in _package_modules()
        for _, obj in inspect.getmembers(module, inspect.isclass)
        if issubclass(obj, BaseException) and obj.__module__.startswith("duolift_bundle")
    }
    assert len(classes) >= 10  # the walk found the bundle's errors
    assert [c.__qualname__ for c in classes if not issubclass(c, DuoLiftError)] == []


def _raised_builtins(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Raise) and node.exc is not None:
            target = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            name = target.id if isinstance(target, ast.Name) else None
            obj = getattr(builtins, name, None) if name else None
            if isinstance(obj, type) and issubclass(obj, Exception):
                found.append(f"{path}:{node.lineno}: raise {name}")
    return found


def test_the_bundle_raises_no_bare_builtin_error():
    """Every error the bundle raises for a user is one of its own (catchable as the built-in type
    it also derives from); scripts and the MONAI Label app included."""
    root = Path(__file__).resolve().parents[1]
    files = [p for d in ("duolift_bundle", "scripts", "monailabel_app") for p in sorted((root / d).rglob("*.py"))]
    assert len(files) > 50
    assert [hit for path in files for hit in _raised_builtins(path)] == []
