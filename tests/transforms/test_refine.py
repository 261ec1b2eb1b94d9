"""Projection-consistent refinement: the DRR misfit falls, the prior holds, untrusted films are left alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import hu_to_unit
from duolift_bundle.geometry import Protocol
from duolift_bundle.synthetic.phantoms import make_phantom
from duolift_bundle.transforms.drr import DRRProjector
from duolift_bundle.transforms.refine import ProjectionRefined, refine_volume
from monai.data import MetaTensor
from scipy import ndimage as ndi
from skimage.metrics import peak_signal_noise_ratio


@pytest.fixture(scope="module")
def case():
    """A phantom's CT, a blurred and shifted-contrast 'network output' of it, and its two DRRs."""
    ph = make_phantom(1, size=64)
    target = np.clip(hu_to_unit(ph.hu), 0, 1).astype(np.float32)
    start = (ndi.gaussian_filter(target, 2.0) * 0.9 + 0.05).astype(np.float32)
    projector = DRRProjector(Protocol.build(size=64))
    xray = projector(torch.from_numpy(target)[None, None])
    return target, start, xray, projector


def _misfit(projector, volume, xray) -> float:
    with torch.no_grad():
        return float(((projector(volume) - xray) ** 2).mean())


def test_refinement_fits_the_views_and_improves_the_volume(case):
    target, start, xray, projector = case
    v0 = torch.from_numpy(start)[None, None]
    refined = refine_volume(v0, xray, projector, steps=30, weight=0.1)
    assert _misfit(projector, refined, xray) < 0.2 * _misfit(projector, v0, xray)
    assert 0.0 <= float(refined.min()) and float(refined.max()) <= 1.0
    before = peak_signal_noise_ratio(target, start, data_range=1.0)
    after = peak_signal_noise_ratio(target, refined[0, 0].numpy(), data_range=1.0)
    assert after > before + 0.1


@pytest.mark.parametrize("weight, max_change", [(1e4, 0.02), (0.1, 1.0)])
def test_the_prior_holds_the_network_output(case, weight, max_change):
    _, start, xray, projector = case
    v0 = torch.from_numpy(start)[None, None]
    change = float((refine_volume(v0, xray, projector, steps=10, weight=weight) - v0).abs().max())
    assert change <= max_change
    if weight > 1:
        assert change < 0.02  # a strong prior keeps the volume where the network put it


def test_transform_records_before_and_after_and_keeps_meta(case):
    target, start, xray, _ = case
    pred = MetaTensor(torch.from_numpy(start)[None], affine=torch.eye(4))
    out = ProjectionRefined(steps=20, weight=0.1, protocol=Protocol.build(size=64))(
        {"pred": pred, "xray": xray[0], "case": "c"}
    )
    record = out["refinement"]
    for view in ("frontal", "lateral"):
        assert record[f"{view}_psnr_after"] > record[f"{view}_psnr_before"] + 3.0
    assert isinstance(out["pred"], MetaTensor) and out["pred"].shape == pred.shape
    unchanged = ProjectionRefined(steps=0)({"pred": pred, "xray": xray[0]})
    assert unchanged["pred"] is pred and "refinement" not in unchanged


def test_a_film_with_an_estimated_pixel_size_is_refined_only_when_the_check_trusts_it(case):
    _, start, _, _ = case
    pred = torch.from_numpy(start)[None]
    info = json.dumps({v: {"spacing_estimated": True} for v in ("frontal", "lateral")})
    flat = torch.full((2, 64, 64), 0.5)  # no lung fields to place by: not trusted
    out = ProjectionRefined(steps=5, protocol=Protocol.build(size=64))({"pred": pred, "xray": flat, "xray_info": info})
    assert "skipped" in out["refinement"] and "estimated" in out["refinement"]["skipped"]
    assert out["pred"] is pred and out["quality_warnings"] == [out["refinement"]["skipped"]]


@pytest.mark.parametrize("kwargs", [{"steps": -1}, {"weight": -0.5}, {"lr": 0.0}])
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError, match="refine_steps"):
        ProjectionRefined(**kwargs)
