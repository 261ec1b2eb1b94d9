"""One axis convention, proven with a dense ball in one octant (superior, anterior, patient-left)."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from duolift_bundle.datasets.prepare import prepare_case
from duolift_bundle.geometry import Protocol
from duolift_bundle.inputs.discovery import CaseSource
from duolift_bundle.synthetic.phantoms import asymmetric_ball_phantom, write_raw_phantom

CENTRE = (-60.0, -50.0, 70.0)  # (z inferior+, y posterior+, x left+) mm
WORLD_RAS = np.array([-70.0, 50.0, 60.0])  # the same point in RAS: x right+, y anterior+, z superior+


def _write(tmp_path, layout: str) -> CaseSource:
    ph = asymmetric_ball_phantom(size=64, centre_mm=CENTRE)
    if layout == "bundle":
        return write_raw_phantom(ph, tmp_path, "ball")
    # LPS-like storage as a DICOM-derived NIfTI would have it: axes (x->L, y->P, z->S)
    tmp_path.mkdir(parents=True, exist_ok=True)
    arr = np.ascontiguousarray(ph.hu.transpose(2, 1, 0)[:, :, ::-1])
    perm = np.zeros((4, 4))
    perm[0, 2], perm[1, 1], perm[2, 0], perm[3, 3] = 1, 1, 1, 1  # new (i, j, k) <- old (k, j, i)
    flip = np.eye(4)
    flip[2, 2], flip[2, 3] = -1, arr.shape[2] - 1  # k -> n-1-k
    aff = ph.affine @ perm @ flip
    nib.Nifti1Image(arr, aff).to_filename(tmp_path / "ball_lps.nii.gz")
    return CaseSource("ball", str(tmp_path / "ball_lps.nii.gz"))


@pytest.mark.parametrize("layout", ["bundle", "lps_storage"])
def test_ball_lands_in_its_octant(tmp_path, layout):
    src = _write(tmp_path / "raw", layout)
    entry = prepare_case(src, tmp_path / "out", Protocol.build(lazy=True, remove_table=False))
    ct_img = nib.load(tmp_path / "out" / entry["ct"])
    ct = ct_img.get_fdata()
    # the written volume is in the bundle convention, whatever the source storage was
    ball = ct > 0.6
    idx = np.argwhere(ball).mean(axis=0)
    assert idx[0] < 64 and idx[1] < 64 and idx[2] > 64, f"ball voxel centroid {idx}"
    world = ct_img.affine @ np.append(idx, 1.0)
    np.testing.assert_allclose(world[:3], WORLD_RAS, atol=3.0)
    frontal = nib.load(tmp_path / "out" / entry["xray_frontal"]).get_fdata()
    lateral = nib.load(tmp_path / "out" / entry["xray_lateral"]).get_fdata()
    # subtract the body's projection (mirror image of a symmetric body) to find the ball
    # frontal columns run patient right -> left (ball on the image's right half); lateral columns
    # run anterior -> posterior (ball on the image's left half); rows run superior -> inferior
    for img, on_right in ((frontal, True), (lateral, False)):
        r, c = np.unravel_index(np.argmax(img - img[:, ::-1]), img.shape)
        assert r < 64, "ball must project into the upper (superior) half"
        assert (c > 64) == on_right, f"ball column {c} on the wrong side"


@pytest.mark.parametrize("lift", ["repeat", "backproject"])
def test_lifted_frontal_features_follow_the_same_axes(lift):
    """The generator's own Lifting modules (both branches) put each view's shadow of the ball at
    the ball's (D, W) / (D, H) position of the volume: both asymmetries agree only in its octant."""
    from duolift_bundle.networks import DuoLiftGenerator
    from duolift_bundle.transforms.drr import DRRProjector

    ph = asymmetric_ball_phantom(size=64, centre_mm=CENTRE)
    ct = torch.from_numpy(np.clip((ph.hu + 1024) / 2500, 0, 1))[None, None].float()
    xray = DRRProjector(views=("frontal", "lateral"))(ct, spacing=(5.0,) * 3)
    xr = torch.nn.functional.interpolate(xray, size=(64, 64), mode="area")
    net = DuoLiftGenerator(image_size=64, volume_size=64, width=0.0625, lift=lift)
    frontal, lateral = net.image_lifting[0], net.image_lifting[1]  # Branch 2: image -> volume grid
    lifted_f = frontal(xr[:, :1])[0, 0]  # (D, H, W), repeated along H
    lifted_l = lateral(xr[:, 1:])[0, 0]  # (D, H, W), repeated along W
    assert tuple(lifted_f.shape) == tuple(lifted_l.shape) == (64, 64, 64)
    product = (lifted_f - lifted_f.flip(-1)) * (lifted_l - lifted_l.flip(1))
    z, y, x = np.unravel_index(int(torch.argmax(product)), product.shape)
    assert z < 32 and y < 32 and x > 32
    if lift != "repeat":
        return
    # the feature branch (Branch 1) lifts along the same axes at the feature grid D' / 4
    feat = torch.arange(16.0).reshape(1, 1, 4, 4)
    f_lift, l_lift = net.feature_lifting[0], net.feature_lifting[1]
    f3, l3 = f_lift.__class__(1, 16, 0)(feat), l_lift.__class__(1, 16, 1)(feat)
    assert torch.equal(f3[0, 0, :, 5, :], feat[0, 0]) and torch.equal(l3[0, 0, :, :, 9], feat[0, 0])
