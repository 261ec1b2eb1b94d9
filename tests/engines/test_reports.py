"""The evaluation report (duolift_bundle/engines/reports.py): real and synthetic cases apart,
checked against means and standard deviations computed here with numpy."""

from __future__ import annotations

import csv
import json
from types import SimpleNamespace

import numpy as np
import pytest
from duolift_bundle.engines.reports import MetricsReport

ROWS = [
    ({"case": "lidc_1", "lung_mask": "x"}, {"psnr_3d": 20.0, "ssim_3d": 0.5}),
    ({"case": "phantom_1", "lung_label": "l", "vessel_label": "v"}, {"psnr_3d": 26.0, "ssim_3d": 0.7}),
    ({"case": "lidc_2"}, {"psnr_3d": 22.0, "ssim_3d": 0.6}),
    ({"case": "phantom_2", "synthetic": True}, {"psnr_3d": 25.0, "ssim_3d": 0.8}),
    ({"case": "marked_real", "lung_label": "l", "synthetic": False}, {"psnr_3d": 18.0, "ssim_3d": 0.4}),
]


def run_report(tmp_path, rows, failed=None) -> MetricsReport:
    report = MetricsReport(str(tmp_path), method="DuoLift-test")
    engine = SimpleNamespace(state=SimpleNamespace(batch=None, output=None), failed_cases=failed or {})
    for item, metrics in rows:
        engine.state.batch, engine.state.output = [item], [{"metrics": metrics}]
        report._collect(engine)
    report._write(engine)
    return report


def test_real_and_synthetic_are_never_pooled(tmp_path):
    run_report(tmp_path, ROWS, failed={"broken": "CTInputError: broken/ct.nii.gz: unreadable"})
    summary = json.loads((tmp_path / "summary.json").read_text())
    real = [20.0, 22.0, 18.0]
    synthetic = [26.0, 25.0]
    assert "metrics" not in summary and summary["n_cases"] == 5
    for origin, values in (("real", real), ("synthetic", synthetic)):
        group = summary["groups"][origin]
        assert group["n_cases"] == len(values)
        assert group["metrics"]["psnr_3d"]["mean"] == pytest.approx(np.mean(values))
        assert group["metrics"]["psnr_3d"]["std"] == pytest.approx(np.std(values))
    with open(tmp_path / "metrics.csv", newline="") as f:
        origins = {r["case"]: r["origin"] for r in csv.DictReader(f)}
    assert origins == {
        "lidc_1": "real",
        "phantom_1": "synthetic",
        "lidc_2": "real",
        "phantom_2": "synthetic",
        "marked_real": "real",
    }
    table = (tmp_path / "table.md").read_text().splitlines()
    assert table[2] == "| DuoLift-test | real (n = 3) | 20.00 ± 1.63 | 0.5000 ± 0.0816 |"
    assert table[3] == "| DuoLift-test | synthetic (n = 2) | 25.50 ± 0.50 | 0.7500 ± 0.0500 |"
    assert "1 failed case(s), not in the table: broken (failed.json)" in table[-1]
    assert (
        summary["failed"]
        == json.loads((tmp_path / "failed.json").read_text())
        == {"broken": "CTInputError: broken/ct.nii.gz: unreadable"}
    )


def test_one_origin_keeps_the_top_level_metrics(tmp_path):
    run_report(tmp_path, [r for r in ROWS if "phantom" in r[0]["case"]])
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["metrics"] == summary["groups"]["synthetic"]["metrics"] and list(summary["groups"]) == ["synthetic"]
    assert summary["failed"] == {} and not (tmp_path / "failed.json").exists()
