"""Measure what the quality gate (``duolift_bundle/transforms/quality.py``) checks, on inputs that
must pass and inputs that must not, to choose its thresholds (the model card reports the table).

    python scripts/quality_gate_evidence.py --real data/real64 --out docs/quality_gate.json

Must pass: the DRRs of the five real chest CTs of ``../shared/data`` (prepared at 64^3 with
``scripts/prepare_data.py --size 64`` into ``--real``), of the sample's two phantoms, and the one
real film (pydicom-data's CR, single view). Must fail: films made from the held-out CT's frontal
DRR that no chest film could be: squashed into a 300 x 200 JPEG, stretched to 480 x 200, inverted
(dense tissue dark), blank. Every case runs through ``python -m monai.bundle run inferring`` of
the served models with ``--quality_gate False`` (so that every measure is reported, not refused);
the measures are the summary's: lung-field Dice of the re-projection, the film's share of the
detector field, its histogram distance to the training DRRs, its aspect.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import fire
import nibabel as nib
import numpy as np
from duolift_bundle.datasets.sample import real_radiograph, sample_dir
from duolift_bundle.engines.reports import markdown_table
from duolift_bundle.errors import MissingFileError, RunError, install_last_line_hook
from duolift_bundle.io_utils import write_json
from duolift_bundle.registry import load_registry
from duolift_bundle.transforms.quality import QualityGate
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _png(image: np.ndarray, path: Path, size: tuple[int, int] | None = None, fmt: str = "PNG") -> None:
    """``image`` in [0, 1] as an 8-bit greyscale file, resized to ``size`` = (width, height)."""
    film = Image.fromarray((np.clip(image, 0, 1) * 255).round().astype(np.uint8), "L")
    if size is not None:
        film = film.resize(size, Image.BILINEAR)
    film.save(path, fmt)


def implausible_films(drr: np.ndarray, folder: Path) -> dict[str, Path]:
    """The four films no chest film could be, made from a frontal DRR ``(S, S)`` in [0, 1]; each
    in its own case folder under ``folder``, named ``frontal.<suffix>``."""
    made = {
        "squashed JPEG (300 x 200)": ("squashed", drr, (300, 200), "JPEG", ".jpg"),
        "stretched film (480 x 200)": ("stretched", drr, (480, 200), "PNG", ".png"),
        "inverted film": ("inverted", 1.0 - drr, (256, 256), "PNG", ".png"),
        "blank film": ("blank", np.full_like(drr, 0.5), (256, 256), "PNG", ".png"),
    }
    out = {}
    for name, (case, image, size, fmt, suffix) in made.items():
        (folder / case).mkdir(parents=True)
        _png(image, folder / case / f"frontal{suffix}", size, fmt)
        out[name] = folder / case
    return out


def _infer(spec, cases: Path, out: Path) -> dict[str, dict]:
    files = "[" + ",".join(f"'{c}'" for c in spec.configs) + "]"
    cmd = [sys.executable, "-m", "monai.bundle", "run", "inferring", "--config_file", files,
           "--ckpt_path", str(ROOT / spec.file), "--input_dir", str(cases), "--output_dir", str(out),
           "--quality_gate", "False", "--progress", "False", "--save_figure", "False"]  # fmt: skip
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if not (out / "summary.json").is_file():
        raise RunError(f"run inferring wrote no summary:\n{result.stderr[-3000:]}")
    summary = json.loads((out / "summary.json").read_text())
    rows = {row["case"]: row for row in summary["cases"]}
    rows.update({case: {"case": case, "failed": reason} for case, reason in summary["failed"].items()})
    return rows


#: what the gate checks, as the summary reports it
MEASURES = ("lung_dice", "film_fraction", "histogram_distance", "aspect", "midline_contrast")


def _measures(row: dict) -> dict:
    if "failed" in row:  # a case the reader refused before any measure
        return {"failed": row["failed"], **{k: {} for k in MEASURES}}
    inputs = row.get("inputs", {})
    return {
        "lung_dice": {v: row.get(f"{v}_lung_dice") for v in ("frontal", "lateral") if f"{v}_lung_dice" in row},
        "film_fraction": {v: i.get("film_fraction") for v, i in inputs.items()},
        "histogram_distance": {v: i.get("histogram_distance") for v, i in inputs.items()},
        "aspect": {v: i.get("aspect") for v, i in inputs.items()},
        "midline_contrast": {v: i["midline_contrast"] for v, i in inputs.items() if "midline_contrast" in i},
    }


def main(real: str = "data/real64", out: str = "docs/quality_gate.json") -> None:
    """Measure every case (see the module docstring); write OUT and print the table."""
    real_root = Path(real)
    if not (real_root / "datalist.json").is_file():
        raise MissingFileError(
            f"{real_root}: no prepared real CTs; python scripts/prepare_data.py --src ../shared/data/chest-ct-dicom "
            f"--out {real_root} --size 64"
        )
    served = {spec.views: spec for spec in load_registry(ROOT).served()}
    drr_cases = sorted(p for p in real_root.iterdir() if (p / "xray_frontal.nii.gz").is_file())
    drr_cases += [sample_dir(64) / name for name in ("phantom_0500", "phantom_0501")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        double, single = tmp / "double", tmp / "single"
        for case in drr_cases:
            for view in ("frontal", "lateral"):
                (double / case.name).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(case / f"xray_{view}.nii.gz", double / case.name / f"xray_{view}.nii.gz")
            (single / case.name).mkdir(parents=True)
            shutil.copyfile(case / "xray_frontal.nii.gz", single / case.name / "xray_frontal.nii.gz")
        (single / "real_film").mkdir()
        shutil.copyfile(real_radiograph(), single / "real_film" / "frontal.dcm")
        drr = np.asarray(nib.load(sample_dir(64) / "normal001" / "xray_frontal.nii.gz").dataobj, dtype=np.float32)
        bad = implausible_films(drr, single)
        for views, folder in ((2, double), (1, single)):
            found = _infer(served[views], folder, tmp / f"out{views}")
            for case, row in found.items():
                name = next((n for n, p in bad.items() if p.name == case), case)
                kind = "must fail" if name in bad else "must pass"
                measured = _measures(row)
                if "failed" in measured:  # the reason names the staged file: keep the case's own path
                    measured["failed"] = measured["failed"].replace(f"{tmp}/", "")
                rows.append({"model": served[views].name, "case": name, "expected": kind, **measured})
    gate = QualityGate()
    for row in rows:
        consistency = {f"{v}_lung_dice": d for v, d in row["lung_dice"].items()}
        inputs = {v: {k: row[k][v] for k in MEASURES[1:] if v in row[k]} for v in row["film_fraction"]}
        row["gate"] = (
            [f"refused on reading: {row['failed']}"]
            if "failed" in row
            else gate.reasons(consistency, inputs) or "passes"
        )

    def cell(values: dict) -> str:
        return ", ".join("-" if v is None else f"{v:.3g}" for v in values.values())

    header = [
        "model",
        "case",
        "expected",
        "lung Dice",
        "film share",
        "histogram distance",
        "aspect",
        "midline contrast",
    ]
    header.append("gate (defaults)")
    table = markdown_table(
        header,
        [
            [r["model"], r["case"], r["expected"], cell(r["lung_dice"]), cell(r["film_fraction"]),
             cell(r["histogram_distance"]), cell(r["aspect"]), cell(r["midline_contrast"]),
             "; ".join(r["gate"]) if isinstance(r["gate"], list) else r["gate"]]
            for r in rows
        ],
    )  # fmt: skip
    write_json(out, {"command": f"python scripts/quality_gate_evidence.py --real {real} --out {out}",
                     "thresholds": gate.__dict__, "rows": rows})  # fmt: skip
    print(table)


if __name__ == "__main__":
    install_last_line_hook()  # the bundle's message is the last line of a failure
    fire.Fire(main)
