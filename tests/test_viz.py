"""Figures (duolift_bundle/viz.py): `run preparing` never replaces a figure without being told."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from duolift_bundle.viz import FigureExistsError, case_figures


class Listed(list):
    """A dataset that lists its cases (``data``), as MONAI's datasets do."""

    @property
    def data(self):
        return [{"case": d["case"]} for d in self]


def _items(names):
    g = torch.Generator().manual_seed(0)
    return Listed(
        {"case": n, "ct": torch.rand(1, 16, 16, 16, generator=g), "xray": torch.rand(2, 16, 16, generator=g),
         "lung_mask": (torch.rand(1, 16, 16, 16, generator=g) > 0.5).float()}  # fmt: skip
        for n in names
    )


@pytest.mark.parametrize("listed", [True, False])
def test_an_existing_figure_is_refused_before_anything_is_drawn(tmp_path, listed):
    items = _items(["a", "b"])
    dataset = items if listed else list(items)
    (tmp_path / "b.png").write_bytes(b"the quick start's figure")
    with pytest.raises(
        FigureExistsError, match=r"b\.png: exists; give another --figure_dir, or --overwrite_figures True"
    ):
        case_figures(dataset, tmp_path)
    assert (tmp_path / "b.png").read_bytes() == b"the quick start's figure"
    assert (tmp_path / "a.png").exists() != listed  # a listing dataset is checked before the first figure
    written = case_figures(dataset, tmp_path, overwrite=True)
    assert [p.rsplit("/", 1)[-1] for p in written] == ["a.png", "b.png"]
    assert (tmp_path / "b.png").read_bytes()[:4] == b"\x89PNG" and np.all(
        [(tmp_path / n).stat().st_size > 1000 for n in ("a.png", "b.png")]
    )
