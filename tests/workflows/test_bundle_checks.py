"""Bundle-level checks: the embedded sample data, the metadata against the code and the installed
packages, MONAI's workflow properties of every config, and the shipped demo model end to end."""

from __future__ import annotations

import csv
import hashlib
import importlib.metadata
import json
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import ROOT
from duolift_bundle.datasets.routes import prepared_dataset
from duolift_bundle.datasets.sample import sample_datalist, sample_dir
from monai.bundle import ConfigParser, ConfigWorkflow


def test_sample_data_is_small_and_attributed():
    files = [f for f in sample_dir().rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) < 8e6  # "a few MB"
    readme = (sample_dir() / "README.md").read_text()
    assert "CC BY 4.0" in readme and "COVID-CT-MD" in readme
    assert "sample_data/normal001" in (ROOT / "docs" / "data_license.txt").read_text()


@pytest.mark.parametrize("size", [128, 64])
def test_sample_data_passes_the_data_contract(size):
    cases = json.loads(sample_datalist(size).read_text())["test"]
    assert [c["case"] for c in cases] == ["normal001", "phantom_0500", "phantom_0501"]
    ds = prepared_dataset(sample_datalist(size), "test", views=2, size=size)  # data-contract checks run here
    for item in ds:
        assert tuple(item["ct"].shape) == (1, size, size, size) and tuple(item["xray"].shape) == (2, size, size)
        assert 0.0 <= float(item["ct"].min()) and float(item["ct"].max()) <= 1.0
        assert item["lung_mask"].sum() > 1000 * (size / 128) ** 3
    with pytest.raises(ValueError, match="prepared at 128"):
        sample_dir(96)


def test_sample_ct_is_the_protocol_volume_to_one_hu(real_ct_dir, tmp_path):
    """The int16 storage of the embedded CT loses nothing beyond 1 HU against a fresh preparation."""
    import nibabel as nib
    from duolift_bundle.datasets.prepare import prepare

    prepare(str(real_ct_dir), str(tmp_path), progress=False)
    fresh = next(p for p in tmp_path.iterdir() if (p / "ct.nii.gz").exists())
    a = np.asarray(nib.load(fresh / "ct.nii.gz").dataobj, dtype=np.float64)
    b = np.asarray(nib.load(sample_dir() / "normal001" / "ct.nii.gz").dataobj, dtype=np.float64)
    assert np.abs(a - b).max() <= 0.5 / 2500 + 1e-7
    np.testing.assert_allclose(
        nib.load(fresh / "ct.nii.gz").affine, nib.load(sample_dir() / "normal001" / "ct.nii.gz").affine
    )


# every file of configs/ and the configs it is merged after (its own comment shows the command)
CONFIG_STACKS = {
    "train.yaml": ("train", "training", []),
    "train_cnn.yaml": ("train", "training", ["train.yaml"]),
    "train_single_view.yaml": ("train", "training", ["train.yaml"]),
    "ablation_lift_conv.yaml": ("train", "training", ["train.yaml"]),
    "ablation_no_dual_branch.yaml": ("train", "training", ["train.yaml"]),
    "ablation_no_masked_loss.yaml": ("train", "training", ["train.yaml"]),
    "ablation_masked_discriminator.yaml": ("train", "training", ["train.yaml"]),
    "ablation_cnn_masked_loss.yaml": ("train", "training", ["train.yaml", "train_cnn.yaml"]),
    "multi_gpu_train.yaml": ("train", "training", ["train.yaml"]),
    "train_phantom_only.yaml": ("train", "training", ["train.yaml", "train_cnn.yaml"]),
    "inference.yaml": ("infer", "inferring", []),
    "evaluate.yaml": ("infer", "evaluating", ["inference.yaml"]),
    "baseline_mean.yaml": ("infer", "evaluating", ["inference.yaml", "evaluate.yaml"]),
    "inference_single_view.yaml": ("infer", "inferring", ["inference.yaml"]),
    "paper.yaml": ("infer", "inferring", ["inference.yaml"]),
    "train_real.yaml": ("train", "training", ["train.yaml"]),
    "train_real_single_view.yaml": ("train", "training", ["train.yaml", "train_real.yaml"]),
    "mlflow_tracking.yaml": (None, None, []),  # a --tracking settings file, not a config to merge
    "compare.yaml": (None, None, []),  # scripts/compare_recipes.py's spec (tests/engines/test_comparison.py)
    "compare_shipped.yaml": (None, None, []),  # likewise: the shipped models, not trained
}


