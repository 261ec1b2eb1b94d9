"""Bundle-level checks: the embedded sample data, and MONAI's workflow properties of every config."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from monai.bundle import ConfigWorkflow

from duolift_bundle.data.datasets import prepared_dataset
from duolift_bundle.data.sample import sample_datalist, sample_dir

ROOT = Path(__file__).resolve().parents[1]


def test_sample_data_is_small_complete_and_attributed():
    files = [f for f in sample_dir().rglob("*") if f.is_file()]
    assert sum(f.stat().st_size for f in files) < 8e6  # "a few MB"
    cases = json.loads(sample_datalist().read_text())["test"]
    assert [c["case"] for c in cases] == ["normal001", "phantom_0500", "phantom_0501"]
    ds = prepared_dataset(sample_datalist(), "test", views=2, size=128)  # data-contract checks run here
    for item in ds:
        assert tuple(item["ct"].shape) == (1, 128, 128, 128) and tuple(item["xray"].shape) == (2, 128, 128)
        assert 0.0 <= float(item["ct"].min()) and float(item["ct"].max()) <= 1.0
        assert item["lung_mask"].sum() > 1000
    readme = (sample_dir() / "README.md").read_text()
    assert "CC BY 4.0" in readme and "COVID-CT-MD" in readme
    assert "sample_data/normal001" in (ROOT / "docs" / "data_license.txt").read_text()


def test_sample_ct_is_the_protocol_volume_to_one_hu(real_ct_dir, tmp_path):
    """The int16 storage of the embedded CT loses nothing beyond 1 HU against a fresh preparation."""
    import nibabel as nib

    from duolift_bundle.data.prepare import PrepareOptions, prepare

    prepare(str(real_ct_dir), str(tmp_path), PrepareOptions(), progress=False)
    fresh = next(p for p in tmp_path.iterdir() if (p / "ct.nii.gz").exists())
    a = np.asarray(nib.load(fresh / "ct.nii.gz").dataobj, dtype=np.float64)
    b = np.asarray(nib.load(sample_dir() / "normal001" / "ct.nii.gz").dataobj, dtype=np.float64)
    assert np.abs(a - b).max() <= 0.5 / 2500 + 1e-7
    np.testing.assert_allclose(nib.load(fresh / "ct.nii.gz").affine, nib.load(sample_dir() / "normal001" / "ct.nii.gz").affine)


@pytest.mark.parametrize(
    "config, workflow_type, run_id",
    [("train.yaml", "train", "training"), ("inference.yaml", "infer", "inferring"), ("evaluate.yaml", "infer", "evaluating")],
)
def test_configs_have_monai_workflow_properties(config, workflow_type, run_id, tmp_path):
    """MONAI's ConfigWorkflow finds every required property of the workflow type (the ids resolve,
    with the embedded sample data as the dataset and a 1/16-width model)."""
    workflow = ConfigWorkflow(
        config_file=str(ROOT / "configs" / config),
        meta_file=str(ROOT / "configs" / "metadata.json"),
        logging_file=str(ROOT / "configs" / "logging.conf"),
        workflow_type=workflow_type,
        run_id=run_id,
        bundle_root=str(ROOT),
        dataset_dir=str(sample_dir()),
        input_dir=str(sample_dir() / "normal001"),
        output_dir=str(tmp_path / "out"),
        ckpt_dir=str(tmp_path / "models"),
        checkpoint_dir=str(tmp_path / "ckpt"),
        width=0.0625,
        lpips=False,
        lung_segmenter="classical",
        vessel_segmenter="frangi",
    )
    workflow.parser.parse(reset=True)
    workflow._is_initialized = True  # parse only: nothing is run, no checkpoint is needed
    if workflow_type == "infer":
        workflow.parser["network"] = "@network_def"
    assert workflow.check_properties() == []
