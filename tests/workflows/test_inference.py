"""Inference on files: X-ray readers, mixed input folders, CT round trip, bad input, evaluation config."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import ROOT, make_small_prepared, write_dicom_xray
from duolift_bundle.datasets.inference_case import LoadInferenceCase, inference_items
from duolift_bundle.geometry import CTProtocol
from duolift_bundle.inputs.radiograph import RadiographSettings, load_radiograph
from duolift_bundle.inputs.radiograph_io import XRayInputError, square_resize
from duolift_bundle.networks import DuoLiftGenerator, load_generator
from PIL import Image


def load_xray(path, size: int = 20, normalize: str = "max") -> np.ndarray:
    """A radiograph through the bundle's reading path with the square placement (a centred square
    of the shorter side; the physical placement has its own tests in tests/inputs/test_radiograph.py)."""
    from duolift_bundle.geometry import Protocol

    protocol = Protocol.build(size=32, output_size=size)
    return load_radiograph(path, "frontal", protocol, RadiographSettings(normalize=normalize, placement="square"))[0]


@pytest.fixture()
def gradient():
    """A 40 x 60 image with a horizontal ramp (0..1000) and a bright square top-left."""
    img = np.tile(np.round(np.linspace(0, 1000, 60)), (40, 1))
    img[2:8, 12:18] = 4000
    return img


def test_png_reader_and_square_crop(tmp_path, gradient):
    png = tmp_path / "x.png"
    Image.fromarray((gradient / 4000 * 255).round().astype(np.uint8), "L").save(png)
    out = load_xray(png, size=20)
    assert out.shape == (20, 20) and out.dtype == np.float32
    assert out.min() >= 0.0 and out.max() <= 1.0
    # reference by hand: the centred 40 x 40 crop (columns 10..49), 2 x 2 block means
    unit = (gradient - gradient.min()) / np.ptp(gradient)
    ref = unit[:, 10:50].reshape(20, 2, 20, 2).mean(axis=(1, 3))
    np.testing.assert_allclose(out, ref, atol=1.5 / 255)


@pytest.mark.parametrize("shape, size", [((50, 40), 20), ((42, 63), 21), ((30, 30), 60)])
def test_square_resize_against_independent_references(shape, size):
    """Shrinking: area averaging = block means of the centred crop (numpy); enlarging: bilinear
    with half-pixel centres = scikit-image's order-1 resize without anti-aliasing."""
    from skimage.transform import resize

    rng = np.random.default_rng(1)
    image = rng.random(shape).astype(np.float32)
    s = min(shape)
    top, left = (shape[0] - s) // 2, (shape[1] - s) // 2
    crop = image[top : top + s, left : left + s]
    out = square_resize(image, size)
    assert out.shape == (size, size)
    if s >= size:
        f = s // size
        np.testing.assert_allclose(out, crop.reshape(size, f, size, f).mean(axis=(1, 3)), atol=1e-6)
    else:
        np.testing.assert_allclose(
            out, resize(crop, (size, size), order=1, mode="edge", anti_aliasing=False), atol=1e-5
        )


@pytest.mark.parametrize("mode, message", [("RGB", "RGB image"), ("I;16", "16-bit image"), ("P", "a P image")])
def test_png_reader_refuses_colour_and_16_bit(tmp_path, mode, message):
    png = tmp_path / f"x_{mode.replace(';', '')}.png"
    size = (16, 16)
    Image.new(mode, size).save(png)
    with pytest.raises(XRayInputError, match=message) as err:
        load_xray(png)
    assert str(png) in str(err.value)


@pytest.mark.parametrize("name, content", [("cut.png", b"\x89PNG\r\n\x1a\n cut"), ("text.jpg", b"plain text")])
def test_png_reader_names_a_file_it_cannot_decode(tmp_path, name, content):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(XRayInputError, match="not a readable PNG / JPEG image") as err:
        load_xray(tmp_path / name)
    assert str(tmp_path / name) in str(err.value)


