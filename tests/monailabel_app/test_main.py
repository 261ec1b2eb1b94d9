"""The MONAI Label app (monailabel_app/) on a real MONAI Label 0.8.5 server: started as the README
says, in a subprocess on 127.0.0.1 and a free port, sent a frontal + lateral session and a real
single film, compared with `python -m monai.bundle run inferring` on the same files, then stopped
by its process id."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from conftest import ROOT
from PIL import Image

requests = pytest.importorskip("requests")
pytest.importorskip("monailabel", reason="MONAI Label is not installed (bash scripts/setup_monailabel.sh)")

from duolift_bundle.datasets.sample import real_radiograph, sample_dir  # noqa: E402
from duolift_bundle.registry import load_registry  # noqa: E402
from requests_toolbelt.multipart.decoder import MultipartDecoder  # noqa: E402

pytestmark = pytest.mark.slow

SAMPLE = sample_dir(64) / "normal001"
#: the served models (models/registry.json)
SHIPPED = {spec.name: spec for spec in load_registry(ROOT).served()}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`bash scripts/monailabel_server.sh --studies ... --conf ... --host 127.0.0.1`, as the README
    shows it (no activated venv), on a copy of the app (the server writes logs/ and model/ into it)."""
    root = tmp_path_factory.mktemp("monailabel")
    shutil.copytree(ROOT / "monailabel_app", root / "app", ignore=shutil.ignore_patterns("__pycache__"))
    port = _free_port()
    env = dict(os.environ, DUOLIFT_APP=str(root / "app"), MONAI_LABEL_SESSION_PATH=str(root / "sessions"))
    command = ["bash", str(ROOT / "scripts" / "monailabel_server.sh"), "--studies", str(root / "studies")]
    command += ["--conf", "models", "all", "--conf", "bundle_root", str(ROOT), "--host", "127.0.0.1"]
    command += ["--port", str(port)]
    log = open(root / "server.log", "w")
    proc = subprocess.Popen(command, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"the server exited with {proc.returncode}:\n{(root / 'server.log').read_text()[-4000:]}")
            try:
                if requests.get(f"{url}/info/", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"no /info/ after 180 s:\n{(root / 'server.log').read_text()[-4000:]}")
            time.sleep(1)
        yield url, proc, root
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)  # the process id it was started with (and its group)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """The sample's frontal + lateral DRRs under a prepared case's names (``xray_frontal.nii.gz``,
    as ``prepare_data.py`` writes them), and the real PA film."""
    folder = tmp_path_factory.mktemp("files")
    shutil.copyfile(SAMPLE / "xray_frontal.nii.gz", folder / "xray_frontal.nii.gz")
    shutil.copyfile(SAMPLE / "xray_lateral.nii.gz", folder / "xray_lateral.nii.gz")
    shutil.copyfile(real_radiograph(), folder / "film.dcm")
    return folder


def _inferring(model: str, case_files: list[Path], tmp_path: Path) -> nib.Nifti1Image:
    """The same files through `python -m monai.bundle run inferring` (a case folder of radiographs,
    or a CT file named after the case: the README's layouts)."""
    case = tmp_path / "in" / "case"
    case.mkdir(parents=True)
    for f in case_files:
        if f.name == "ct.nii.gz":
            shutil.copyfile(f, tmp_path / "in" / "case.nii.gz")
            case.rmdir()
        else:
            shutil.copyfile(f, case / ("frontal.dcm" if f.name == "film.dcm" else f.name))
    configs = "[" + ",".join(f"'{c}'" for c in SHIPPED[model].configs) + "]"
    command = [sys.executable, "-m", "monai.bundle", "run", "inferring", "--config_file", configs]
    command += ["--input_dir", str(tmp_path / "in"), "--output_dir", str(tmp_path / "out"), "--progress", "False"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return nib.load(tmp_path / "out" / "case" / "recon_hu.nii.gz")


def _parts(response) -> tuple[dict, bytes]:
    """MONAI Label's multipart answer: the JSON ``params`` part and the ``image`` part."""
    parts = MultipartDecoder(response.content, response.headers["content-type"]).parts
    found = {}
    for part in parts:
        disposition = part.headers[b"Content-Disposition"].decode()
        found["image" if 'name="image"' in disposition else "params"] = part.content
    return json.loads(found["params"]), found["image"]


def _check_same(served: bytes, reference: nib.Nifti1Image, tmp_path: Path) -> nib.Nifti1Image:
    (tmp_path / "served.nii.gz").write_bytes(served)
    image = nib.load(tmp_path / "served.nii.gz")
    assert image.shape == reference.shape == (64, 64, 64)
    np.testing.assert_allclose(image.affine, reference.affine)
    hu, ref = image.get_fdata(), reference.get_fdata()
    assert -1024.5 <= hu.min() and hu.max() <= 3071.5  # the bundle's HU window
    np.testing.assert_allclose([hu.min(), hu.max(), hu.mean()], [ref.min(), ref.max(), ref.mean()], atol=1.0)
    np.testing.assert_allclose(hu, ref, atol=1.0)
    return image


def test_info_lists_both_shipped_models(server):
    url, _, _ = server
    models = requests.get(f"{url}/info/", timeout=30).json()["models"]
    assert sorted(models) == ["duolift_double_view", "duolift_single_view"]
    for name, views in (("duolift_double_view", 2), ("duolift_single_view", 1)):
        assert models[name]["type"] == "others"
        assert models[name]["config"] == {"views": views, "size": 64, "voxel_mm": 5.0, "units": "HU"}


def test_a_frontal_lateral_session_matches_inferring(server, files, tmp_path):
    url, _, _ = server
    with open(files / "xray_frontal.nii.gz", "rb") as f, open(files / "xray_lateral.nii.gz", "rb") as g:
        # a prepared case's two files: the same naming rule as `run inferring` (xray_io.view_of_name)
        upload = [("files", ("xray_frontal.nii.gz", f)), ("files", ("xray_lateral.nii.gz", g))]
        session = requests.put(f"{url}/session/", files=upload, timeout=60)
    assert session.status_code == 200, session.text
    session_id = session.json()["session_id"]
    response = requests.post(f"{url}/infer/duolift_double_view", params={"session_id": session_id}, timeout=600)
    assert response.status_code == 200, response.text
    report, served = _parts(response)
    reference = _inferring("double_view", [files / "xray_frontal.nii.gz", files / "xray_lateral.nii.gz"], tmp_path)
    _check_same(served, reference, tmp_path)
    expected = json.loads((tmp_path / "out" / "summary.json").read_text())["cases"][0]
    assert report["kind"] == "xray" and report["units"] == "HU" and report["model_views"] == 2
    for key in ("frontal_psnr", "frontal_lung_dice", "lateral_ssim", "lateral_body_dice"):
        assert report[key] == pytest.approx(expected[key], abs=1e-3), key
    assert report["inputs"]["lateral"]["file"] == "case/xray_lateral.nii.gz"


def test_a_real_single_film_matches_inferring(server, files, tmp_path):
    url, _, _ = server
    with open(files / "film.dcm", "rb") as f:
        response = requests.post(
            f"{url}/infer/duolift_single_view",
            params={"output": "image"},
            files={"file": ("film.dcm", f)},
            timeout=600,
        )
    assert response.status_code == 200, response.text
    reference = _inferring("single_view", [files / "film.dcm"], tmp_path)
    _check_same(response.content, reference, tmp_path)


def test_a_ct_is_reconstructed_from_its_drrs_as_by_inferring(server, tmp_path):
    """The sample's CT in HU (its prepared ct.nii.gz holds the [0, 1] scale; HU = x * 2500 - 1024)."""
    url, _, _ = server
    unit = nib.load(SAMPLE / "ct.nii.gz")
    (tmp_path / "src").mkdir()
    ct = tmp_path / "src" / "ct.nii.gz"
    nib.save(nib.Nifti1Image((unit.get_fdata() * 2500.0 - 1024.0).astype(np.float32), unit.affine), ct)
    with open(ct, "rb") as f:
        response = requests.post(f"{url}/infer/duolift_double_view", files={"file": ("ct.nii.gz", f)}, timeout=600)
    assert response.status_code == 200, response.text
    report, served = _parts(response)
    assert report["kind"] == "ct" and "frontal_psnr" in report and "lateral_body_dice" in report
    assert report["frontal_lung_dice"] > 0.8  # its DRRs and their re-projection: two lung fields, in place
    _check_same(served, _inferring("double_view", [ct], tmp_path), tmp_path)


@pytest.mark.parametrize(
    "model, query, upload, status, words",
    [
        ("duolift_double_view", {"session_id": "no-such-session"}, None, 404, "unknown or expired session"),
        ("duolift_double_view", {}, "xray_frontal.nii.gz", 400, "no lateral"),
        ("duolift_single_view", {}, "notes.txt", 415, "not a file type the bundle reads"),
        ("no_such_model", {}, "xray_frontal.nii.gz", 404, "duolift_single_view"),
        ("duolift_single_view", {}, "noise.png", 422, "refused by the quality gate"),
    ],
)
def test_errors_are_4xx_with_the_reason(server, files, model, query, upload, status, words):
    url, proc, _ = server
    (files / "notes.txt").write_text("not an image")
    noise = (np.random.default_rng(0).random((300, 260)) * 255).astype(np.uint8)
    Image.fromarray(noise).save(files / "noise.png")  # no chest film: the quality gate refuses it
    kwargs = {}
    if upload:
        kwargs["files"] = {"file": (upload, (files / upload).read_bytes())}
    response = requests.post(f"{url}/infer/{model}", params={"output": "image", **query}, timeout=600, **kwargs)
    assert response.status_code == status, response.text
    assert words in response.json()["detail"]
    assert proc.poll() is None  # the server goes on
