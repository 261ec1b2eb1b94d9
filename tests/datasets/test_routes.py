"""Dataset routes, the data contract checks, and the bundle files (metadata, configs)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from conftest import ROOT
from duolift_bundle.datasets.routes import (
    load_datalist,
    prepared_dataset,
    raw_ct_dataset,
    x2ct_h5_dataset,
)
from duolift_bundle.geometry import Protocol
from duolift_bundle.transforms.contract import CheckContractd, DataContractError


def _check_contract(sample, views=2):
    assert tuple(sample["ct"].shape) == (1, 128, 128, 128) and sample["ct"].dtype == torch.float32
    assert tuple(sample["xray"].shape) == (views, 128, 128) and sample["xray"].dtype == torch.float32
    assert tuple(sample["lung_mask"].shape) == (1, 128, 128, 128) and sample["lung_mask"].dtype == torch.uint8
    assert 0 <= float(sample["ct"].min()) and float(sample["ct"].max()) <= 1


@pytest.mark.parametrize("views", [1, 2])
def test_prepared_route(phantom_set, views):
    ds = prepared_dataset(phantom_set / "datalist.json", "training", views=views)
    assert len(ds) >= 1
    sample = ds[0]
    _check_contract(sample, views)
    # the frontal channel is the frontal file
    import nibabel as nib

    item = load_datalist(phantom_set / "datalist.json", "training")[0]
    np.testing.assert_allclose(sample["xray"][0].numpy(), nib.load(item["xray_frontal"]).get_fdata(), atol=1e-6)


def test_raw_route_matches_prepared(phantom_set, tmp_path):
    """The in-config raw route gives the tensors the preparation wrote (its NIfTI round trip
    loses nothing beyond float32 rounding), and PersistentDataset caches it."""
    from duolift_bundle.datasets.routes import prepared_transforms

    raw = phantom_set / "raw" / "phantom_0010.nii.gz"
    ds = raw_ct_dataset(str(raw), None, protocol=Protocol.build(lazy=True), cache_dir=tmp_path / "cache")
    sample = ds[0]
    _check_contract(sample)
    assert any((tmp_path / "cache").iterdir()), "PersistentDataset must cache the deterministic chain"
    case = phantom_set / "phantom_0010"
    ref = prepared_transforms()(
        {
            "case": "phantom_0010",
            "ct": str(case / "ct.nii.gz"),
            "lung_mask": str(case / "lung_mask.nii.gz"),
            "xray_frontal": str(case / "xray_frontal.nii.gz"),
            "xray_lateral": str(case / "xray_lateral.nii.gz"),
        }
    )
    assert torch.allclose(torch.as_tensor(sample["ct"]), torch.as_tensor(ref["ct"]), atol=1e-5)
    assert torch.allclose(torch.as_tensor(sample["xray"]), torch.as_tensor(ref["xray"]), atol=1e-5)
    assert torch.equal(torch.as_tensor(sample["lung_mask"]), torch.as_tensor(ref["lung_mask"]))


def test_x2ct_route(tmp_path):
    from conftest import hu_to_unit
    from duolift_bundle.inputs.x2ct_h5 import write_x2ct_h5
    from duolift_bundle.synthetic.phantoms import make_phantom
    from duolift_bundle.transforms.drr import DRRProjector

    ph = make_phantom(8, size=64)
    ct = np.clip(hu_to_unit(ph.hu), 0, 1).astype(np.float32)
    xr = DRRProjector(Protocol.build(size=64))(torch.from_numpy(ct)[None, None])[0].numpy()
    for name in ("A", "B"):
        write_x2ct_h5(tmp_path / name / "ct_xray_data.h5", ct, xr)
    (tmp_path / "list.txt").write_text("B\n")
    ds = x2ct_h5_dataset(tmp_path, names_file=tmp_path / "list.txt")
    assert len(ds) == 1 and ds[0]["case"] == "B"
    _check_contract(ds[0])
    assert ds[0]["lung_mask"].sum() > 1000


def test_contract_errors_name_the_case(phantom_set, tmp_path):
    good = {
        "case": "c1",
        "ct": torch.zeros(1, 128, 128, 128),
        "xray": torch.zeros(2, 128, 128),
        "lung_mask": torch.zeros(1, 128, 128, 128),
    }
    CheckContractd()(good)
    with pytest.raises(DataContractError, match=r"c1: 'ct' has shape \(1, 64, 64, 64\), expected \(1, 128, 128, 128\)"):
        CheckContractd()({**good, "ct": torch.zeros(1, 64, 64, 64)})
    with pytest.raises(DataContractError, match="c1: missing 'lung_mask'"):
        CheckContractd()({k: v for k, v in good.items() if k != "lung_mask"})
    with pytest.raises(DataContractError, match="c1: 'xray' values in"):
        CheckContractd()({**good, "xray": torch.full((2, 128, 128), 3.0)})
    with pytest.raises(DataContractError, match="NaN"):
        CheckContractd()({**good, "ct": torch.full((1, 128, 128, 128), float("nan"))})
    doc = json.loads((phantom_set / "datalist.json").read_text())
    doc["training"][0]["ct"] = "nowhere/ct.nii.gz"
    (tmp_path / "dl.json").write_text(json.dumps(doc))
    with pytest.raises(FileNotFoundError, match="lists 'ct' = .*nowhere/ct.nii.gz, which does not exist"):
        load_datalist(tmp_path / "dl.json", "training")
    del doc["training"][0]["lung_mask"]
    (tmp_path / "dl.json").write_text(json.dumps(doc))
    with pytest.raises(KeyError, match="has no 'lung_mask' entry"):
        load_datalist(tmp_path / "dl.json", "training", check_files=False)


def test_metadata_single_source_and_fields():
    top, linked = ROOT / "metadata.json", ROOT / "configs" / "metadata.json"
    assert linked.is_symlink() and os.path.samefile(top, linked)
    meta = json.loads(linked.read_text())
    for field in (
        "version",
        "changelog",
        "monai_version",
        "pytorch_version",
        "numpy_version",
        "required_packages_version",
        "task",
        "description",
        "authors",
        "copyright",
        "network_data_format",
        "intended_use",
        "references",
    ):
        assert field in meta, field
    import monai

    assert meta["monai_version"] == monai.__version__
    assert meta["pytorch_version"] == torch.__version__.split("+")[0]
    assert meta["version"] in meta["changelog"]
    inp = meta["network_data_format"]["inputs"]["image"]
    out = meta["network_data_format"]["outputs"]["pred"]
    assert inp["num_channels"] == 2 and inp["spatial_shape"] == [64, 64]  # the shipped double-view model
    assert out["spatial_shape"] == [64, 64, 64] and out["value_range"] == [0, 1]


def test_preparing_draws_the_raw_route_of_train_yaml(phantom_set, tmp_path):
    """`run preparing` of train.yaml: the raw route (discovery -> raw chain) reaches the data
    contract from raw CT files, and a figure is written per case."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "train.yaml"))
    parser.update({"bundle_root": str(ROOT), "data_format": "raw", "raw_source": str(phantom_set / "raw" / "phantom_0011.nii.gz"),
                   "protocol#lazy": True, "figure_dir": str(tmp_path / "figs")})  # fmt: skip
    parser.get_parsed_content("preparing")
    assert (tmp_path / "figs" / "phantom_0011.png").stat().st_size > 10_000
    from duolift_bundle.datasets.routes import make_dataset

    raw = make_dataset("raw", None, protocol=parser.get_parsed_content("protocol"), raw_source=str(phantom_set / "raw"))
    assert sorted(d["case"] for d in raw) == [f"phantom_{i:04d}" for i in range(10, 14)]
    _check_contract(raw[0])
    # the training loader collates the route's items (no None entries in them)
    from monai.data import DataLoader

    batch = next(iter(DataLoader(raw, batch_size=2)))
    assert tuple(batch["xray"].shape) == (2, 2, 128, 128) and len(batch["case"]) == 2


def test_logging_conf_is_loadable():
    import logging.config

    logging.config.fileConfig(ROOT / "configs" / "logging.conf", disable_existing_loggers=False)
    root = logging.getLogger()
    assert root.level == logging.INFO
    assert any(isinstance(h, logging.StreamHandler) and "%(levelname)s" in h.formatter._fmt for h in root.handlers)