def test_dicom_monochrome1_is_inverted_and_windowed(tmp_path, gradient):
    m2, m1 = tmp_path / "m2.dcm", tmp_path / "m1.dcm"
    write_dicom_xray(m2, gradient)
    write_dicom_xray(m1, gradient.max() - gradient, photometric="MONOCHROME1")
    a, b = load_xray(m2, 20), load_xray(m1, 20)
    np.testing.assert_allclose(a, b, atol=1e-5)  # MONOCHROME1 stored inverted, displayed the same
    assert a[2, 3] > 0.9  # the dense square is bright
    # a window (centre 500, width 1000) clips the square to the ramp's top value
    windowed = tmp_path / "w.dcm"
    write_dicom_xray(windowed, gradient, window=(500, 1000))
    w = load_xray(windowed, 20)
    assert w.max() == pytest.approx(1.0) and w[2, 3] == pytest.approx(1.0, abs=1e-3)
    assert w[10, 10] > a[10, 10]  # the ramp uses more of the range once the square is clipped


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"pixel_data": False}, "without pixel data"),
        ({"frames": 3}, "multi-frame"),
        ({"modality": "CT"}, "a CT slice, not a radiograph"),
    ],
)
def test_dicom_reader_refuses_non_radiographs(tmp_path, gradient, kwargs, message):
    path = tmp_path / "bad.dcm"
    write_dicom_xray(path, gradient, **kwargs)
    with pytest.raises(XRayInputError, match=message):
        load_xray(path)


def test_prepared_drr_files_reach_the_network_as_in_training(tmp_path):
    """A frontal DRR is max-normalised with a minimum well above 0 (the body fills the field):
    the default "max" scaling leaves such a file unchanged; "minmax" stretches it."""
    from duolift_bundle.datasets.sample import sample_dir

    path = sample_dir(64) / "normal001" / "xray_frontal.nii.gz"
    stored = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    assert stored.min() > 0.2 and stored.max() == pytest.approx(1.0)
    np.testing.assert_allclose(load_xray(path, 64), stored, atol=1e-6)
    stretched = load_xray(path, 64, normalize="minmax")
    assert stretched.min() == pytest.approx(0.0, abs=1e-6)
    np.testing.assert_allclose(stretched, (stored - stored.min()) / np.ptp(stored), atol=1e-5)
    # a signed image is shifted to a minimum of 0 before the division
    nib.save(nib.Nifti1Image(np.array([[-1.0, 0.0], [1.0, 3.0]], np.float32), np.eye(4)), tmp_path / "s.nii.gz")
    np.testing.assert_allclose(load_xray(tmp_path / "s.nii.gz", 2), [[0.0, 0.25], [0.5, 1.0]], atol=1e-6)
    with pytest.raises(ValueError, match="xray_normalize must be one of"):
        load_xray(path, 64, normalize="zscore")


def test_nifti_reader_needs_2d(tmp_path):
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)), tmp_path / "v.nii.gz")
    with pytest.raises(XRayInputError, match="must be 2D"):
        load_xray(tmp_path / "v.nii.gz")
    with pytest.raises(XRayInputError, match="file not found"):
        load_xray(tmp_path / "none.png")


def test_missing_lateral_view_in_double_view_mode(tmp_path):
    case = tmp_path / "in" / "patient1"
    case.mkdir(parents=True)
    Image.new("L", (8, 8)).save(case / "frontal.png")
    (item,) = inference_items(tmp_path / "in", views=2)  # listed, so that a batch reports it and goes on
    assert item["case"] == "patient1" and "frontal" not in item
    with pytest.raises(
        XRayInputError, match=r"patient1: the 2-view model needs frontal and lateral X-rays; no lateral"
    ):
        LoadInferenceCase(views=2)(item)
    assert inference_items(tmp_path / "in", views=1)[0]["frontal"].endswith("frontal.png")


def test_side_files_of_a_prepared_set_are_not_cases(tmp_path):
    """A prepared folder (the embedded sample, prepare_data.py output) holds datalist.json and a
    README beside its case folders: those are skipped, the folders are X-ray cases."""
    for name in ("case_b", "case_a"):
        (tmp_path / name).mkdir()
        for view in ("frontal", "lateral"):
            Image.new("L", (8, 8)).save(tmp_path / name / f"xray_{view}.png")
    (tmp_path / "datalist.json").write_text("{}")
    (tmp_path / "README.md").write_text("notes")
    items = inference_items(tmp_path, views=2)
    assert [(i["case"], i["kind"]) for i in items] == [("case_a", "xray"), ("case_b", "xray")]


