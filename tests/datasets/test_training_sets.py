"""Training sets of real CTs held out one at a time plus phantoms (duolift_bundle/datasets/training_sets.py)."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from duolift_bundle.datasets.routes import load_datalist, make_dataset
from duolift_bundle.datasets.training_sets import compose_datalist
from duolift_bundle.geometry import Protocol
from tests.conftest import make_small_prepared


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    root = tmp_path_factory.mktemp("sets")
    real = make_small_prepared(root / "real", n=3, seed=80, size=32, splits=(2, 1, 0))
    # "real" cases carry no ground-truth label entries, like prepared real CTs
    doc = json.loads((real / "datalist.json").read_text())
    for split in ("training", "validation", "test"):
        for item in doc[split]:
            item.pop("lung_label", None)
            item.pop("vessel_label", None)
    (real / "datalist.json").write_text(json.dumps(doc))
    phantoms = make_small_prepared(root / "phantoms", n=3, seed=90, size=32, splits=(2, 1, 0))
    return root, real / "datalist.json", phantoms / "datalist.json"


def test_holdout_validates_and_the_rest_trains_repeated_with_phantoms(sources):
    root, real, phantoms = sources
    out = root / "fold" / "datalist.json"
    doc = compose_datalist(out, real, ["phantom_0081"], phantoms, real_repeats=3)
    assert [it["case"] for it in doc["validation"]] == ["phantom_0081"]
    real_train = [it["case"] for it in doc["training"] if it["case"].startswith("phantom_008")]
    assert sorted(real_train) == sorted(f"phantom_00{c}#{r}" for c in (80, 82) for r in range(3))
    assert sum(it["case"].startswith("phantom_009") for it in doc["training"]) == 3  # phantom train + val
    assert all(not it["ct"].startswith("/") for it in doc["training"])  # relative: the tree moves
    assert doc["composed_from"]["holdout"] == ["phantom_0081"]
    # the datalist reads back (paths resolved) and its mixed items collate into one batch
    items = load_datalist(out, "training")
    assert len(items) == 9 and set(items[0]) == set(items[-1])
    ds = make_dataset("prepared", "training", 2, Protocol.build(32), datalist=out)
    batch = next(
        iter(torch.utils.data.DataLoader(ds, batch_size=9, collate_fn=__import__("monai").data.list_data_collate))
    )
    assert tuple(batch["ct"].shape) == (9, 1, 32, 32, 32)


def test_moving_the_tree_keeps_the_datalist_valid(sources, tmp_path):
    root, real, phantoms = sources
    compose_datalist(root / "fold2" / "datalist.json", real, ["0080"], phantoms)
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    assert len(load_datalist(moved / "fold2" / "datalist.json", "validation")) == 1


@pytest.mark.parametrize(
    "holdout, phantoms, repeats, message",
    [
        (["nope"], True, 1, "matches 0 real cases"),
        (["phantom_008"], True, 1, "matches 3 real cases"),
        (["0080", "0081", "0082"], False, 1, "nothing left to train on"),
        ([], True, 0, "real_repeats must be >= 1"),
    ],
)
def test_bad_requests_are_refused(sources, tmp_path, holdout, phantoms, repeats, message):
    _, real, ph = sources
    out = tmp_path / "x" / "datalist.json"
    with pytest.raises(ValueError, match=message):
        compose_datalist(out, real, holdout, ph if phantoms else None, real_repeats=repeats)
    assert not out.exists()
