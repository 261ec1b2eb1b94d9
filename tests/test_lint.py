"""The code passes the MONAI Model Zoo's code-format CI: isort, black (line length 120) and flake8
with the zoo's plugins and settings. Run twice: with the project's own settings (setup.cfg,
pyproject.toml) and with the zoo's files in ../shared/tools/model-zoo-ci, so the two cannot drift."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT, ZOO_CI

#: What the project lints: the package, the scripts, the tests and the MONAI Label app.
LINTED = ("duolift_bundle", "scripts", "tests", "monailabel_app")

#: tool -> (command, option naming a settings file)
TOOLS = {
    "isort": (["isort", "--check-only", "--diff"], "--settings-path"),
    "black": (["black", "--check", "--diff", "--quiet"], "--config"),
    "flake8": (["flake8"], "--config"),
}
ZOO_SETTINGS = {"isort": ZOO_CI / "setup.cfg", "black": ZOO_CI / "pyproject.toml", "flake8": ZOO_CI / "setup.cfg"}


def lint(tool: str, paths: list[str], settings: str | None = None, cwd=ROOT) -> subprocess.CompletedProcess:
    command, option = TOOLS[tool]
    extra = [option, str(settings)] if settings else []
    return subprocess.run(
        [sys.executable, "-m", command[0], *command[1:], *extra, *paths],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize("settings", ["project", "zoo"])
@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_lint_reports_nothing(tool, settings):
    if settings == "zoo" and not ZOO_SETTINGS[tool].is_file():
        pytest.skip(f"the model zoo's lint settings are not at {ZOO_CI} (set $DUOLIFT_ZOO_CI)")
    result = lint(tool, [p for p in LINTED if (ROOT / p).exists()], ZOO_SETTINGS[tool] if settings == "zoo" else None)
    assert result.returncode == 0, f"{tool} ({settings} settings):\n{(result.stdout + result.stderr)[-6000:]}"


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_lint_catches_a_violation(tool, tmp_path):
    """The same call fails on a file that breaks the tool's rules (the checks are live)."""
    bad = tmp_path / "bad.py"
    bad.write_text("import sys\nimport os\nx = dict( a =1)\n")  # unsorted, unformatted, unused imports
    result = lint(tool, [str(bad)], ROOT / ("pyproject.toml" if tool == "black" else "setup.cfg"))
    assert result.returncode != 0