def test_every_config_is_checked():
    on_disk = {p.name for p in (ROOT / "configs").glob("*.yaml")}
    assert on_disk == set(CONFIG_STACKS), "add new configs to CONFIG_STACKS"


@pytest.mark.parametrize("config", sorted(CONFIG_STACKS))
def test_every_config_parses(config):
    """Each file, merged after its base configs, parses; its network definition builds."""
    _, _, base = CONFIG_STACKS[config]
    parser = ConfigParser()
    parser.read_config([str(ROOT / "configs" / f) for f in [*base, config]])
    parser.parse(reset=True)
    if "network_def" in parser:
        parser.update({"bundle_root": str(ROOT), "size": 32, "width": 0.0625})
        assert isinstance(parser.get_parsed_content("network_def", instantiate=True), torch.nn.Module)


# multi_gpu_train.yaml wraps the networks in DDP, which needs a process group: tests/engines/test_training.py
# runs it under torchrun instead
@pytest.mark.parametrize(
    "config", sorted(c for c, (kind, _, _) in CONFIG_STACKS.items() if kind and c != "multi_gpu_train.yaml")
)
def test_configs_have_monai_workflow_properties(config, tmp_path):
    """MONAI's ConfigWorkflow finds every required property of the workflow type (the ids resolve,
    with the embedded sample data as the dataset and a 1/16-width model)."""
    workflow_type, run_id, base = CONFIG_STACKS[config]
    workflow = ConfigWorkflow(
        config_file=[str(ROOT / "configs" / f) for f in [*base, config]],
        meta_file=str(ROOT / "configs" / "metadata.json"),
        logging_file=str(ROOT / "configs" / "logging.conf"),
        workflow_type=workflow_type,
        run_id=run_id,
        bundle_root=str(ROOT),
        dataset_dir=str(sample_dir()),
        baseline_datalist=str(sample_datalist()),
        input_dir=str(sample_dir() / "normal001"),
        output_dir=str(tmp_path / "out"),
        ckpt_dir=str(tmp_path / "models"),
        resume_dir=str(tmp_path / "ckpt"),
        width=0.0625,
        size=128,
        lpips=False,
        lung_segmenter="classical",
        vessel_segmenter="frangi",
    )
    workflow.parser.parse(reset=True)
    workflow._is_initialized = True  # parse only: nothing is run, no checkpoint is needed
    if workflow_type == "infer":
        workflow.parser["network"] = "@network_def"
    assert workflow.check_properties() == []


# ---------------------------------------------------------------- metadata against code and packages


def _pyproject_pins() -> dict[str, str]:
    text = (ROOT / "pyproject.toml").read_text()
    deps = text.split("dependencies = [", 1)[1].split("]", 1)[0]
    pins = dict(re.findall(r'"([A-Za-z0-9_.-]+)==([^"]+)"', deps))
    assert len(pins) == deps.count('"') // 2, "every dependency is pinned exactly"
    return pins


def test_metadata_versions_match_pyproject_and_environment():
    meta = json.loads((ROOT / "configs" / "metadata.json").read_text())
    pins = _pyproject_pins()
    assert meta["pytorch_version"] == pins["torch"] and meta["monai_version"] == pins["monai"]
    assert meta["numpy_version"] == pins["numpy"]
    assert meta["required_packages_version"] == {k: v for k, v in pins.items() if k not in ("torch", "monai", "numpy")}
    for name, version in pins.items():
        assert importlib.metadata.version(name).split("+")[0] == version, f"{name} installed differs from its pin"
    import duolift_bundle

    assert meta["version"] == duolift_bundle.__version__  # pyproject.toml reads the same attribute
    assert 'version = { attr = "duolift_bundle.__version__" }' in (ROOT / "pyproject.toml").read_text()
    assert list(meta["changelog"])[0] == meta["version"]


