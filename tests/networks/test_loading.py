"""Loading generator weights (duolift_bundle/networks/loading.py): strict loads and warm starts."""

from __future__ import annotations

import pytest
import torch
from duolift_bundle.networks import DuoLiftGenerator, load_generator


def _net(views: int, width: float = 0.0625) -> DuoLiftGenerator:
    torch.manual_seed(views)
    return DuoLiftGenerator(views=views, image_size=32, volume_size=32, width=width)


def test_single_view_warm_start_from_a_double_view_model(tmp_path, caplog):
    path = tmp_path / "dv.pt"
    dv = _net(2)
    torch.save(dv.state_dict(), path)
    sv = _net(1)
    before = {k: v.clone() for k, v in sv.state_dict().items()}
    with pytest.raises(ValueError, match="does not fit"):
        load_generator(sv, path)  # strict: another configuration is an error
    load_generator(sv, path, strict=False)
    src, got = dv.state_dict(), sv.state_dict()
    kept = [k for k in got if k not in src or src[k].shape != got[k].shape]
    assert 0 < len(kept) < len(got) // 10
    for k, v in got.items():
        assert torch.equal(v, before[k] if k in kept else src[k]), k
    assert "warm start loads" in caplog.text and kept[0] in caplog.text


def test_a_warm_start_from_an_unrelated_network_is_refused(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({"a.weight": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match="not a warm start"):
        load_generator(_net(1), path, strict=False)
