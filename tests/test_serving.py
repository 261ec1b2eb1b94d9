"""duolift_bundle.serving: staging a request's files as a case, and one-case reconstruction through
inference.yaml's own evaluator (compared with `python -m monai.bundle run inferring` in
tests/monailabel_app/test_server.py)."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import ROOT, write_dicom_series
from duolift_bundle.datasets.sample import sample_dir
from duolift_bundle.geometry import CTProtocol
from duolift_bundle.serving import (
    REQUEST_SETTINGS,
    CaseFailedError,
    MissingViewError,
    NoInputError,
    Reconstructor,
    UnsupportedInputError,
    stage_case,
)
from PIL import Image

SAMPLE = sample_dir(64) / "normal001"


def _png(path: Path, size=(40, 48)) -> Path:
    Image.fromarray((np.random.default_rng(0).random(size) * 255).astype(np.uint8)).save(path)
    return path


def _request(tmp_path: Path, names: list[str]) -> Path:
    """A request folder (a MONAI Label session) holding files under ``names``."""
    folder = tmp_path / "session"
    folder.mkdir()
    for name in names:
        if name.endswith(".png"):
            _png(folder / name)
        else:
            shutil.copyfile(SAMPLE / "xray_frontal.nii.gz", folder / name)
    return folder


@pytest.mark.parametrize(
    "names, expected",
    [
        (["upload.png"], ["case/frontal.png"]),  # one unnamed radiograph is the frontal view
        (["lateral_view.png"], ["case/lateral_view.png"]),
        (["frontal.png", "lateral.png"], ["case/frontal.png", "case/lateral.png"]),
        (["Frontal PA.nii.gz", "LATERAL.nii.gz"], ["case/Frontal PA.nii.gz", "case/LATERAL.nii.gz"]),
        # a prepared case's files (prepare_data.py's names), as `run inferring` reads them too
        (["xray_frontal.nii.gz", "xray_lateral.nii.gz"], ["case/xray_frontal.nii.gz", "case/xray_lateral.nii.gz"]),
    ],
)
def test_stage_case_lays_radiographs_out_as_a_case_folder(tmp_path, names, expected):
    request = _request(tmp_path, names)
    image = request / names[0] if len(names) == 1 else request
    source = stage_case(image, tmp_path / "in")
    assert source == tmp_path / "in"
    assert sorted(str(p.relative_to(source)) for p in source.rglob("*") if p.is_file()) == expected


def test_stage_case_takes_a_3d_volume_or_a_dicom_series_as_a_ct(tmp_path):
    source = stage_case(SAMPLE / "ct.nii.gz", tmp_path / "a")
    assert source == tmp_path / "a" / "case.nii.gz" and source.is_file()
    write_dicom_series(tmp_path / "session" / "study" / "series", np.zeros((6, 16, 16), np.int16))
    source = stage_case(tmp_path / "session", tmp_path / "b")  # nested, as an uncompressed archive
    assert len(list((source / "case").iterdir())) == 6


@pytest.mark.parametrize(
    "names, error, status, words",
    [
        (["a.png", "b.png"], MissingViewError, 400, r"a.png, b.png: .* named frontal\* or lateral\*"),
        (["frontal.png", "notes.txt"], UnsupportedInputError, 415, "notes.txt"),
        (["report.pdf"], UnsupportedInputError, 415, "report.pdf"),
    ],
)
def test_stage_case_refuses_what_it_cannot_lay_out(tmp_path, names, error, status, words):
    folder = tmp_path / "session"
    folder.mkdir()
    for name in names:
        (folder / name).write_bytes(b"%PDF-1.4 not an image")
        if name.endswith(".png"):
            _png(folder / name)
    with pytest.raises(error, match=words) as info:
        stage_case(folder / names[0] if len(names) == 1 else folder, tmp_path / "in")
    assert info.value.status == status
    assert not (tmp_path / "in").exists()  # nothing staged


def test_stage_case_refuses_two_files_of_one_name(tmp_path):
    for sub in ("a", "b"):
        (tmp_path / "session" / sub).mkdir(parents=True)
        _png(tmp_path / "session" / sub / "frontal.png")
    with pytest.raises(MissingViewError, match="frontal.png: several files"):
        stage_case(tmp_path / "session", tmp_path / "in")


@pytest.mark.parametrize("image", ["", None, "/no/such/upload.png"])
def test_stage_case_without_input_is_a_404(tmp_path, image):
    with pytest.raises(NoInputError, match="unknown or expired session") as info:
        stage_case(image, tmp_path / "in")
    assert info.value.status == 404


@pytest.fixture(scope="module")
def single_view():
    return Reconstructor(ROOT, ["configs/inference.yaml", "configs/inference_single_view.yaml"])


@pytest.fixture(scope="module")
def double_view():
    return Reconstructor(ROOT, ["configs/inference.yaml"])


def test_reconstructor_reads_the_models_configuration(single_view, double_view):
    assert (single_view.views, double_view.views) == (1, 2)
    assert single_view.geometry == {"size": 64, "voxel_mm": 5.0, "units": "HU"}
    assert Path(double_view.ckpt_path) == ROOT / "models" / "model.pt"


def test_reconstructor_refuses_a_missing_view_and_unknown_settings(tmp_path, double_view):
    source = stage_case(_png(tmp_path / "frontal.png"), tmp_path / "in")
    with pytest.raises(MissingViewError, match="no lateral") as info:
        double_view(source, tmp_path / "out")
    assert "in/" not in str(info.value)  # the client's names, not the staging folder's
    with pytest.raises(ValueError, match="ckpt_path"):
        double_view(source, tmp_path / "out", {"ckpt_path": "elsewhere.pt"})
    assert set(REQUEST_SETTINGS) >= {"xray_pixel_spacing", "xray_contrast", "quality_gate"}


def test_reconstructor_reports_an_unreadable_file_as_a_422(tmp_path, single_view):
    (tmp_path / "frontal.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    source = stage_case(tmp_path / "frontal.png", tmp_path / "in")
    with pytest.raises(CaseFailedError, match="frontal.png") as info:
        single_view(source, tmp_path / "out")
    assert info.value.status == 422


@pytest.mark.slow
def test_reconstructor_gates_a_request_and_applies_its_settings(tmp_path, single_view):
    """Noise is no chest film: the quality gate refuses it (422, the reasons in the message); a
    request with quality_gate false reconstructs it, with the request's xray_pixel_spacing (a PNG
    carries no pixel size), and says so."""
    source = stage_case(_png(tmp_path / "film.png", (300, 260)), tmp_path / "in")
    with pytest.raises(CaseFailedError, match="refused by the quality gate .*no two lung fields") as info:
        single_view(source, tmp_path / "refused")
    assert info.value.status == 422 and not (tmp_path / "refused" / "case").exists()
    recon, report = single_view(source, tmp_path / "out", {"xray_pixel_spacing": 1.25, "quality_gate": False})
    assert report["kind"] == "xray" and report["inputs"]["frontal"]["pixel_mm"] == [1.25, 1.25]
    assert report["inputs"]["frontal"]["file"] == "case/frontal.png"
    image = nib.load(recon)
    assert image.shape == (64, 64, 64)
    np.testing.assert_allclose(image.affine, CTProtocol(size=64).affine())  # the bundle's documented geometry
