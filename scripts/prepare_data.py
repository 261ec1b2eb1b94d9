"""Prepare raw chest CTs for training: 128^3 volume, frontal + lateral DRRs, lung mask, datalist.

    python scripts/prepare_data.py --src /data/LIDC-IDRI --out data/lidc --workers 2
    python scripts/prepare_data.py --src scan.nii.gz --out data/one --format x2ct-h5

SRC: a LIDC-IDRI download tree (TCIA layout; CT series only), a folder of NIfTI files, a folder
of DICOM series, one DICOM series folder, or one CT file. Finished cases are skipped on a re-run;
failed cases are listed at the end (exit code 1) while the others are written.
"""

from __future__ import annotations

import sys

import fire
from duolift_bundle.datasets.prepare import main
from duolift_bundle.errors import install_last_line_hook

if __name__ == "__main__":
    install_last_line_hook()  # the bundle's message is the last line of a failure
    # the exit code (0, or 1 when a case failed) is the status, not output: fire would print it
    sys.exit(fire.Fire(main, serialize=lambda code: None))
