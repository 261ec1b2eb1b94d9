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

import numpy as np
import pytest
import torch
from conftest import ROOT
from monai.bundle import ConfigParser, ConfigWorkflow

from duolift_bundle.data.datasets import prepared_dataset
from duolift_bundle.data.sample import sample_datalist, sample_dir



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

    from duolift_bundle.data.prepare import prepare

    prepare(str(real_ct_dir), str(tmp_path), progress=False)
    fresh = next(p for p in tmp_path.iterdir() if (p / "ct.nii.gz").exists())
    a = np.asarray(nib.load(fresh / "ct.nii.gz").dataobj, dtype=np.float64)
    b = np.asarray(nib.load(sample_dir() / "normal001" / "ct.nii.gz").dataobj, dtype=np.float64)
    assert np.abs(a - b).max() <= 0.5 / 2500 + 1e-7
    np.testing.assert_allclose(nib.load(fresh / "ct.nii.gz").affine, nib.load(sample_dir() / "normal001" / "ct.nii.gz").affine)


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
    "train_demo.yaml": ("train", "training", ["train.yaml", "train_cnn.yaml", "demo.yaml"]),
    "inference.yaml": ("infer", "inferring", []),
    "demo.yaml": ("infer", "inferring", ["inference.yaml"]),
    "evaluate.yaml": ("infer", "evaluating", ["inference.yaml"]),
    "baseline_mean.yaml": ("infer", "evaluating", ["inference.yaml", "evaluate.yaml", "demo.yaml"]),
    "mlflow_tracking.yaml": (None, None, []),  # a --tracking settings file, not a config to merge
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
@pytest.mark.parametrize("config", sorted(c for c, (kind, _, _) in CONFIG_STACKS.items() if kind and c != "multi_gpu_train.yaml"))
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
        checkpoint_dir=str(tmp_path / "ckpt"),
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
    assert y.dtype == torch.float32 and y.shape == (2, 1, 32, 32, 32) and 0.0 <= float(y.min()) and float(y.max()) <= 1.0


# ---------------------------------------------------------------- the shipped demo model

DEMO_JSON = ROOT / "docs" / "demo_model.json"


def _demo() -> dict:
    return json.loads(DEMO_JSON.read_text())


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_demo_model_matches_its_provenance():
    """models/model.pt is the file the model card describes, its recipe is what the demo configs
    resolve to, and it loads into the network of configs/demo.yaml."""
    from duolift_bundle.networks import load_generator

    demo, path = _demo(), ROOT / "models" / "model.pt"
    assert path.stat().st_size < 25e6
    assert _sha256(path) == demo["sha256"], "models/model.pt is not the shipped demo model (retrained here? git checkout models/model.pt)"
    parser = ConfigParser()
    parser.read_config([str(ROOT / "configs" / f) for f in ("train.yaml", "train_cnn.yaml", "demo.yaml", "train_demo.yaml")])
    parser["bundle_root"] = "."
    for key, value in demo["training"]["settings"].items():
        assert parser.get_parsed_content(key) == value, key
    reported = json.loads((ROOT / "configs" / "metadata.json").read_text())["eval_metrics"]
    for who, record in (("demo_model", demo["heldout"]), ("mean_volume_baseline", demo["baseline"]["heldout"])):
        assert reported[f"{who}_heldout_phantoms_psnr_3d"] == round(record["psnr_3d"]["mean"], 2)
        assert reported[f"{who}_heldout_phantoms_ssim_3d"] == round(record["ssim_3d"]["mean"], 3)
    parser = ConfigParser()
    parser.read_config([str(ROOT / "configs" / "inference.yaml"), str(ROOT / "configs" / "demo.yaml")])
    net = load_generator(parser.get_parsed_content("network_def"), path)
    assert sum(p.numel() for p in net.parameters()) == demo["parameters"]


@pytest.mark.slow
def test_inference_yaml_on_the_embedded_sample(tmp_path):
    """inference.yaml + demo.yaml on the 64^3 sample's X-ray files: one HU volume per case, and on
    the phantoms the demo model beats the mean-volume baseline as the model card says."""
    from duolift_bundle.constants import hu_to_unit
    from duolift_bundle.metrics.image import psnr_3d

    demo, out = _demo(), tmp_path / "out"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "inferring", "--config_file", "['configs/inference.yaml','configs/demo.yaml']",
           "--input_dir", str(sample_dir(64)), "--output_dir", str(out), "--progress", "False"]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert [c["case"] for c in summary["cases"]] == ["normal001", "phantom_0500", "phantom_0501"]
    import nibabel as nib

    for case in ("normal001", "phantom_0500", "phantom_0501"):
        img = nib.load(out / case / "recon_hu.nii.gz")
        hu = img.get_fdata()
        assert hu.shape == (64, 64, 64) and -1024.5 <= hu.min() and hu.max() <= 1476.5
        np.testing.assert_allclose(np.linalg.norm(img.affine[:3, :3], axis=0), 5.0)  # voxels of 320 mm / 64
        target = np.asarray(nib.load(sample_dir(64) / case / "ct.nii.gz").dataobj, dtype=np.float64)
        psnr = psnr_3d(hu_to_unit(hu), target)
        assert abs(psnr - demo["sample"][case]["psnr_3d"]) < 0.1, case  # the model card's numbers
        if case.startswith("phantom"):
            assert psnr > demo["baseline"]["heldout"]["psnr_3d"]["mean"] + 1.0


@pytest.mark.slow
def test_quickstart_reconstructs_the_sample(tmp_path):
    """The README's first command (after set-up): NIfTI, metrics and figures of the sample's
    reconstruction, the paths printed, and the metrics of the model card."""
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "scripts/quickstart.py", "--out", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    demo = _demo()
    for case in ("normal001", "phantom_0500", "phantom_0501"):
        recon = out / "reconstructions" / case / "recon_hu.nii.gz"
        figure = out / "figures" / f"{case}.png"
        assert str(recon) in result.stdout and str(figure) in result.stdout
        assert figure.stat().st_size > 10_000
        import nibabel as nib

        # the reconstruction opens on top of its true CT: same grid, same affine
        truth = nib.load(sample_dir(64) / case / "ct.nii.gz")
        img = nib.load(recon)
        assert img.shape == truth.shape == (64, 64, 64)
        np.testing.assert_allclose(img.affine, truth.affine, atol=1e-4)
    rows = {r["case"]: r for r in csv.DictReader(open(out / "metrics.csv"))}
    for case, expected in demo["sample"].items():
        for key in ("psnr_3d", "ssim_3d"):
            assert float(rows[case][key]) == pytest.approx(expected[key], abs=2e-3), (case, key)
    assert "classical lung mask" in (out / "table.md").read_text()
