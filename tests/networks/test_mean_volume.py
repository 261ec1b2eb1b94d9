"""The mean-volume baseline (duolift_bundle/networks/mean_volume.py)."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
import torch
from duolift_bundle.networks import MeanVolume
from tests.conftest import make_small_prepared


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return make_small_prepared(tmp_path_factory.mktemp("mean"), n=3, seed=40, size=32, splits=(3, 0, 0))


def _ct(folder, case):
    return np.asarray(nib.load(folder / case / "ct.nii.gz").dataobj, dtype=np.float64)


def test_mean_of_the_training_cts_whatever_the_xrays(prepared):
    net = MeanVolume.from_datalist(str(prepared / "datalist.json"), "training", 32)
    expected = np.mean([_ct(prepared, f"phantom_00{s}") for s in (40, 41, 42)], axis=0)
    out = net(torch.rand(2, 2, 32, 32))
    assert tuple(out.shape) == (2, 1, 32, 32, 32)
    np.testing.assert_allclose(out[1, 0].numpy(), expected, atol=1e-6)


def test_a_ct_listed_twice_counts_once(prepared, tmp_path):
    doc = json.loads((prepared / "datalist.json").read_text())
    doc["training"] = doc["training"] + doc["training"][:1] * 4  # repeats, as compose_datalist writes them
    for item in doc["training"]:
        for k, v in list(item.items()):
            if isinstance(v, str) and v.endswith(".nii.gz"):
                item[k] = str(prepared / v)
    (tmp_path / "datalist.json").write_text(json.dumps(doc))
    a = MeanVolume.from_datalist(str(tmp_path / "datalist.json"), "training")
    b = MeanVolume.from_datalist(str(prepared / "datalist.json"), "training")
    assert torch.allclose(a.mean, b.mean)


def test_saved_volume_round_trips_and_wrong_sizes_are_refused(prepared, tmp_path):
    net = MeanVolume.from_files([str(prepared / "phantom_0040" / "ct.nii.gz")], 32)
    path = net.save(str(tmp_path / "sub" / "mean.nii.gz"))
    back = MeanVolume.from_file(path, 32)
    assert torch.allclose(back.mean, net.mean.float(), atol=1e-6)
    assert np.allclose(np.linalg.norm(nib.load(path).affine[:3, :3], axis=0), 10.0)  # 320 mm / 32
    with pytest.raises(ValueError, match="expected"):
        MeanVolume.from_file(path, 64)
    with pytest.raises(FileNotFoundError, match="nope.nii.gz"):
        MeanVolume.from_file(str(tmp_path / "nope.nii.gz"))
    with pytest.raises(ValueError, match="expected"):
        MeanVolume.from_files([str(prepared / "phantom_0040" / "ct.nii.gz")], 64)
