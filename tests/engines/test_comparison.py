"""The equal-budget comparison runner: its spec, plan, scheduler and scoring (no training here)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from conftest import ROOT, make_small_prepared
from duolift_bundle.engines import comparison
from duolift_bundle.networks import DuoLiftGenerator
from skimage.metrics import peak_signal_noise_ratio

RECIPES = {
    "rep": {"views": 2, "width": 0.0625, "lift": "repeat"},
    "bp": {"views": 2, "width": 0.0625, "lift": "backproject"},
    "sv": {"views": 1, "width": 0.0625, "lift": "repeat"},
}


@pytest.fixture(scope="module")
def real(tmp_path_factory) -> Path:
    """Three phantoms prepared at 32^3, standing in for the real CTs (their case ids name the folds)."""
    return make_small_prepared(tmp_path_factory.mktemp("real32"), n=3, seed=60)


def _spec(real: Path, **kw) -> comparison.ComparisonSpec:
    folds = [c["case"] for c in json.loads((real / "datalist.json").read_text())["test"]]
    args = dict(recipes=RECIPES, real=str(real / "datalist.json"), folds=folds, held_out=folds[0], size=32)
    args.update(kw)
    return comparison.ComparisonSpec(**args)


def test_the_shipped_spec_reads_and_overrides_parse():
    spec = comparison.ComparisonSpec.from_file(
        ROOT / "configs" / "compare.yaml", budget_s=30, folds="[P002, Lung_Dx-A0001]", seeds="[0, 1]"
    )
    assert spec.budget_s == 30 and list(spec.folds) == ["P002", "Lung_Dx-A0001"] and list(spec.seeds) == [0, 1]
    assert {"dv_repeat", "dv_backproject", "sv_repeat", "sv_backproject"} <= set(spec.recipes)
    assert spec.held_out == "normal001"
    with pytest.raises(ValueError, match="unknown setting"):
        comparison.ComparisonSpec.from_file(ROOT / "configs" / "compare.yaml", bogus=1)
    with pytest.raises(ValueError, match="views must be 1"):
        comparison.ComparisonSpec(recipes={"x": {"views": 3}})


def test_plan_pairs_recipes_of_one_fold_and_commands_share_the_budget(real, tmp_path):
    spec = _spec(real, recipes={"rep": RECIPES["rep"], "bp": RECIPES["bp"]}, budget_s=123)
    runs = comparison.plan_runs(spec, tmp_path)
    # runs side by side (parallel 2) are the two recipes of one fold: they share its load
    assert [(r.recipe, r.fold) for r in runs[:2]] == [("rep", spec.folds[0]), ("bp", spec.folds[0])]
    cmd = comparison.training_command(spec, runs[1], tmp_path, resume=False)
    text = " ".join(cmd)
    assert "--time_budget_s 123" in text and "--lift backproject" in text and "--resume" not in text
    assert f"--dataset_dir {tmp_path / 'data' / spec.folds[0]}" in text
    assert "--resume True" in " ".join(comparison.training_command(spec, runs[1], tmp_path, resume=True))


def _fake_training(weights: dict, marker: str, fail_recipe: str):
    """A stand-in for `monai.bundle run training`: copies a generator checkpoint made by the test
    into the run's checkpoints folder (or exits 3 for one recipe), without importing torch."""

    def command(spec, run, out, resume):
        code = (
            f"import os, shutil, sys; r = {run.recipe!r}; open({marker!r}, 'a').write(r + chr(10));"
            f"sys.exit(3) if r == {fail_recipe!r} else None; os.makedirs({run.checkpoints!r}, exist_ok=True);"
            f"shutil.copy({weights[run.recipe]!r}, os.path.join({run.checkpoints!r}, 'checkpoint_epoch=0002.pt'))"
        )
        return [sys.executable, "-c", code]

    return command


def test_runs_are_scheduled_scored_and_tabled(real, tmp_path, monkeypatch):
    spec = _spec(real, refinements={"none": {"refine_steps": 0}, "r5": {"refine_steps": 5, "refine_weight": 0.1}})
    marker = str(tmp_path / "started.txt")
    weights = {}
    for name, recipe in RECIPES.items():
        net = DuoLiftGenerator(views=recipe["views"], image_size=32, volume_size=32, width=0.0625, lift=recipe["lift"])
        weights[name] = str(tmp_path / f"{name}.pt")
        torch.save({"generator": net.state_dict()}, weights[name])
    monkeypatch.setattr(comparison, "training_command", _fake_training(weights, marker, fail_recipe="sv"))
    runs = comparison.plan_runs(spec, tmp_path)
    comparison.prepare_folds(spec, tmp_path)
    codes = comparison.train_runs(spec, tmp_path, runs)
    assert sorted(codes.values()).count(3) == len(spec.folds) and len(codes) == len(runs)
    # finished runs are not trained again; failed ones are retried
    comparison.train_runs(spec, tmp_path, runs)
    started = Path(marker).read_text().split()
    assert started.count("rep") == len(spec.folds) and started.count("sv") == 2 * len(spec.folds)

    results = comparison.evaluate_runs(spec, tmp_path, runs)
    items = {c["case"]: c for c in json.loads((real / "datalist.json").read_text())["test"]}
    fold = spec.folds[1]
    target = np.asarray(nib.load(real / items[fold]["ct"]).dataobj, dtype=np.float32)
    others = [np.asarray(nib.load(real / items[f]["ct"]).dataobj, dtype=np.float32) for f in items if f != fold]
    mean = np.mean(others, axis=0)
    rows = results["folds"][fold]["rows"]
    # the baseline is the voxel-wise mean of the other CTs, scored as scikit-image does
    assert rows[comparison.BASELINES[0]]["psnr_3d"] == pytest.approx(
        peak_signal_noise_ratio(target, np.clip(mean, 0, 1), data_range=1.0), abs=1e-3
    )
    assert {"rep, refine none", "rep, refine r5", "bp, refine none", "bp, refine r5"} <= set(rows)
    assert not any(name.startswith("sv") for name in rows)  # no checkpoint: not scored
    table = comparison.write_results(spec, tmp_path, results, ["compare_recipes.py"])
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["summary"]["deciding_folds"] == list(spec.folds[1:])
    assert "rep, refine r5" in saved["summary"]["rows"] and saved["hardware"]["cpu_count"] >= 1
    assert table == (tmp_path / "table.md").read_text() and "| bp, refine none |" in table
    refined = rows["rep, refine r5"]["seeds"]["0"]
    assert refined["refine_seconds"] > 0 and set(comparison.METRIC_NAMES) <= set(refined)