def test_metadata_network_format_matches_the_network():
    """Channels, shapes and value range of metadata.json are those of inference.yaml's default network."""
    meta = json.loads((ROOT / "configs" / "metadata.json").read_text())
    inp, out = meta["network_data_format"]["inputs"]["image"], meta["network_data_format"]["outputs"]["pred"]
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "inference.yaml"))
    parser["bundle_root"] = str(ROOT)
    default = parser.get_parsed_content("network_def", lazy=False)
    assert inp["num_channels"] == parser["views"] == default.views == len(inp["channel_def"]) == 2
    assert inp["spatial_shape"] == [default.image_size] * 2 and out["spatial_shape"] == [default.volume_size] * 3
    assert out["num_channels"] == 1 and inp["value_range"] == out["value_range"] == [0, 1]
    assert inp["dtype"] == out["dtype"] == "float32"
    for field in ("intended_use", "task", "description", "authors", "copyright", "references"):
        assert meta[field], field
    # the value range holds: a small network of the same code maps any X-rays into [0, 1]
    parser.update({"size": 32, "width": 0.0625})
    net = parser.get_parsed_content("network_def", lazy=False).eval()
    with torch.no_grad():
        y = net(torch.rand(2, 2, 32, 32) * torch.tensor([1.0, 0.0]).view(1, 2, 1, 1))
    assert (
        y.dtype == torch.float32 and y.shape == (2, 1, 32, 32, 32) and 0.0 <= float(y.min()) and float(y.max()) <= 1.0
    )


# ---------------------------------------------------------------- the shipped models

PHANTOM_JSON = ROOT / "docs" / "phantom_model.json"
SHIPPED_JSON = ROOT / "docs" / "shipped_models.json"
TRAIN_CONFIGS = {
    "double_view": ["train.yaml", "train_real.yaml"],
    "single_view": ["train.yaml", "train_real.yaml", "train_real_single_view.yaml"],
}


def _shipped() -> dict:
    return json.loads(SHIPPED_JSON.read_text())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_phantom_only_model_matches_its_provenance():
    """models/phantom_cnn.pt (the former demo model, now a baseline row and the warm start of the
    shipped models) is the file its record describes, and its recipe is what its configs resolve to."""
    from duolift_bundle.networks import load_generator

    record, path = json.loads(PHANTOM_JSON.read_text()), ROOT / "models" / "phantom_cnn.pt"
    assert _sha256(path) == record["sha256"], "models/phantom_cnn.pt is not the recorded phantom-only model"
    parser = ConfigParser()
    parser.read_config([str(ROOT / "configs" / f) for f in ("train.yaml", "train_cnn.yaml", "train_phantom_only.yaml")])
    parser["bundle_root"] = "."
    for key, value in record["training"]["settings"].items():
        assert parser.get_parsed_content(key) == value, key
    reported = json.loads((ROOT / "configs" / "metadata.json").read_text())["eval_metrics"]
    for who, rec in (("phantom_model", record["heldout"]), ("mean_volume_baseline", record["baseline"]["heldout"])):
        assert reported[f"{who}_heldout_phantoms_psnr_3d"] == round(rec["psnr_3d"]["mean"], 2)
        assert reported[f"{who}_heldout_phantoms_ssim_3d"] == round(rec["ssim_3d"]["mean"], 3)
    parser = ConfigParser()
    parser.read_config([str(ROOT / "configs" / "inference.yaml")])
    net = load_generator(parser.get_parsed_content("network_def"), path)
    assert sum(p.numel() for p in net.parameters()) == record["parameters"]


