"""Rebuild the sample data embedded in the package (``duolift_bundle/sample_data``).

    python scripts/make_sample_data.py --real_ct ../shared/data/chest-ct-dicom/normal001

Writes, through the bundle's own preparation (128^3 protocol, DRRs, lung masks):

- ``normal001/``: the real chest CT of COVID-CT-MD (Afshar et al. 2021, CC BY 4.0; see
  ``docs/data_license.txt``) with its two DRRs and lung mask;
- ``phantom_0500/``, ``phantom_0501/``: seeded synthetic phantoms (with lung / vessel labels);
- ``datalist.json`` listing all three under ``test``;
- ``size64/``: the same three cases prepared at 64^3 (5 mm voxels, 64 x 64 DRRs), the size of
  the shipped CPU models (``models/registry.json``), with its own ``datalist.json``.

To keep the package small, each ``ct.nii.gz`` stores integer HU + 1024 (0..2500) as int16 with
the NIfTI scale slope 1/2500, so it loads as the same [0, 1] volume quantised to 1 HU.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import fire
import nibabel as nib
import numpy as np
from duolift_bundle.datasets.prepare import prepare, write_datalist
from duolift_bundle.errors import install_last_line_hook
from duolift_bundle.geometry import CTProtocol, Protocol
from duolift_bundle.io_utils import atomic_dir, read_json, write_json
from duolift_bundle.synthetic.phantoms import make_phantom_set

REAL_SOURCE = "COVID-CT-MD normal001 (CC BY 4.0; docs/data_license.txt)"
SAMPLE_DIR = Path(__file__).resolve().parents[1] / "duolift_bundle" / "sample_data"


def _shrink_ct(path: Path) -> None:
    img = nib.load(path)
    unit = np.asarray(img.dataobj, dtype=np.float64)
    lo, hi = CTProtocol().hu_window  # the sample is prepared with the default protocol: 1 HU steps
    steps = np.clip(np.round(unit * (hi - lo)), 0, hi - lo).astype(np.int16)
    out = nib.Nifti1Image(steps, img.affine, img.header)
    out.set_data_dtype(np.int16)
    out.header.set_slope_inter(1.0 / (hi - lo), 0.0)
    nib.save(out, path)


def _portable_source(meta_path: Path, source: str) -> None:
    """meta.json names its source; the temporary folder (or this machine's path) means nothing
    inside an installed package, so keep only a portable description."""
    meta = read_json(meta_path)
    meta["source"] = source
    write_json(meta_path, meta)


def _build(real_ct: str, target: Path, size: int) -> list[dict]:
    """Prepare the real CT and the two phantoms at ``size`` into the (empty) folder ``target``."""
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        summary = prepare(real_ct, str(tmp / "real"), Protocol.build(size), progress=False)
        if summary["failed"]:
            sys.exit(f"preparing {real_ct} failed: {summary['failed']}")
        make_phantom_set(
            tmp / "phantoms", n=2, size=size, seed=500, protocol=Protocol.build(size, lazy=True), progress=False
        )
        cases = []
        for src in sorted((tmp / "real").iterdir()) + sorted((tmp / "phantoms").iterdir()):
            if not (src / "ct.nii.gz").exists():
                continue
            name = "normal001" if src.parent.name == "real" else src.name
            shutil.copytree(src, target / name)
            _shrink_ct(target / name / "ct.nii.gz")
            _portable_source(
                target / name / "meta.json",
                REAL_SOURCE if name == "normal001" else f"make_phantoms seed {int(name[-4:])}",
            )
            cases.append({"case": name})
        # every case in the test split: the sample is for inference and evaluation
        write_datalist(target, scheme="seeded", fractions=(0.0, 0.0, 1.0))
    return cases


#: The held-out real CT the sample is made from (``../shared`` beside the project).
REAL_CT = os.path.join("..", "shared", "data", "chest-ct-dicom", "normal001")


def main(
    real_ct: str = REAL_CT,
    out: str | Path = SAMPLE_DIR,
    sizes: tuple[int, ...] = (128, 64),
) -> None:
    """Write the 128^3 sample into ``out`` and each other size into ``out/size<N>``."""
    if not os.path.isdir(real_ct):
        sys.exit(f"{real_ct}: the real chest CT is not there (see docs/data_license.txt for its source)")
    for size in sorted({int(s) for s in (sizes if isinstance(sizes, (tuple, list)) else [sizes])}, reverse=True):
        folder = Path(out) if size == 128 else Path(out) / f"size{size}"
        with atomic_dir(folder) as target:
            if size == 128 and folder.exists():  # keep the other sizes (and the README) of the old folder
                for keep in [*folder.glob("size*"), folder / "README.md"]:
                    if keep.exists():
                        (shutil.copytree if keep.is_dir() else shutil.copy2)(keep, target / keep.name)
            cases = _build(real_ct, target, size)
        nbytes = sum(f.stat().st_size for c in cases for f in (folder / c["case"]).iterdir())
        print(f"wrote {folder} ({size}^3, {nbytes / 1e6:.1f} MB): {', '.join(c['case'] for c in cases)}")


if __name__ == "__main__":
    install_last_line_hook()  # the bundle's message is the last line of a failure
    fire.Fire(main)
