"""The quick start's main job (at this stage of the bundle): prepare the demo data and draw it.

    python scripts/quickstart.py [--out demo] [--n 12] [--real_ct ../shared/data/chest-ct-dicom/normal001]

1. 12 seeded chest phantoms -> ``<out>/phantoms`` (128^3 CT, DRRs, lung masks, datalist.json);
2. the real chest CT of ``../shared/data`` (when present) -> ``<out>/real`` through
   ``scripts/prepare_data.py``'s code;
3. one figure per prepared real case and for the first phantom -> ``<out>/figures``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import fire
import nibabel as nib

from duolift_bundle.data.phantoms import make_phantom_set
from duolift_bundle.data.prepare import PrepareOptions, format_summary, prepare
from duolift_bundle.viz import case_figure

DEFAULT_REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "chest-ct-dicom" / "normal001"


def _figure(case_dir: Path, out_png: Path, title: str) -> str:
    load = lambda name: nib.load(case_dir / name).get_fdata()  # noqa: E731
    import numpy as np

    xray = np.stack([load("xray_frontal.nii.gz"), load("xray_lateral.nii.gz")])
    return case_figure(load("ct.nii.gz"), out_png, xray, load("lung_mask.nii.gz"), title=title)


def main(out: str = "demo", n: int = 12, workers: int = 2, real_ct: str | None = None) -> None:
    out_dir = Path(out)
    t0 = time.perf_counter()
    summary = make_phantom_set(out_dir / "phantoms", n=n, size=128, seed=0, workers=workers, options=PrepareOptions(lazy=True))
    print(format_summary(summary))
    figures = [_figure(out_dir / "phantoms" / "phantom_0000", out_dir / "figures" / "phantom_0000.png", "synthetic phantom 0 (seed 0)")]
    real = Path(real_ct) if real_ct else DEFAULT_REAL
    if real.exists():
        rs = prepare(str(real), out_dir / "real", PrepareOptions(), workers=1)
        print(format_summary(rs))
        for case in rs["prepared"] + rs["skipped"]:
            title = f"{case}: real chest CT (COVID-CT-MD sample, CC BY 4.0), 128^3 protocol"
            figures.append(_figure(out_dir / "real" / case, out_dir / "figures" / f"{case}.png", title))
    else:
        print(f"note: no real CT at {real}; pass --real_ct to add one")
    print(f"\ndone in {time.perf_counter() - t0:.1f} s")
    print(f"phantom datalist: {os.path.abspath(out_dir / 'phantoms' / 'datalist.json')}")
    for f in figures:
        print(f"figure: {os.path.abspath(f)}")
    sys.exit(1 if summary["failed"] else 0)


if __name__ == "__main__":
    fire.Fire(main)
