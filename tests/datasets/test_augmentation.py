"""On-the-fly DRR augmentation (duolift_bundle/datasets/augmentation.py): seeded, consistent pairs."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from duolift_bundle.datasets.augmentation import AugmentedDataset, drr_augmentation
from duolift_bundle.datasets.routes import make_dataset
from duolift_bundle.engines.handlers import EpochSeedHandler
from duolift_bundle.geometry import Protocol
from duolift_bundle.synthetic.phantoms import asymmetric_ball_phantom
from duolift_bundle.transforms.drr import DRRProjector
from monai.bundle import ConfigParser
from monai.transforms import ToDeviced
from scipy import ndimage as ndi
from tests.conftest import ROOT, make_small_prepared

SIZE = 32


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    return (
        make_small_prepared(tmp_path_factory.mktemp("aug"), n=3, seed=70, size=SIZE, splits=(3, 0, 0)) / "datalist.json"
    )


def _dataset(datalist, seed=0, **ranges):
    return make_dataset(
        "prepared", "training", 2, Protocol.build(SIZE), datalist=datalist, augmentation=ranges, seed=seed
    )


def test_same_seed_epoch_and_index_give_the_same_pair_in_any_order(prepared):
    a, b = _dataset(prepared), _dataset(prepared)
    first = [a[i] for i in range(3)]
    second = [b[i] for i in (2, 1, 0)][::-1]  # another order, another dataset object
    for x, y in zip(first, second):
        assert (
            torch.equal(x["ct"], y["ct"])
            and torch.equal(x["xray"], y["xray"])
            and torch.equal(x["lung_mask"], y["lung_mask"])
        )


def test_every_epoch_and_seed_sees_new_pairs(prepared):
    ds = _dataset(prepared)
    e0 = ds[0]
    ds.set_epoch(1)
    e1 = ds[0]
    other = _dataset(prepared, seed=1)[0]
    plain = make_dataset("prepared", "training", 2, Protocol.build(SIZE), datalist=prepared)[0]
    for item in (e1, other):
        assert (item["ct"] - e0["ct"]).abs().mean() > 1e-3
        assert (item["xray"] - e0["xray"]).abs().mean() > 1e-3
    assert (e0["xray"] - plain["xray"]).abs().mean() > 1e-3


def test_loader_workers_do_not_change_the_pairs(prepared):
    ds = _dataset(prepared)
    serial = [ds[i]["xray"] for i in range(3)]
    loader = torch.utils.data.DataLoader(ds, batch_size=1, num_workers=2, shuffle=False)
    parallel = [b["xray"][0] for b in loader]
    for s, p in zip(serial, parallel):  # equal up to float summation order (threads differ)
        assert torch.allclose(s, p, atol=1e-5)


def test_xrays_are_the_drrs_of_the_augmented_ct_and_the_mask_moves_with_it(prepared):
    protocol = Protocol.build(SIZE)
    ds = _dataset(prepared)
    item = ds[1]
    # the X-rays are those of the returned (augmented) CT ...
    reference = DRRProjector(protocol)(item["ct"].as_tensor()[None].float(), spacing=(protocol.ct.voxel_mm,) * 3)[0]
    assert torch.allclose(item["xray"], reference, atol=1e-5)
    # ... and the lung mask still covers lung-density voxels of that CT (nearest, labels kept)
    mask = item["lung_mask"][0].numpy()
    assert set(np.unique(mask)) <= {0, 1, 2}
    hu = item["ct"][0].numpy() * 2500.0 - 1024.0
    assert np.median(hu[mask > 0]) < -600.0


def test_a_dense_ball_moves_in_the_ct_and_in_both_drrs_alike():
    """Independent of the projector's code: the ball's position after augmentation (centroid in the
    CT) and the brightest spot of each DRR must move together over many draws."""
    protocol = Protocol.build(SIZE)
    ph = asymmetric_ball_phantom(size=SIZE, centre_mm=(0.0, 0.0, 0.0), radius_mm=25.0)
    unit = torch.from_numpy(np.clip((ph.hu + 1024.0) / 2500.0, 0, 1))[None].float()
    base = [{"ct": unit, "lung_mask": torch.zeros_like(unit, dtype=torch.uint8)}]
    ds = AugmentedDataset(
        base,
        drr_augmentation(
            protocol,
            2,
            translate_mm=40.0,
            rotate_deg=0.0,
            scale=0.0,
            elastic_magnitude_mm=(0.0, 0.0),
            gamma=(1.0, 1.0),
            noise_std=0.0,
            prob=1.0,
        ),
        seed=3,
    )
    ct_w, ct_h, dr_w, lat_w = [], [], [], []
    for epoch in range(8):
        ds.set_epoch(epoch)
        item = ds[0]
        c = ndi.center_of_mass(item["ct"][0].numpy() > 0.8)
        ct_h.append(c[1])
        ct_w.append(c[2])
        fr, lat = item["xray"][0].numpy(), item["xray"][1].numpy()
        dr_w.append(ndi.center_of_mass(fr > fr.max() * 0.9)[1])
        lat_w.append(ndi.center_of_mass(lat > lat.max() * 0.9)[1])
    # the frontal view's columns follow W (right-left), the lateral view's follow H (front-back)
    # (tests/test_orientation.py); a DRR simulated before the shift, or flipped, would not
    assert np.corrcoef(ct_w, dr_w)[0, 1] > 0.9
    assert np.corrcoef(ct_h, lat_w)[0, 1] > 0.9
    assert np.ptp(ct_w) > 2.0 and np.ptp(ct_h) > 2.0  # it moved


def test_only_the_training_split_is_augmented(prepared):
    args = dict(datalist=prepared, augmentation={}, views=2, protocol=Protocol.build(SIZE))
    assert isinstance(make_dataset("prepared", "training", **args), AugmentedDataset)
    assert not isinstance(make_dataset("prepared", "test", **args), AugmentedDataset)


@pytest.mark.parametrize("bad", [{"scale": -0.1}, {"noise_std": -1.0}, {"bogus": 1.0}])
def test_bad_ranges_are_refused(bad):
    with pytest.raises((ValueError, TypeError)):
        drr_augmentation(Protocol.build(SIZE), 2, **bad)


def test_epoch_seed_handler_tells_the_dataset_its_epoch(prepared):
    ds = _dataset(prepared)

    class _Engine:
        state = SimpleNamespace(epoch=4)

    EpochSeedHandler(0, datasets=[ds, object()])(_Engine)
    assert ds.epoch == 4


def test_one_switch_in_train_yaml(prepared):
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "train.yaml"))
    parser.update(
        {
            "bundle_root": str(ROOT),
            "size": SIZE,
            "width": 0.0625,
            "datalist": str(prepared),
            "augment": True,
            "augmentation#rotate_deg": 9.0,
        }
    )
    train = parser.get_parsed_content("train#dataset")
    assert isinstance(train, AugmentedDataset) and len(train) == 3
    # the config's device (the CPU here) comes first, then the warp
    assert isinstance(train.transform.transforms[0], ToDeviced)
    elastic = train.transform.transforms[1]
    assert np.isclose(elastic.rand_3d_elastic.rand_affine_grid.rotate_range[0], np.deg2rad(9.0))
    handler = parser.get_parsed_content("train#handlers")[0]
    assert handler.datasets == [train]
