"""The quick start's main job: reconstruct the embedded sample cases with both shipped models and
score them next to their baselines.

    python scripts/quickstart.py [--out quickstart] [--lpips False]

Each method runs the bundle's evaluation workflow exactly as a user would from the bundle root,
on the sample embedded in the package (``duolift_bundle/sample_data/size64``: the real chest CT
``normal001``, which the shipped models never saw, and the phantoms 0500 / 0501, prepared at the
shipped models' 64^3), e.g. for the double-view model::

    python -m monai.bundle run evaluating \\
        --config_file "['configs/inference.yaml','configs/evaluate.yaml']" \\
        --dataset_dir <package>/sample_data/size64 --output_dir quickstart/double_view --save_recon True \\
        --offline True

Methods (:func:`methods`: every entry of ``models/registry.json``): DuoLift-CNN double view
(``models/model.pt``), single view (``models/model_single_view.pt``,
``configs/inference_single_view.yaml``: the frontal X-ray only),
the phantom-only model it replaced (``models/phantom_cnn.pt``), and the baselines that see no
X-ray: the mean of the shipped models' training CTs and the mean of their two real training CTs
(``models/baselines/``). It writes

- ``<out>/<method>/``: each workflow's ``metrics.csv``, ``summary.json``, ``table.md``; for the
  models also ``reconstructions/<case>/recon_hu.nii.gz`` and the true CT ``target_hu.nii.gz``
  (both in HU, with the affine of the case's CT: they open on top of each other in 3D Slicer);
- ``<out>/table.md`` and ``<out>/summary.json``: every method per case, real and synthetic apart;
- ``<out>/figures/<case>.png``: target, both models, the phantom-only model and the mean volume in
  three planes, with their |difference| to the target.
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
from duolift_bundle.datasets.sample import sample_dir
from duolift_bundle.engines.reports import markdown_table
from duolift_bundle.errors import install_last_line_hook
from duolift_bundle.geometry import CTProtocol
from duolift_bundle.io_utils import atomic_path, write_json
from duolift_bundle.registry import load_registry

ROOT = Path(__file__).resolve().parents[1]
SIZE = 64


def methods(bundle_root: str | os.PathLike = ROOT) -> list[tuple[str, str, list[str], dict]]:
    """``(name, output folder, configs, overrides)`` of every entry of the model registry
    (``models/registry.json``: the models, then the baselines), paths relative to the bundle root."""
    return [
        (spec.title, spec.name, spec.evaluation_configs(), {**spec.weights_override(), **spec.overrides})
        for spec in load_registry(bundle_root).entries()
    ]


def figure_labels(bundle_root: str | os.PathLike = ROOT) -> dict[str, str]:
    """``{output folder: label}`` of the entries drawn in the figures (the registry's ``figure``)."""
    return {spec.name: spec.figure for spec in load_registry(bundle_root).entries() if spec.figure}


COLUMNS = [("psnr_2d", "PSNR(2D)"), ("psnr_3d", "PSNR(3D)"), ("ssim_2d", "SSIM(2D)"), ("ssim_3d", "SSIM(3D)")]


def command(folder: str, configs: list[str], overrides: dict, out: str, lpips: bool = False) -> list[str]:
    """The ``python -m monai.bundle run evaluating`` command line of one method."""
    files = "[" + ",".join(f"'{c}'" for c in configs) + "]"  # relative to the bundle root (the cwd)
    cmd = [
        sys.executable, "-m", "monai.bundle", "run", "evaluating",
        "--config_file", files,
        "--meta_file", "configs/metadata.json",
        "--logging_file", "configs/logging.conf",
        "--dataset_dir", str(sample_dir(SIZE)),
        "--output_dir", os.path.abspath(os.path.join(out, folder)),
        "--save_recon", "True",
        "--offline", "True",  # classical lung mask, Frangi vessels: no pretrained weights needed
        "--lpips", str(bool(lpips)),
        "--progress", "False",
    ]  # fmt: skip
    for key, value in overrides.items():  # strings are files under the bundle root
        cmd += [f"--{key}", str(ROOT / value) if isinstance(value, str) else str(value)]
    return cmd


def table(results: dict[str, dict[str, dict]]) -> str:
    """Markdown: per case (real first, then synthetic), every method's PSNR / SSIM (2D, 3D)."""
    origin = {c: row["origin"] for rows in results.values() for c, row in rows.items()}  # metrics.csv's column
    cases = sorted(origin, key=lambda c: (origin[c] != "real", c))
    lines = []
    for case in cases:
        kind = "real (held out)" if origin[case] == "real" else "synthetic"
        for method, rows in results.items():
            if case in rows:
                lines.append([case, kind, method, *(f"{float(rows[case][k]):.3f}" for k, _ in COLUMNS)])
    return markdown_table(["case", "kind", "method", *(n for _, n in COLUMNS)], lines) + "\n"


def main(out: str = "quickstart", lpips: bool = False) -> None:
    """Run every method on the embedded sample into ``out``; print the table and the paths.
    ``lpips=True`` needs the torchvision VGG16 weights (see docs/guide.md, "Evaluation")."""
    import nibabel as nib
    from duolift_bundle.viz import comparison_figure

    runs, labels = methods(), figure_labels()
    files = [v for _, _, _, o in runs for v in o.values() if isinstance(v, str)]
    missing = [v for v in files if not (ROOT / v).is_file()]
    if missing:
        sys.exit(f"shipped files missing (they are in the repository): {', '.join(missing)}")
    t0 = time.perf_counter()
    results: dict[str, dict[str, dict]] = {}
    for name, folder, configs, overrides in runs:
        cmd = command(folder, configs, overrides, out, lpips)
        shown = ["python", *cmd[1:]]
        print(
            f"\n[{name}] running:",
            " ".join(a if re.fullmatch(r"[\w./=:+-]+", a) else f'"{a}"' for a in shown),
            flush=True,
        )
        if subprocess.run(cmd, cwd=ROOT).returncode:
            sys.exit(f"the evaluation workflow of '{name}' failed; see the log above")
        with open(Path(out) / folder / "metrics.csv", newline="") as f:
            results[name] = {row["case"]: row for row in csv.DictReader(f)}
    out_dir = Path(out).resolve()
    text = table(results)
    with atomic_path(out_dir / "table.md") as tmp:  # outputs are written whole or not at all
        Path(tmp).write_text(text)
    write_json(
        out_dir / "summary.json",
        {
            "sample": str(sample_dir(SIZE)),
            "methods": {n: {"folder": f, "configs": c} for n, f, c, _ in runs},
            "results": results,
        },
    )
    figures = []
    for case in results[runs[0][0]]:
        target = nib.load(sample_dir(SIZE) / case / "ct.nii.gz").get_fdata()
        vols = {}
        for _, folder, _, _ in runs:
            recon = out_dir / folder / "reconstructions" / case / "recon_hu.nii.gz"
            if folder in labels and recon.is_file():
                vols[labels[folder]] = CTProtocol().to_unit(nib.load(recon).get_fdata())
        real = results[runs[0][0]][case]["origin"] == "real"
        title = f"{case} ({'real, never seen in training' if real else 'synthetic'})"
        figures.append(comparison_figure(target, vols, out_dir / "figures" / f"{case}.png", title=title))
    print(f"\ndone in {time.perf_counter() - t0:.0f} s\n")
    print(text)
    for case in results[runs[0][0]]:
        for folder in (spec.name for spec in load_registry(ROOT).served()):
            print(f"reconstruction: {out_dir / folder / 'reconstructions' / case / 'recon_hu.nii.gz'}")
    for figure in figures:
        print(f"figure:         {figure}")
    print(f"metrics:        {out_dir / 'table.md'}  {out_dir / 'summary.json'}")
    print(f"true CTs (HU):  {out_dir / 'double_view' / 'reconstructions'}/<case>/target_hu.nii.gz")


if __name__ == "__main__":
    install_last_line_hook()  # the bundle's message is the last line of a failure
    fire.Fire(main)