def test_checkpoint_of_another_configuration(tmp_path):
    ckpt = tmp_path / "model.pt"
    torch.save(DuoLiftGenerator(views=1, image_size=32, volume_size=32, width=1 / 16).state_dict(), ckpt)
    with pytest.raises(
        ValueError, match=r"model.pt: checkpoint does not fit this network configuration .* of another shape"
    ):
        load_generator(DuoLiftGenerator(views=2, image_size=32, volume_size=32, width=1 / 16), ckpt)
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        load_generator(DuoLiftGenerator(image_size=32, volume_size=32, width=1 / 16), tmp_path / "none.pt")


# ---------------------------------------------------------------- the configs, end to end


@pytest.fixture(scope="module")
def small_model(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("model") / "model.pt"
    torch.save(DuoLiftGenerator(image_size=32, volume_size=32, width=1 / 16).state_dict(), path)
    return path


@pytest.fixture(scope="module")
def prepared32(tmp_path_factory) -> Path:
    return make_small_prepared(tmp_path_factory.mktemp("prepared32"), n=3, seed=40)


EVALUATE = "['configs/inference.yaml','configs/evaluate.yaml']"


def small_model_args(model: Path) -> list[str]:
    """The overrides that run the tiny test model (32^3, width 1/16) instead of a shipped one; its
    random weights reproduce no lung fields, so the quality gate is off (its own tests turn it on)."""
    return ["--ckpt_path", str(model), "--size", "32", "--width", "0.0625", "--quality_gate", "False"]


def bundle(run_id: str, config: str, *args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", "run", run_id, "--config_file", config, *args]
    return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600)


def mixed_inputs(prepared32: Path, folder: Path) -> None:
    """PNG pair, DICOM pair, NIfTI pair (three phantoms' DRRs) and a raw CT file."""
    cases = sorted(p for p in prepared32.iterdir() if p.is_dir() and p.name.startswith("phantom"))
    for kind, case in zip(("png", "dcm", "nii"), cases):
        target = folder / f"case_{kind}"
        target.mkdir(parents=True)
        for view in ("frontal", "lateral"):
            arr = np.asarray(nib.load(case / f"xray_{view}.nii.gz").dataobj)
            if kind == "png":
                Image.fromarray((arr * 255).round().astype(np.uint8), "L").save(target / f"{view}.png")
            elif kind == "dcm":
                write_dicom_xray(target / f"{view}.dcm", (arr * 4000).round())
            else:
                shutil.copy(case / f"xray_{view}.nii.gz", target / f"{view}.nii.gz")
    shutil.copy(prepared32 / "raw" / f"{cases[0].name}.nii.gz", folder / "ct_case.nii.gz")


@pytest.mark.slow
def test_inference_on_a_mixed_folder(prepared32, small_model, tmp_path):
    inputs, out = tmp_path / "in", tmp_path / "out"
    mixed_inputs(prepared32, inputs)
    result = bundle("inferring", "configs/inference.yaml", "--input_dir", str(inputs), "--output_dir", str(out),
                    *small_model_args(small_model), "--save_unit", "True")  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())["cases"]
    assert sorted(c["case"] for c in summary) == ["case_dcm", "case_nii", "case_png", "ct_case"]
    for row in summary:
        hu = nib.load(out / row["case"] / "recon_hu.nii.gz")
        unit = nib.load(out / row["case"] / "recon_unit.nii.gz")
        assert hu.shape == (32, 32, 32)
        data = hu.get_fdata()
        assert -1024.0 <= data.min() and data.max() <= 1476.0
        np.testing.assert_allclose(data, unit.get_fdata() * 2500 - 1024, atol=1e-3)
        assert {"frontal_psnr", "frontal_ssim", "lateral_psnr", "lateral_ssim"} <= set(row)
        expected = (
            CTProtocol(size=32).affine()
            if row["kind"] == "xray"
            else nib.load(prepared32 / "phantom_0040" / "ct.nii.gz").affine
        )
        np.testing.assert_allclose(hu.affine, expected, atol=1e-4)
    log = result.stdout + result.stderr
    assert "ct_case (ct): wrote" in log and "projection consistency" in log
    assert not list(out.rglob("*.tmp*"))


