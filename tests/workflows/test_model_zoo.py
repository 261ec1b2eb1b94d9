"""The bundle in the MONAI Model Zoo's layout (scripts/export_zoo_bundle.py), checked by the zoo's
own CI script, run from ../shared/tools/model-zoo-ci (never copied into the project), offline."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import pytest
from conftest import ROOT, ZOO_CI
from test_lint import TOOLS, ZOO_SETTINGS, lint

NAME = "duolift_ct_reconstruction"

pytestmark = pytest.mark.skipif(
    not (ZOO_CI / "ci" / "verify_bundle.py").is_file(),
    reason=f"the model zoo's CI is not at {ZOO_CI} (set $DUOLIFT_ZOO_CI)",
)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> Path:
    """A temporary zoo root as the zoo's README describes it: its ci/ folder and
    models/model_info.json beside models/<name>/ (the export), the metadata schema where
    ci/prepare_schema.py would have downloaded it."""
    root = tmp_path_factory.mktemp("zoo")
    shutil.copytree(ZOO_CI / "ci", root / "ci")
    (root / "models").mkdir()
    shutil.copy(ZOO_CI / "model_info.json", root / "models" / "model_info.json")
    result = subprocess.run(
        [sys.executable, "scripts/export_zoo_bundle.py", "--out", str(root / "models" / NAME)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (root / "models" / NAME / "eval").mkdir()
    shutil.copy(ZOO_CI / "meta_schema_20240725.json", root / "models" / NAME / "eval" / "schema.json")
    return root


def test_export_layout_and_refusal(zoo):
    bundle = zoo / "models" / NAME
    for path in (
        "configs/metadata.json",
        "configs/inference.yaml",
        "models/model.pt",
        "LICENSE",
        "docs/README.md",
        "docs/data_license.txt",
        "docs/guide.md",
        f"ci/unit_tests/test_{NAME}.py",
    ):
        assert (bundle / path).is_file(), path
    assert not (bundle / "configs" / "metadata.json").is_symlink()
    card = (bundle / "docs" / "README.md").read_text()
    for section in ("## Authors", "## Tags", "## System Configuration", "## License"):
        assert section in card
    again = subprocess.run(
        [sys.executable, "scripts/export_zoo_bundle.py", "--out", str(bundle)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert again.returncode != 0 and "exists" in again.stderr


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_the_exported_copy_passes_the_zoo_lint(zoo, tool):
    """The zoo's code-format CI on the bundle as the zoo receives it (its code, its unit test)."""
    result = lint(tool, [f"models/{NAME}"], ZOO_SETTINGS[tool], cwd=zoo)
    assert result.returncode == 0, (result.stdout + result.stderr)[-4000:]


@pytest.mark.slow
def test_the_zoo_verify_bundle_full_passes(zoo):
    """ci/verify_bundle.py -m full: directory, version and changelog, metadata schema, properties,
    data shape (verify_net_in_out) and TorchScript export, from the zoo's root."""
    result = subprocess.run(
        [sys.executable, "ci/verify_bundle.py", "-b", NAME, "-m", "full"],
        cwd=zoo,
        capture_output=True,
        text=True,
        timeout=900,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    for step in (
        "directory is verified correctly",
        "version and changelog are verified correctly",
        "metadata format is verified correctly",
        "properties are verified correctly",
        "export weights into TorchScript module successfully",
    ):
        assert step in log, step


@pytest.mark.slow
def test_the_exported_copy_infers_without_the_repository(zoo, tmp_path):
    """`run inferring` from another working directory, in a fresh interpreter that imports the
    copy's duolift_bundle (first on sys.path), with no override: the embedded sample."""
    bundle = zoo / "models" / NAME
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]); import duolift_bundle; "
        "assert duolift_bundle.__file__.startswith(sys.argv[1]), duolift_bundle.__file__; "
        "from monai.bundle import run; "
        "run('inferring', config_file=sys.argv[1] + '/configs/inference.yaml', bundle_root=sys.argv[1], "
        "output_dir=sys.argv[2], progress=False)"
    )
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    result = subprocess.run(
        [sys.executable, "-c", code, str(bundle), str(tmp_path / "out")],
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert sorted(c["case"] for c in summary["cases"]) == ["normal001", "phantom_0500", "phantom_0501"]
    assert nib.load(tmp_path / "out" / "normal001" / "recon_hu.nii.gz").shape == (64, 64, 64)
    assert not list(elsewhere.iterdir())


def test_monai_infer_properties_of_the_exported_copy(zoo):
    """MONAI's own property check of an infer workflow (the one the zoo runs for supported apps):
    every required property (bundle_root, device, dataset_dir, dataset, evaluator, network_def,
    inferer) is in inference.yaml."""
    from monai.bundle import ConfigWorkflow

    bundle = zoo / "models" / NAME
    workflow = ConfigWorkflow(
        config_file=str(bundle / "configs" / "inference.yaml"),
        meta_file=str(bundle / "configs" / "metadata.json"),
        workflow_type="infer",
        bundle_root=str(bundle),
    )
    workflow.initialize()
    assert workflow.check_properties() in (None, [])
    assert json.loads((bundle / "configs" / "metadata.json").read_text())["supported_apps"]