@pytest.mark.parametrize("key", ["double_view", "single_view"])
def test_shipped_model_matches_its_record(key):
    """The weights are the recorded files, their recipe is what the training configs resolve to,
    they load into their inference configs, and the metadata reports the recorded numbers."""
    from duolift_bundle.networks import load_generator
    from duolift_bundle.registry import load_registry

    record, spec = _shipped()["models"][key], load_registry(ROOT).models[key]
    assert record["file"] == spec.file and record["sha256"] == spec.sha256  # the record measured the registered file
    path = ROOT / record["file"]
    assert path.stat().st_size < 25e6
    assert (
        _sha256(path) == record["sha256"]
    ), f"{record['file']} is not the shipped model (retrained here? git checkout {record['file']})"
    train = ConfigParser()
    train.read_config([str(ROOT / "configs" / f) for f in TRAIN_CONFIGS[key]])
    train["bundle_root"] = "."
    for name, value in record["training"]["settings"].items():
        assert train.get_parsed_content(name) == value, name
    parser = ConfigParser()
    parser.read_config([str(ROOT / f) for f in spec.configs])
    parser["bundle_root"] = str(ROOT)
    net = load_generator(parser.get_parsed_content("network_def"), path)
    assert sum(p.numel() for p in net.parameters()) == record["parameters"]
    assert parser.get_parsed_content("ckpt_path") == str(path)
    reported = json.loads((ROOT / "configs" / "metadata.json").read_text())["eval_metrics"]
    for metric in ("psnr_3d", "ssim_3d"):
        assert reported[f"{key}_normal001_{metric}"] == round(record["sample"]["normal001"][metric], 3)


def test_shipped_baselines_match_their_record():
    for key, record in _shipped()["baselines"].items():
        assert _sha256(ROOT / record["file"]) == record["sha256"], key


def test_leave_one_out_record_has_every_fold_and_its_baselines():
    """The model card's leave-one-out table: each real CT held out once, both models and the
    baselines scored on it (docs/real_ct_loo.json, scripts/real_ct_report.py)."""
    folds = _shipped()["leave_one_out"]
    assert sorted(folds) == ["P002", "cap002", "normal001"]
    for fold in folds.values():
        assert {
            "DuoLift-CNN double view",
            "DuoLift-CNN single view",
            "phantom-only model (before)",
            "mean of the other real CTs",
        } <= set(fold["rows"])


def test_leave_one_out_bone_columns_by_hand():
    """real_ct_report's bone columns on a soft-tissue cube (0 HU) holding a 700 HU block: the
    target scores itself 700 / 700 HU, a volume of soft tissue 0 / 0, one brightened by 300 HU
    everywhere 300 / 0 (a raised mean without contrast); soft tissue beyond 3 voxels and air are
    not "beside" the bone."""
    import importlib.util

    from conftest import hu_to_unit

    spec = importlib.util.spec_from_file_location("real_ct_report", ROOT / "scripts" / "real_ct_report.py")
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    hu = np.full((16, 16, 16), -1000.0)
    hu[2:14, 2:14, 2:14] = 0.0
    hu[7:9, 7:9, 7:9] = 700.0
    target = hu_to_unit(hu).astype(np.float32)
    bone, beside = report._bone_regions(target, 300.0)
    assert bone.sum() == 8 and beside.sum() == 8**3 - 8  # the 3-voxel neighbourhood: an 8^3 cube
    cases = {
        "target": (target, 700.0, 700.0),
        "soft": (hu_to_unit(np.zeros_like(hu)), 0.0, 0.0),
        "bright": (hu_to_unit(hu * 0 + 300.0), 300.0, 0.0),
    }
    for name, (volume, mean, contrast) in cases.items():
        got = report._bone_columns(volume, bone, beside)
        assert got == {
            "bone_hu": pytest.approx(mean, abs=0.2),
            "bone_contrast_hu": pytest.approx(contrast, abs=0.2),
        }, name