def test_inference_runs_from_another_working_directory(prepared32, small_model, tmp_path):
    """No config reads another file relative to the working directory: inference.yaml given by
    absolute path runs from an unrelated folder with --bundle_root, and every default output
    lands under the bundle root given (the way the model zoo's CI runs a bundle)."""
    elsewhere, root = tmp_path / "elsewhere", tmp_path / "bundle"
    elsewhere.mkdir()
    (root / "models").mkdir(parents=True)
    shutil.copy(small_model, root / "models" / "model.pt")
    case = sorted(p for p in prepared32.iterdir() if p.name.startswith("phantom"))[0]
    result = bundle("inferring", str(ROOT / "configs" / "inference.yaml"), "--bundle_root", str(root), "--input_dir", str(case),
                    "--size", "32", "--width", "0.0625", "--quality_gate", "False", "--progress", "False",
                    cwd=elsewhere)  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    assert (root / "eval" / "inference" / case.name / "recon_hu.nii.gz").is_file()
    assert not list(elsewhere.iterdir())


def test_refinement_from_the_inference_config(prepared32, small_model, tmp_path):
    """--refine_steps / --refine_weight: the summary records the views' PSNR before and after the
    refinement, and the consistency report (after) agrees with it."""
    case = sorted(p for p in prepared32.iterdir() if p.name.startswith("phantom"))[0]
    out = tmp_path / "out"
    result = bundle("inferring", "configs/inference.yaml", "--input_dir", str(case), "--output_dir", str(out),
                    *small_model_args(small_model), "--refine_steps", "15", "--refine_weight", "0.1",
                    "--save_figure", "False")  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    (row,) = json.loads((out / "summary.json").read_text())["cases"]
    record = row["refinement"]
    assert record["steps"] == 15 and record["weight"] == 0.1 and record["seconds"] > 0
    for view in ("frontal", "lateral"):
        assert record[f"{view}_psnr_after"] > record[f"{view}_psnr_before"]
        assert row[f"{view}_psnr"] == pytest.approx(record[f"{view}_psnr_after"], abs=0.05)


def test_a_batch_goes_on_past_a_bad_case(prepared32, small_model, tmp_path):
    """good, bad (RGB PNGs), good: both good cases are written, summary.json and failed.json name
    the bad one with its reason, the run exits 1 and its last line names the bad file."""
    inputs, out = tmp_path / "in", tmp_path / "out"
    mixed_inputs(prepared32, inputs)
    (inputs / "ct_case.nii.gz").unlink()
    shutil.rmtree(inputs / "case_nii")
    bad = inputs / "case_e_bad"  # sorted between case_dcm and case_png
    bad.mkdir()
    Image.new("RGB", (32, 32)).save(bad / "frontal.png")
    Image.new("RGB", (32, 32)).save(bad / "lateral.png")
    stale = out / "failed.json"  # a failure list of an earlier run is replaced, not kept
    out.mkdir()
    stale.write_text('{"old": "x"}')
    result = bundle("inferring", "configs/inference.yaml", "--input_dir", str(inputs), "--output_dir", str(out),
                    *small_model_args(small_model))  # fmt: skip
    assert result.returncode == 1
    reason = f"XRayInputError: {bad / 'frontal.png'}: a RGB image; X-rays must be greyscale"
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: 1 of 3 case(s) failed") and f"case_e_bad: {reason}" in last, result.stderr[-3000:]
    assert sorted(p.parent.name for p in out.rglob("recon_hu.nii.gz")) == ["case_dcm", "case_png"]
    summary = json.loads((out / "summary.json").read_text())
    assert [c["case"] for c in summary["cases"]] == ["case_dcm", "case_png"]
    assert list(summary["failed"]) == ["case_e_bad"] and summary["failed"]["case_e_bad"].startswith(reason)
    assert json.loads(stale.read_text()) == summary["failed"]
    assert not list(out.rglob("*.tmp*")) and not (out / "case_e_bad").exists()
    # a later clean run removes the failure list
    shutil.rmtree(bad)
    again = bundle("inferring", "configs/inference.yaml", "--input_dir", str(inputs), "--output_dir", str(out),
                   *small_model_args(small_model), "--progress", "False")  # fmt: skip
    assert again.returncode == 0, again.stderr[-3000:]
    assert not stale.exists() and json.loads((out / "summary.json").read_text())["failed"] == {}


