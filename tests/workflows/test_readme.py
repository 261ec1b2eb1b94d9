"""The README: its top part stays short, every command in it names files and config keys that
exist, and "Train a small model on a CPU in minutes" runs as written, with the smaller sizes the
section documents (`--n 4 --size 32`, `--size 32 --width 0.0625 --max_epochs 1`), from a folder
laid out as the bundle (its configs, scripts, package and models linked in)."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import nibabel as nib
import pytest
from conftest import ROOT

SECTION = "## Train a small model on a CPU in minutes"
#: the section's documented way to make the run smaller
SMALLER = [
    ("--n 12", "--n 4"),
    ("--size 64", "--size 32"),
    ("--width 0.125", "--width 0.0625"),
    ("--max_epochs 2", "--max_epochs 1"),
]


def readme_commands() -> list[str]:
    """The commands of the section's bash block, continuation lines joined."""
    text = (ROOT / "README.md").read_text()
    section = text[text.index(SECTION) :]
    block = re.search(r"```bash\n(.*?)```", section, flags=re.S).group(1)
    return [c.strip() for c in block.replace("\\\n", " ").splitlines() if c.strip() and not c.startswith("#")]


def test_the_section_documents_its_smaller_sizes():
    text = (ROOT / "README.md").read_text()
    section = text[text.index(SECTION) : text.index("\n## ", text.index(SECTION) + 1)]
    assert "`--n 4 --size 32`" in section and "`--size 32 --width 0.0625 --max_epochs 1`" in section
    commands = readme_commands()
    assert len(commands) == 3 and all(c.startswith(".venv/bin/python ") for c in commands)
    for old, _ in SMALLER:
        assert any(old in c for c in commands), old


def _all_commands(text: str) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [c.strip() for b in blocks for c in b.replace("\\\n", " ").splitlines()]
    return [c for c in lines if c and not c.startswith("#")]


def test_the_readme_is_short_and_its_commands_name_what_exists():
    """About 150 lines (the reference is docs/guide.md); each script, config file and ``--key`` of
    a ``monai.bundle run`` command in it exists (the configs' own ids, or MONAI's run arguments)."""
    from duolift_bundle.engines.config_checks import _override_keys, _run_args
    from monai.bundle import ConfigParser

    text = (ROOT / "README.md").read_text()
    assert len(text.splitlines()) <= 160
    commands = _all_commands(text)
    assert len(commands) >= 10
    for command in commands:
        argv = shlex.split(command.split("&&")[-1])
        for arg in argv:
            if re.fullmatch(r"(scripts|configs)/[\w./-]+\.(py|sh|yaml)", arg):
                assert (ROOT / arg).is_file(), f"{arg} in: {command}"
        if "monai.bundle" in argv and "run" in argv:
            argv = argv[argv.index("monai.bundle") :]  # torchrun's own flags come before
            files = argv[argv.index("--config_file") + 1]
            files = [f.strip(" '") for f in files.strip("[]").split(",")]
            known = set(ConfigParser.load_config_files([str(ROOT / f) for f in files]).keys())
            unknown = [k for k in _override_keys(argv) if k not in _run_args() and k.split("#")[0] not in known]
            assert unknown == [], f"{unknown} in: {command}"


@pytest.mark.slow
def test_the_cpu_section_runs_as_written(tmp_path):
    for name in ("configs", "scripts", "duolift_bundle", "models"):
        (tmp_path / name).symlink_to(ROOT / name)
    for command in readme_commands():
        for old, new in SMALLER:
            command = command.replace(old, new)
        argv = [sys.executable, *shlex.split(command)[1:]]
        result = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{command}\n{result.stderr[-3000:]}"
    weights = tmp_path / "runs" / "small" / "models" / "model.pt"
    assert weights.is_file()
    recon = nib.load(tmp_path / "eval" / "small" / "normal001" / "recon_hu.nii.gz")
    assert recon.shape == (32, 32, 32)
    assert -1024.5 <= recon.get_fdata().min() and recon.get_fdata().max() <= 1476.5  # HU of the protocol's window
