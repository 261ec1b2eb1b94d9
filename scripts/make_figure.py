"""Figure-2 style comparison of a target CT and one or more reconstructions (NIfTI files).

    python scripts/make_figure.py --target data/phantoms/phantom_0000/ct.nii.gz \
        --recon eval/inference/phantom_0000/recon_hu.nii.gz --out docs/figures/example.png

Rows: axial, coronal, sagittal slices (through the centre, or --index "[z,y,x]"); columns: the
target, each reconstruction (--recon a.nii.gz,b.nii.gz; named by --names or by its folder) and |reconstruction - target|.
Volumes in HU (recon_hu.nii.gz) are mapped to [0, 1] with the default protocol's HU window;
volumes already in [0, 1] (ct.nii.gz, recon_unit.nii.gz) are used as they are. All volumes must
share one grid (the 128^3 protocol).
"""

from __future__ import annotations

import os
import sys

import fire
import nibabel as nib
import numpy as np
from duolift_bundle.errors import install_last_line_hook
from duolift_bundle.geometry import CTProtocol
from duolift_bundle.viz import comparison_figure


def _unit(path: str) -> np.ndarray:
    data = np.asarray(nib.load(path).dataobj, dtype=np.float32)
    if data.min() < -0.5 or data.max() > 1.5:  # HU, on the default protocol's window
        data = CTProtocol().to_unit(data)
    return np.clip(data, 0.0, 1.0)


def _paths(value) -> list[str]:
    if isinstance(value, str):
        return [p for p in value.strip("[]").split(",") if p]
    return [str(p) for p in value]


def main(target: str, recon, out: str, names=None, index=None, title: str = "") -> None:
    """Write the comparison PNG to OUT; RECON is one path or several, comma-separated."""
    recons = _paths(recon)
    names = (
        _paths(names)
        if names
        else [os.path.basename(os.path.dirname(os.path.abspath(p))) or f"recon {i}" for i, p in enumerate(recons)]
    )
    if len(names) != len(recons):
        sys.exit(f"--names has {len(names)} entries for {len(recons)} reconstructions")
    t = _unit(target)
    volumes = {}
    for name, path in zip(names, recons):
        v = _unit(path)
        if v.shape != t.shape:
            sys.exit(f"{path}: shape {v.shape} differs from the target's {t.shape}")
        volumes[name] = v
    print(comparison_figure(t, volumes, out, title=title, index=index))


if __name__ == "__main__":
    install_last_line_hook()  # the bundle's message is the last line of a failure
    fire.Fire(main)