def _frontal_png(case: str, folder: Path) -> None:
    """The sample case's frontal DRR as an 8-bit PNG radiograph file (the only file of the case)."""
    from PIL import Image

    img = np.asarray(nib.load(sample_dir(64) / case / "xray_frontal.nii.gz").dataobj, dtype=np.float64).squeeze()
    folder.mkdir(parents=True)
    Image.fromarray(np.round(img / img.max() * 255).astype(np.uint8)).save(folder / "frontal.png")


@pytest.mark.slow
def test_single_view_config_reconstructs_one_frontal_radiograph_file(tmp_path):
    """inference.yaml + inference_single_view.yaml on a folder holding one frontal PNG: a 64^3 HU
    volume on the protocol grid, as close to the true CT as the model card says."""
    from conftest import hu_to_unit
    from duolift_bundle.metrics.image import psnr_3d

    _frontal_png("normal001", tmp_path / "in" / "normal001")
    out = tmp_path / "out"
    pixel_mm = (
        500.0 * 541.0 / 949.0 / 64
    )  # a PNG carries no pixel size: the DRR's, at the patient, given as the README says
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "inferring",
        "--config_file",
        "['configs/inference.yaml','configs/inference_single_view.yaml']",
        "--input_dir",
        str(tmp_path / "in"),
        "--output_dir",
        str(out),
        "--progress",
        "False",
        "--xray_pixel_spacing",
        str(pixel_mm),
    ]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    img = nib.load(out / "normal001" / "recon_hu.nii.gz")
    assert img.shape == (64, 64, 64)
    np.testing.assert_allclose(np.linalg.norm(img.affine[:3, :3], axis=0), 5.0)
    target = np.asarray(nib.load(sample_dir(64) / "normal001" / "ct.nii.gz").dataobj, dtype=np.float64)
    expected = _shipped()["models"]["single_view"]["sample"]["normal001"]["psnr_3d"]
    assert psnr_3d(hu_to_unit(img.get_fdata()), target) == pytest.approx(expected, abs=0.3)  # PNG: 8-bit quantised


@pytest.mark.slow
def test_quickstart_reconstructs_the_sample(tmp_path):
    """The README's first command (after set-up): both shipped models and the baselines on the
    sample, NIfTI, metrics and figures, the paths printed, and the metrics of the model card."""
    out = tmp_path / "quickstart"
    result = subprocess.run(
        [sys.executable, "scripts/quickstart.py", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    shipped = _shipped()
    for case in ("normal001", "phantom_0500", "phantom_0501"):
        figure = out / "figures" / f"{case}.png"
        assert str(figure) in result.stdout and figure.stat().st_size > 10_000
        for folder in ("double_view", "single_view"):
            recon = out / folder / "reconstructions" / case / "recon_hu.nii.gz"
            assert str(recon) in result.stdout
            # the reconstruction opens on top of its true CT: same grid, same affine
            truth, img = nib.load(sample_dir(64) / case / "ct.nii.gz"), nib.load(recon)
            assert img.shape == truth.shape == (64, 64, 64)
            np.testing.assert_allclose(img.affine, truth.affine, atol=1e-4)
    records = {**shipped["models"], **shipped["baselines"]}
    for folder, record in records.items():
        rows = {r["case"]: r for r in csv.DictReader(open(out / folder / "metrics.csv"))}
        for case, expected in record["sample"].items():
            for key in ("psnr_3d", "ssim_3d"):
                assert float(rows[case][key]) == pytest.approx(expected[key], abs=2e-3), (folder, case, key)
    table = (out / "table.md").read_text()
    assert "real (held out)" in table and "synthetic" in table and "mean of the real training CTs" in table
    # the double-view model beats the baseline that sees no X-ray on the real case it never saw
    dv, mean = (
        shipped["models"]["double_view"]["sample"]["normal001"],
        shipped["baselines"]["mean_real_training_cts"]["sample"]["normal001"],
    )
    assert dv["psnr_3d"] > mean["psnr_3d"] + 2.0 and dv["ssim_3d"] > mean["ssim_3d"] + 0.15
