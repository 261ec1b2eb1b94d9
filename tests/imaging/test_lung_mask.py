"""Classical lung mask: k-means threshold vs scikit-image, phantom ground truth, the real CT."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import dice, hu_to_unit
from duolift_bundle.geometry import CTProtocol
from duolift_bundle.imaging.lung_mask import (
    LungMaskd,
    classical_lung_mask,
    kmeans_threshold,
)
from duolift_bundle.synthetic.phantoms import make_phantom
from scipy import ndimage as ndi
from skimage.filters import threshold_isodata


def test_kmeans_threshold_matches_isodata():
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.normal(-850, 40, 20000), rng.normal(40, 30, 30000)])
    assert kmeans_threshold(values) == pytest.approx(threshold_isodata(values, nbins=4096), abs=2.0)


@pytest.mark.parametrize("seed", [0, 5, 11])
def test_phantom_lungs_match_ground_truth(seed):
    ph = make_phantom(seed, size=128)
    mask = classical_lung_mask(ph.hu)
    assert dice(mask, ph.lung > 0) >= 0.95
    for side in (1, 2):  # both lungs found (they may touch through the airways)
        assert mask[ph.lung == side].mean() > 0.95


def test_transform_keeps_affine_and_reads_unit_range():
    from monai.data import MetaTensor

    ph = make_phantom(3, size=64)
    ct = MetaTensor(torch.from_numpy(np.clip(hu_to_unit(ph.hu), 0, 1))[None], affine=torch.from_numpy(ph.affine))
    out = LungMaskd()({"ct": ct})
    assert out["lung_mask"].dtype == torch.uint8 and tuple(out["lung_mask"].shape) == (1, 64, 64, 64)
    assert torch.equal(out["lung_mask"].affine, ct.affine)
    assert dice(out["lung_mask"][0].numpy(), ph.lung > 0) >= 0.93  # 5 mm voxels


def test_empty_volume_gives_empty_mask():
    assert classical_lung_mask(np.full((32, 32, 32), -1000.0)).sum() == 0
    with pytest.raises(ValueError, match="expects a \\(D, H, W\\) volume"):
        classical_lung_mask(np.zeros((4, 4)))


def test_real_ct_has_two_plausible_lungs(real_ct_dir):
    from duolift_bundle.inputs.ct_io import load_ct
    from duolift_bundle.transforms.ct_protocol import ct_protocol

    d = ct_protocol(protocol=CTProtocol(lazy=True))({"ct": load_ct(real_ct_dir)})
    d = LungMaskd()(d)  # the protocol removed the table at its 1 mm stage
    mask = d["lung_mask"][0].numpy()
    labels, n = ndi.label(mask)
    sizes_l = np.bincount(labels.ravel())[1:] * 2.5**3 / 1e6
    assert n == 2, f"{n} components of {sizes_l} L"
    assert 2.0 < sizes_l.sum() < 8.0 and sizes_l.min() > 0.6
    # one lung on each side of the midline (W axis runs right -> left)
    centroids = [np.argwhere(labels == i + 1)[:, 2].mean() for i in range(2)]
    assert min(centroids) < 64 < max(centroids)
