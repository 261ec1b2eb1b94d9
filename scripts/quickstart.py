"""The quick start's main job: reconstruct the embedded sample cases from their X-rays with the
demo model, and measure and draw the result.

    python scripts/quickstart.py [--out demo] [--ckpt models/model.pt] [--lpips False]

It runs the bundle's evaluation workflow, exactly as a user would from the bundle root::

    python -m monai.bundle run evaluating \\
        --config_file "['configs/inference.yaml','configs/evaluate.yaml','configs/demo.yaml']" \\
        --dataset_dir <package>/sample_data/size64 --output_dir demo --save_recon True \\
        --lung_segmenter classical --vessel_segmenter frangi --lpips False

on the sample embedded in the package (``duolift_bundle/sample_data/size64``: the real chest CT
``normal001`` and the phantoms 0500 / 0501, prepared at the demo model's 64^3). For each case the
frontal + lateral DRRs go through the demo model (``models/model.pt``, ``configs/demo.yaml``) and
it writes

- ``<out>/reconstructions/<case>/recon_hu.nii.gz``: the reconstruction in HU, with the affine of
  the case's CT (opens on top of ``<sample>/<case>/ct.nii.gz`` in 3D Slicer);
- ``<out>/metrics.csv``, ``summary.json``, ``table.md``: PSNR / SSIM (2D, 3D), MAE and lung /
  vessel DICE against the true CT (offline segmenters: classical lung mask, Frangi vessels);
- ``<out>/figures/<case>.png``: target, reconstruction and |difference| in three planes.

The demo model was trained on phantoms only (``docs/README.md``, "Demo model"): expect close
phantom reconstructions and a poor one of the real CT, whose anatomy it has never seen.
"""

from __future__ import annotations

import csv
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import fire

from duolift_bundle.data.sample import sample_dir
from duolift_bundle.engines.reports import METRIC_COLUMNS

ROOT = Path(__file__).resolve().parents[1]
DEMO_SIZE = 64


def command(out: str, ckpt: str, lpips: bool = False) -> list[str]:
    """The ``python -m monai.bundle run evaluating`` command line of the quick start."""
    configs = "['configs/inference.yaml','configs/evaluate.yaml','configs/demo.yaml']"  # relative to the bundle root (the cwd)
    return [
        sys.executable, "-m", "monai.bundle", "run", "evaluating",
        "--config_file", configs,
        "--meta_file", "configs/metadata.json",
        "--logging_file", "configs/logging.conf",
        "--dataset_dir", str(sample_dir(DEMO_SIZE)),
        "--ckpt_path", os.path.abspath(ckpt),
        "--output_dir", os.path.abspath(out),
        "--save_recon", "True",
        "--lung_segmenter", "classical",
        "--vessel_segmenter", "frangi",
        "--lpips", str(bool(lpips)),
    ]  # fmt: skip


def per_case_table(rows: list[dict]) -> str:
    """Markdown table of the per-case metrics (the real CT and the phantoms are not averaged
    together: the demo model has only seen phantoms)."""
    cols = [c for c in METRIC_COLUMNS if rows and c in rows[0]]
    lines = ["| case | " + " | ".join(METRIC_COLUMNS[c][0] for c in cols) + " |", "|---|" + "---|" * len(cols)]
    for row in rows:
        lines.append(f"| {row['case']} | " + " | ".join(f"{float(row[c]):.3f}" if row[c] else "-" for c in cols) + " |")
    return "\n".join(lines) + "\n"


def main(out: str = "demo", ckpt: str = str(ROOT / "models" / "model.pt"), lpips: bool = False) -> None:
    """Run the evaluation of the demo model on the embedded sample into ``out``; print the table
    and the paths. ``lpips=True`` needs the torchvision VGG16 weights (see README, "Evaluation")."""
    if not os.path.isfile(ckpt):
        sys.exit(f"{ckpt}: the demo model is not there (it ships in the repository as models/model.pt)")
    cmd = command(out, ckpt, lpips)
    shown = ["python", *cmd[1:]]
    print("running:", " ".join(a if re.fullmatch(r"[\w./=:+-]+", a) else f'"{a}"' for a in shown), flush=True)
    t0 = time.perf_counter()
    result = subprocess.run(cmd, cwd=ROOT)
    if result.returncode:
        sys.exit(f"the evaluation workflow failed (exit code {result.returncode}); see the log above")
    out_dir = Path(out).resolve()
    with open(out_dir / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    print(f"\ndone in {time.perf_counter() - t0:.0f} s\n")
    print(per_case_table(rows))
    for row in rows:
        print(f"reconstruction: {out_dir / 'reconstructions' / row['case'] / 'recon_hu.nii.gz'}")
    for figure in sorted((out_dir / "figures").glob("*.png")):
        print(f"figure:         {figure}")
    print(f"metrics:        {out_dir / 'metrics.csv'}  {out_dir / 'summary.json'}")
    print(f"true CTs:       {sample_dir(DEMO_SIZE)}/<case>/ct.nii.gz")


if __name__ == "__main__":
    fire.Fire(main)
