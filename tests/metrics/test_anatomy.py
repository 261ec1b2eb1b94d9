"""Anatomical DICE chain: segmenters, offline weights resolution, TotalSegmentator label handling."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import dice as reference_dice
from duolift_bundle.metrics.anatomy import (
    ClassicalLungSegmenter,
    FrangiVesselSegmenter,
    LungmaskR231,
    TotalSegmentatorVessels,
    anatomical_dice,
    dice,
)
from duolift_bundle.metrics.weights import LUNGMASK_R231, WeightsNotFoundError, resolve_weights, torch_hub_dir


@pytest.fixture(scope="module")
def phantom64():
    from duolift_bundle.synthetic.phantoms import make_phantom

    return make_phantom(seed=1, size=64), (5.0, 5.0, 5.0)


def test_dice_by_hand():
    a = np.zeros((2, 2, 2), bool)
    b = np.zeros((2, 2, 2), bool)
    assert dice(a, b) == 1.0
    a[0, 0, :] = True  # 2 voxels
    b[0, :, 0] = True  # 2 voxels, 1 shared
    assert dice(a, b) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="shapes differ"):
        dice(a, b[0])


def test_offline_fallbacks_find_the_phantom_anatomy(phantom64):
    ph, spacing = phantom64
    lung = ClassicalLungSegmenter()(ph.hu, spacing)
    vessels = FrangiVesselSegmenter()(ph.hu, spacing)
    assert reference_dice(lung, ph.lung) > 0.95
    assert reference_dice(vessels, ph.vessels) > 0.7  # ground-truth vessel tree of the phantom
    result = anatomical_dice(ph.hu, ph.hu, spacing, ClassicalLungSegmenter(), FrangiVesselSegmenter())
    assert result["dice_lung"] == 1.0 and result["dice_vessel"] == 1.0
    assert "fallback" in result["lung_segmenter"] and "fallback" in result["vessel_segmenter"]
    blurred = ph.hu.copy()
    blurred[:, :, ::2] = -1000.0  # destroy half the columns: DICE must drop
    worse = anatomical_dice(blurred, ph.hu, spacing, ClassicalLungSegmenter(), FrangiVesselSegmenter())
    assert worse["dice_vessel"] < 0.9


def _random_lungmask_weights(path) -> None:
    from lungmask.mask import UNet

    torch.manual_seed(0)
    net = UNet(n_classes=3, padding=True, depth=5, up_mode="upsample", batch_norm=True, residual=False)
    torch.save(net.state_dict(), path)


def test_lungmask_loads_a_weights_file_and_matches_lungmask_itself(tmp_path, phantom64):
    """The real loading code with a randomly initialised R231 U-Net the test writes; the output
    equals lungmask's own LMInferer on the same file (so our orientation / dtype handling adds
    nothing)."""
    from lungmask import LMInferer

    weights = tmp_path / "unet_r231-d5d2fc3d.pth"
    _random_lungmask_weights(weights)
    ph, spacing = phantom64
    hu = ph.hu[20:28]  # a few slices keep it quick on a CPU
    ours = LungmaskR231(weights=str(weights), batch_size=4)
    assert ours.weights == weights
    mask = ours(hu, spacing)
    assert mask.shape == hu.shape and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}
    reference = LMInferer(modelpath=str(weights), force_cpu=True, batch_size=4, tqdm_disable=True).apply(
        hu.astype(np.float32)
    )
    assert np.array_equal(mask, (reference > 0).astype(np.uint8))


def test_missing_lungmask_weights_name_file_url_and_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.delenv(LUNGMASK_R231.env_var, raising=False)
    with pytest.raises(WeightsNotFoundError) as err:
        LungmaskR231()
    message = str(err.value)
    assert "unet_r231-d5d2fc3d.pth" in message and LUNGMASK_R231.url in message
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in message
    with pytest.raises(WeightsNotFoundError, match="does not exist"):
        resolve_weights(LUNGMASK_R231, tmp_path / "nope.pth")


def test_weights_resolution_order(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cached = torch_hub_dir() / LUNGMASK_R231.filename
    cached.parent.mkdir(parents=True)
    cached.write_bytes(b"x")
    assert resolve_weights(LUNGMASK_R231) == cached  # the tool's default cache
    env_file = tmp_path / "env.pth"
    env_file.write_bytes(b"x")
    monkeypatch.setenv(LUNGMASK_R231.env_var, str(env_file))
    assert resolve_weights(LUNGMASK_R231) == env_file  # the environment beats the cache
    explicit = tmp_path / "explicit.pth"
    explicit.write_bytes(b"x")
    assert resolve_weights(LUNGMASK_R231, explicit) == explicit  # an explicit path beats both


def test_totalsegmentator_labels_and_missing_weights(tmp_path, monkeypatch):
    assert TotalSegmentatorVessels.vessel_label_ids() == [3, 4]  # lung_arteries, lung_veins
    monkeypatch.setenv("TOTALSEG_WEIGHTS_PATH", str(tmp_path))
    with pytest.raises(WeightsNotFoundError) as err:
        TotalSegmentatorVessels()
    assert "Dataset117_*" in str(err.value) and str(tmp_path) in str(err.value)
    (tmp_path / "Dataset117_lung_vessels").mkdir()
    with pytest.raises(WeightsNotFoundError, match="Dataset297_"):
        TotalSegmentatorVessels()
    (tmp_path / "Dataset297_TotalSegmentator_total_3mm_1559subj_v204").mkdir()
    seg = TotalSegmentatorVessels()
    assert seg.results_dir == str(tmp_path)


def _real_weights_present() -> bool:
    try:
        resolve_weights(LUNGMASK_R231)
        return True
    except WeightsNotFoundError:
        return False


@pytest.mark.skipif(
    not _real_weights_present(),
    reason="lungmask R231 weights (unet_r231-d5d2fc3d.pth) not in the torch hub cache; no download on this machine",
)
def test_lungmask_real_weights_on_real_ct(real_ct_dir):
    """With the real R231 weights, lungmask and the classical mask agree on the real chest CT."""
    from conftest import unit_to_hu
    from duolift_bundle.datasets.routes import raw_ct_dataset

    item = raw_ct_dataset(str(real_ct_dir), None)[0]
    hu = unit_to_hu(np.asarray(item["ct"][0]))
    lungs = LungmaskR231()(hu, (2.5, 2.5, 2.5))
    assert reference_dice(lungs, np.asarray(item["lung_mask"][0])) > 0.9


@pytest.mark.parametrize(
    "settings, missing",
    [
        ({}, ["vgg16-397923af.pth", "unet_r231-d5d2fc3d.pth", "Dataset117_*", "Dataset297_*"]),
        ({"lpips": False}, ["unet_r231-d5d2fc3d.pth", "Dataset117_*", "Dataset297_*"]),
        ({"lung_segmenter": "classical", "vessel_segmenter": "frangi"}, ["vgg16-397923af.pth"]),
        ({"lpips": False, "lung_segmenter": "classical", "vessel_segmenter": "frangi"}, []),  # --offline True
    ],
)
def test_evaluation_weights_are_all_reported_at_once(tmp_path, monkeypatch, settings, missing):
    from duolift_bundle.metrics.weights import check_evaluation_weights

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("TOTALSEG_WEIGHTS_PATH", str(tmp_path / "ts"))
    for var in ("DUOLIFT_VGG16_WEIGHTS", "DUOLIFT_LUNGMASK_WEIGHTS"):
        monkeypatch.delenv(var, raising=False)
    if not missing:
        assert check_evaluation_weights(**settings) == []
        return
    with pytest.raises(WeightsNotFoundError) as err:
        check_evaluation_weights(**settings)
    message = str(err.value)
    assert message.startswith(f"{len(missing)} pretrained weights file(s)")
    for name in missing:
        assert f"{name} not found" in message
    assert message.count("\n  - ") == len(missing) and "--offline True" in message.splitlines()[-1]
    # once the files are in place every one resolves, the TotalSegmentator ones from an explicit folder
    (tmp_path / "torch" / "hub" / "checkpoints").mkdir(parents=True)
    for name in ("vgg16-397923af.pth", "unet_r231-d5d2fc3d.pth"):
        (tmp_path / "torch" / "hub" / "checkpoints" / name).write_bytes(b"x")
    for name in ("Dataset117_lung_vessels", "Dataset297_total_3mm"):
        (tmp_path / "mine" / name).mkdir(parents=True)
    found = check_evaluation_weights(**settings, totalseg_weights=str(tmp_path / "mine"))
    assert sorted(p.name for p in found) == sorted(
        {"vgg16-397923af.pth": "vgg16-397923af.pth", "unet_r231-d5d2fc3d.pth": "unet_r231-d5d2fc3d.pth",
         "Dataset117_*": "Dataset117_lung_vessels", "Dataset297_*": "Dataset297_total_3mm"}[m] for m in missing  # fmt: skip
    )
