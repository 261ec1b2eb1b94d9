"""Case discovery (duolift_bundle/inputs/discovery.py) says what it does not take, and the CT reader
refuses a DICOM series that is not whole: the silent cases of a shared-cluster data tree."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from conftest import write_dicom_series
from duolift_bundle.datasets.prepare import prepare
from duolift_bundle.geometry import Protocol
from duolift_bundle.inputs.ct_io import CTInputError, load_ct
from duolift_bundle.inputs.discovery import discover_cases
from PIL import Image


def _volume(n: int = 12) -> np.ndarray:
    """A small CT in HU: a water cylinder with an air lung in the middle."""
    z, y, x = np.mgrid[:n, :24, :24]
    body = (y - 11.5) ** 2 + (x - 11.5) ** 2 < 10**2
    hu = np.where(body, 0.0, -1000.0)
    hu[(y - 11.5) ** 2 + (x - 11.5) ** 2 < 4**2] = -850.0
    return hu.astype(np.float32)


@pytest.fixture()
def cluster_tree(tmp_path):
    """A source tree as found on shared clusters: a real case folder, one linked from another
    disk, an empty folder, a radiograph where a CT was expected, a series with a cut-short
    slice file, and a link loop."""
    store, src = tmp_path / "store", tmp_path / "src"
    write_dicom_series(src / "real_case", _volume())
    write_dicom_series(store / "linked_series", _volume(), series_number=2)
    src.mkdir(exist_ok=True)
    os.symlink(store / "linked_series", src / "linked_case")
    (src / "empty_case").mkdir()
    radiograph = src / "radiograph_case"
    radiograph.mkdir()
    Image.new("L", (16, 16)).save(radiograph / "chest.png")
    write_dicom_series(src / "truncated_case", _volume(), series_number=3, shuffle=False)
    victim = sorted((src / "truncated_case").iterdir())[5]
    victim.write_bytes(victim.read_bytes()[:-200])  # a slice file cut short (an interrupted copy)
    os.symlink(src, src / "real_case" / "loop")  # a link back up the tree
    return src


def test_discovery_follows_links_and_names_every_skipped_folder(cluster_tree):
    found = discover_cases(cluster_tree)
    assert sorted(c.case_id for c in found.cases) == ["src_linked_case", "src_real_case", "src_truncated_case"]
    reasons = {os.path.basename(s["path"]): s["reason"] for s in found.skipped}
    assert reasons["empty_case"] == "empty folder"
    assert reasons["radiograph_case"].startswith("no CT (DICOM series or volume file) among its 1 file(s): chest.png")
    assert "already taken" in reasons["loop"]


def test_prepare_reports_skipped_folders_and_refuses_a_cut_series(cluster_tree, tmp_path):
    out = tmp_path / "out"
    summary = prepare(str(cluster_tree), out, Protocol.build(32, lazy=True), progress=False)
    assert summary["prepared"] == ["src_linked_case", "src_real_case"]
    assert list(summary["failed"]) == ["src_truncated_case"]
    reason = summary["failed"]["src_truncated_case"]
    assert "truncated_case" in reason and ("cannot be read" in reason or "cut short" in reason)
    assert not (out / "src_truncated_case").exists() and not list(out.glob(".*tmp"))
    skipped = json.loads((out / "skipped.json").read_text())
    assert {os.path.basename(s["path"]) for s in skipped} == {"empty_case", "radiograph_case", "loop"}
    assert json.loads((out / "failed.json").read_text()).keys() == {"src_truncated_case"}


@pytest.mark.parametrize(
    "damage, message",
    [
        ("drop_middle", "non-uniform slice spacing"),
        ("duplicate", "slices at the same position"),
        ("garbage", "cannot be read"),
    ],
)
def test_load_ct_refuses_a_series_that_is_not_whole(tmp_path, damage, message):
    """ITK would read these as whole (it interpolates over the gap or ignores the bad file)."""
    folder = tmp_path / "series"
    write_dicom_series(folder, _volume(), shuffle=False)
    files = sorted(folder.iterdir())
    if damage == "drop_middle":
        files[6].unlink()
    elif damage == "duplicate":
        import pydicom

        ds = pydicom.dcmread(files[6])
        ds.SOPInstanceUID = ds.SOPInstanceUID + ".1"
        ds.save_as(folder / "copy_of_6")
    else:
        files[6].write_bytes(files[6].read_bytes()[:200])  # a header fragment: unreadable
    with pytest.raises(CTInputError, match=message) as err:
        load_ct(folder)
    assert str(folder) in str(err.value)


def test_a_whole_series_loads(tmp_path):
    write_dicom_series(tmp_path / "ok", _volume())
    img = load_ct(tmp_path / "ok")
    assert tuple(img.shape) == (1, 24, 24, 12)


def test_an_input_dir_that_is_itself_a_case_is_taken_without_a_warning(tmp_path, caplog):
    """--input_dir pointing at one radiograph folder or one DICOM series: one case, and no
    "skipped" line naming its own files."""
    from duolift_bundle.datasets.inference_case import inference_items

    xray = tmp_path / "patient7"
    xray.mkdir()
    for view in ("frontal", "lateral"):
        Image.new("L", (8, 8)).save(xray / f"{view}.png")
    series = tmp_path / "series"
    write_dicom_series(series, _volume())
    with caplog.at_level("WARNING"):
        assert [(i["case"], i["kind"]) for i in inference_items(xray, views=2)] == [("patient7", "xray")]
        (case,) = discover_cases(series).cases
    assert case.path == str(series)
    assert not [r for r in caplog.records if "skipped" in r.getMessage()]