def test_a_missing_input_folder_is_the_last_line(small_model, tmp_path):
    result = bundle(
        "inferring",
        "configs/inference.yaml",
        "--input_dir",
        str(tmp_path / "nowhere"),
        "--output_dir",
        str(tmp_path / "out"),
        *small_model_args(small_model),
    )
    assert result.returncode != 0
    assert (
        result.stderr.strip().splitlines()[-1]
        == f"error: InputNotFoundError: {tmp_path / 'nowhere'}: no such file or folder"
    )
    assert "Failed to evaluate ConfigExpression" in result.stderr  # MONAI's traceback is kept above it


def test_unwritable_output_folder(small_model, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    result = bundle("inferring", "configs/inference.yaml", "--input_dir", str(tmp_path), "--output_dir", str(blocker / "out"),
                    *small_model_args(small_model))  # fmt: skip
    assert result.returncode != 0
    assert f"{blocker / 'out'}: output folder is not writable" in result.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_inference_on_the_real_chest_ct(real_ct_dir, tmp_path):
    """The real CT of ../shared/data through its DRRs at the paper's 128^3 (a 1/16-width model):
    the NIfTI lands in the CT's world space (the affine of the prepared protocol volume)."""
    from duolift_bundle.datasets.prepare import prepare

    torch.manual_seed(0)
    model = tmp_path / "model.pt"
    torch.save(DuoLiftGenerator(width=1 / 16).state_dict(), model)
    prepared = tmp_path / "prepared"
    prepare(str(real_ct_dir), str(prepared), progress=False)
    case = next(p for p in prepared.iterdir() if (p / "ct.nii.gz").exists())
    out = tmp_path / "out"
    result = bundle("inferring", "configs/inference.yaml", "--input_dir", str(real_ct_dir), "--output_dir", str(out),
                    "--ckpt_path", str(model), "--size", "128", "--width", "0.0625")  # fmt: skip
    assert result.returncode == 0, result.stderr[-4000:]
    written = list(out.rglob("recon_hu.nii.gz"))
    assert len(written) == 1
    img = nib.load(written[0])
    assert img.shape == (128, 128, 128)
    np.testing.assert_allclose(img.affine, nib.load(case / "ct.nii.gz").affine, atol=1e-3)


@pytest.mark.slow
def test_evaluate_config_on_phantoms(prepared32, small_model, tmp_path):
    out = tmp_path / "eval"
    common = [
        "--dataset_dir",
        str(prepared32),
        *small_model_args(small_model),
        "--offline",
        "True",
    ]
    result = bundle("evaluating", EVALUATE, *common, "--output_dir", str(out))
    assert result.returncode == 0, result.stderr[-4000:]
    rows = (out / "metrics.csv").read_text().strip().splitlines()
    assert len(rows) == 4 and rows[0].startswith(
        "case,origin,psnr_2d,psnr_3d,ssim_2d,ssim_3d,mae,dice_lung,dice_vessel"
    )
    assert all(r.split(",")[1] == "synthetic" for r in rows[1:])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_cases"] == 3 and summary["lung_segmenter"].startswith("classical")
    assert summary["failed"] == {} and not (out / "failed.json").exists()
    table = (out / "table.md").read_text()
    assert "| DuoLift-double-view | synthetic (n = 3) |" in table and "±" in table and "offline fallback" in table
    assert "LPIPS: not computed" in table
    assert len(list((out / "figures").glob("*.png"))) == 3
    assert not (out / "reconstructions").exists()  # save_recon is off by default
    x2ct = tmp_path / "eval_x2ct"
    assert bundle("evaluating", EVALUATE, *common, "--output_dir", str(x2ct), "--metric_mode", "x2ct").returncode == 0
    s2 = json.loads((x2ct / "summary.json").read_text())
    delta = s2["metrics"]["psnr_3d"]["mean"] - summary["metrics"]["psnr_3d"]["mean"]
    assert delta == pytest.approx(4.286, abs=1e-3)


@pytest.mark.slow
def test_evaluation_reports_real_and_synthetic_apart_and_goes_on_past_a_bad_case(prepared32, small_model, tmp_path):
    """Three cases: one marked real, one whose CT file is corrupt, one phantom. The corrupt one is
    listed in failed.json and the run exits 1; the table has a real row and a synthetic row, never
    their pooled mean; each reconstruction has the true CT beside it in HU."""
    data = tmp_path / "data"
    shutil.copytree(prepared32, data)
    datalist = json.loads((data / "datalist.json").read_text())
    real, broken, phantom = datalist["test"]
    real["synthetic"] = False
    (data / broken["ct"]).write_bytes(b"not a nifti file")
    (data / "datalist.json").write_text(json.dumps(datalist))
    out = tmp_path / "eval"
    result = bundle(
        "evaluating",
        EVALUATE,
        "--dataset_dir",
        str(data),
        *small_model_args(small_model),
        "--offline",
        "True",
        "--save_recon",
        "True",
        "--output_dir",
        str(out),
        "--progress",
        "False",
    )
    assert result.returncode == 1, result.stderr[-4000:]
    last = result.stderr.strip().splitlines()[-1]
    assert (
        last.startswith("error: 1 of 3 case(s) failed")
        and f"{broken['case']}: " in last
        and broken["ct"].split("/")[-1] in last
    )
    assert list(json.loads((out / "failed.json").read_text())) == [broken["case"]]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["groups"]["real"]["n_cases"] == 1 and summary["groups"]["synthetic"]["n_cases"] == 1
    assert "metrics" not in summary  # no mean over real and synthetic cases together
    with open(out / "metrics.csv", newline="") as f:
        rows = {r["case"]: r for r in __import__("csv").DictReader(f)}
    assert {c: r["origin"] for c, r in rows.items()} == {real["case"]: "real", phantom["case"]: "synthetic"}
    assert summary["groups"]["real"]["metrics"]["psnr_3d"]["mean"] == pytest.approx(
        float(rows[real["case"]]["psnr_3d"])
    )
    table = (out / "table.md").read_text()
    assert "| DuoLift-double-view | real (n = 1) |" in table and "| DuoLift-double-view | synthetic (n = 1) |" in table
    assert f"1 failed case(s), not in the table: {broken['case']}" in table
    # the true CT beside the reconstruction, in HU: the prepared [0, 1] file through the HU window
    target = nib.load(out / "reconstructions" / phantom["case"] / "target_hu.nii.gz")
    prepared = nib.load(data / phantom["ct"])
    np.testing.assert_allclose(target.get_fdata(), prepared.get_fdata() * 2500.0 - 1024.0, atol=1e-2)
    np.testing.assert_allclose(
        target.affine, nib.load(out / "reconstructions" / phantom["case"] / "recon_hu.nii.gz").affine
    )
    np.testing.assert_allclose(target.affine, prepared.affine, atol=1e-4)


def test_evaluate_without_weights_lists_every_missing_file(prepared32, small_model, tmp_path):
    """Offline, one message lists all four missing weights files (VGG16, lungmask, both
    TotalSegmentator models) with their folders, and the --offline flag, as the last lines; no
    case is run."""
    env_home, ts_home = tmp_path / "torch", tmp_path / "totalseg"
    env = {
        **os.environ,
        "TORCH_HOME": str(env_home),
        "DUOLIFT_VGG16_WEIGHTS": "",
        "DUOLIFT_LUNGMASK_WEIGHTS": "",
        "TOTALSEG_WEIGHTS_PATH": str(ts_home),
    }
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "monai.bundle",
            "run",
            "evaluating",
            "--config_file",
            EVALUATE,
            "--dataset_dir",
            str(prepared32),
            *small_model_args(small_model),
            "--output_dir",
            str(tmp_path / "e"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    start = max(
        i
        for i, line in enumerate(lines)
        if line.startswith("error: WeightsNotFoundError: 4 pretrained weights file(s)")
    )
    message = "\n".join(lines[start:])
    for name in ("vgg16-397923af.pth", "unet_r231-d5d2fc3d.pth", "Dataset117_*", "Dataset297_*"):
        assert f"{name} not found" in message
    assert message.count(str(env_home / "hub" / "checkpoints")) == 2 and message.count(str(ts_home)) == 2
    assert "--offline True" in lines[-1]
    assert not (tmp_path / "e" / "metrics.csv").exists()


def test_make_figure_script(tmp_path):
    """Columns: target, each reconstruction and each |difference|: two reconstructions give a
    figure 5/3 as wide as one; HU and [0, 1] inputs are both accepted; shape mismatches refused."""
    rng = np.random.default_rng(0)
    target = rng.random((16, 16, 16)).astype(np.float32)
    nib.save(nib.Nifti1Image(target, np.eye(4)), tmp_path / "ct.nii.gz")
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        nib.save(
            nib.Nifti1Image((target * 2500 - 1024).astype(np.float32), np.eye(4)), tmp_path / name / "recon_hu.nii.gz"
        )
    script = [sys.executable, str(ROOT / "scripts" / "make_figure.py"), "--target", str(tmp_path / "ct.nii.gz")]
    one = subprocess.run(
        script + ["--recon", str(tmp_path / "a" / "recon_hu.nii.gz"), "--out", str(tmp_path / "one.png")],
        capture_output=True,
        text=True,
    )
    assert one.returncode == 0, one.stderr
    two = subprocess.run(
        script
        + [
            "--recon",
            f"[{tmp_path / 'a' / 'recon_hu.nii.gz'},{tmp_path / 'b' / 'recon_hu.nii.gz'}]",
            "--out",
            str(tmp_path / "two.png"),
        ],
        capture_output=True,
        text=True,
    )
    assert two.returncode == 0, two.stderr
    w1, w2 = Image.open(tmp_path / "one.png").size[0], Image.open(tmp_path / "two.png").size[0]
    assert w2 / w1 == pytest.approx(5 / 3, rel=0.02)
    nib.save(nib.Nifti1Image(target[:8], np.eye(4)), tmp_path / "small.nii.gz")
    bad = subprocess.run(
        script + ["--recon", str(tmp_path / "small.nii.gz"), "--out", str(tmp_path / "x.png")],
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "differs from the target" in bad.stderr


def _film_png(image: np.ndarray, path: Path, size: tuple[int, int] | None = None) -> None:
    """``image`` scaled to its own range as an 8-bit greyscale file, resized to (width, height)."""
    unit = (image - image.min()) / max(float(image.max() - image.min()), 1e-9)
    film = Image.fromarray((unit * 255).round().astype(np.uint8), "L")
    (film.resize(size, Image.BILINEAR) if size else film).save(path)


@pytest.mark.slow
def test_the_single_view_model_gates_its_inputs_and_ignores_collimation(tmp_path):
    """One batch through the shipped single-view model with the quality gate on (the default):

    - pydicom-data's PA film (PixelSpacing 0, MONOCHROME1, a striped unexposed border along its
      top) passes: one note about the spacing estimate, the quality report, a figure, and lungs
      where the film's lung fields are; its counterpart without the border (the film cut below
      its top 60 rows, by hand) gives re-projected lung fields within 0.05 Dice of it;
    - the sample's frontal DRR passes, and so does that DRR inside a bright collimator frame, with
      lung fields within 0.05 Dice of the unframed DRR's;
    - a squashed JPEG, a stretched film and an inverted film fail the gate, a blank film the
      reading, each with its reason in summary.json / failed.json, nothing written for them; the
      run exits 1."""
    from duolift_bundle.datasets.sample import real_radiograph, sample_dir
    from duolift_bundle.inputs.radiograph_io import read_radiograph
    from scipy import ndimage

    try:
        film = real_radiograph()
    except FileNotFoundError as err:
        pytest.skip(str(err))
    inputs = tmp_path / "in"
    for case in ("rg1", "rg1_cut", "drr", "drr_framed", "squashed", "stretched", "inverted", "blank"):
        (inputs / case).mkdir(parents=True)
    shutil.copy(film, inputs / "rg1" / "frontal.dcm")
    image, _ = read_radiograph(str(film))  # dense tissue bright, as the bundle reads it
    _film_png(image[60:], inputs / "rg1_cut" / "frontal.png")
    drr_file = sample_dir(64) / "normal001" / "xray_frontal.nii.gz"
    shutil.copy(drr_file, inputs / "drr" / "frontal.nii.gz")
    drr_image = nib.load(drr_file)
    framed = np.asarray(drr_image.dataobj, dtype=np.float32).copy()
    framed[:6], framed[-6:], framed[:, :6], framed[:, -6:] = (framed.max(),) * 4
    nib.save(nib.Nifti1Image(framed, drr_image.affine, drr_image.header), inputs / "drr_framed" / "frontal.nii.gz")
    drr = np.asarray(drr_image.dataobj, dtype=np.float32)
    Image.fromarray((drr * 255).round().astype(np.uint8), "L").resize((300, 200)).save(
        inputs / "squashed" / "frontal.jpg"
    )
    _film_png(drr, inputs / "stretched" / "frontal.png", (480, 200))
    _film_png(1.0 - drr, inputs / "inverted" / "frontal.png", (256, 256))
    Image.new("L", (256, 256), 128).save(inputs / "blank" / "frontal.png")
    out = tmp_path / "out"
    result = bundle("inferring", "['configs/inference.yaml','configs/inference_single_view.yaml']",
                    "--input_dir", str(inputs), "--output_dir", str(out), "--progress", "False")  # fmt: skip
    assert result.returncode == 1, result.stderr[-4000:]
    summary = json.loads((out / "summary.json").read_text())
    refused = {
        "squashed": "its sides are 1.50 : 1",
        "stretched": "its sides are 2.40 : 1",
        "inverted": "an inverted film",
    }
    assert sorted(summary["failed"]) == sorted([*refused, "blank"])
    for case, words in refused.items():
        assert "refused by the quality gate" in summary["failed"][case] and words in summary["failed"][case], case
    assert "a constant image" in summary["failed"]["blank"]  # refused on reading, before the gate
    assert not any((out / case).exists() for case in summary["failed"])
    assert json.loads((out / "failed.json").read_text()) == summary["failed"]
    rows = {row["case"]: row for row in summary["cases"]}
    assert sorted(rows) == ["drr", "drr_framed", "rg1", "rg1_cut"]
    assert rows["drr_framed"]["inputs"]["frontal"]["unexposed_border_px"] == {
        "top": 6,
        "bottom": 6,
        "left": 6,
        "right": 6,
    }
    for case, counterpart in (("rg1", "rg1_cut"), ("drr_framed", "drr")):
        assert rows[case]["frontal_lung_dice"] == pytest.approx(rows[counterpart]["frontal_lung_dice"], abs=0.05), case
    row = rows["rg1"]
    info = row["inputs"]["frontal"]
    assert info["spacing_estimated"] and info["spacing_source"] == "estimate: lung field width"
    assert 0.1 < info["pixel_mm"][0] < 0.3  # a chest film's pixel, not the network's 4.5 mm
    assert info["unexposed_border_px"]["top"] > 0
    assert [w for w in row["warnings"] if "no usable pixel size" in w]
    assert row["frontal_lung_dice"] > 0.7 and row["frontal_body_dice"] > 0.8
    assert info["histogram_distance"] > 0.16 and [
        w for w in row["warnings"] if "far from the training DRRs" in w
    ]  # a processed film
    assert (out / "rg1" / "figure.png").stat().st_size > 20_000
    # independent of the report's segmentation: the reconstruction's air-filled lungs, seen from the
    # front, are two regions, one each side of the midline
    hu = nib.load(out / "rg1" / "recon_hu.nii.gz").get_fdata()
    assert hu.shape == (64, 64, 64)
    body = np.stack(
        [ndimage.binary_fill_holes(s > -300) for s in hu]
    )  # axial slices (y: anterior -> posterior, x: right -> left)
    coronal = ((hu < -500) & body).any(axis=1)  # (z, x): lung air inside the body somewhere along the beam
    labels, n = ndimage.label(ndimage.binary_opening(coronal))
    sizes = ndimage.sum(coronal, labels, range(1, n + 1))
    big = [i + 1 for i in np.argsort(sizes)[::-1][:2]]
    sides = sorted(np.nonzero(labels == b)[1].mean() for b in big)
    assert sides[0] < 32 < sides[1]
