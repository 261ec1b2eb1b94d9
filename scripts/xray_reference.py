"""Write the reference histogram of the training DRRs that ``xray_contrast: histogram`` matches
clinical radiographs to (``duolift_bundle/inputs/radiograph_contrast.py``).

    python scripts/xray_reference.py --datalist data/real64/datalist.json \
        --cases chest-ct-dicom_P002,chest-ct-dicom_cap002 --out models/xray_reference.json

Every case of the datalist (all splits) whose id is in ``--cases`` (all when omitted) contributes
its prepared ``xray_frontal`` / ``xray_lateral`` DRRs; the file holds, per view, the quantiles of
their pooled pixel values, with the cases and the DRR geometry. The shipped file is made from the
two real CTs the shipped models were trained on (P002 and cap002 of COVID-CT-MD at 64^3), never
from the held-out normal001.
"""

from __future__ import annotations

import sys
from pathlib import Path

import fire
import nibabel as nib
import numpy as np
from duolift_bundle.constants import VIEWS
from duolift_bundle.datasets.routes import load_datalist
from duolift_bundle.datasets.splits import SPLITS
from duolift_bundle.errors import install_last_line_hook
from duolift_bundle.inputs.radiograph_contrast import N_QUANTILES, reference_quantiles, write_reference
from duolift_bundle.io_utils import read_json


def main(datalist: str, out: str, cases: str | list[str] | None = None, n_quantiles: int = N_QUANTILES) -> None:
    items = [it for split in SPLITS for it in load_datalist(datalist, split)]
    if isinstance(cases, str):  # fire passes "a,b" and "[a,b]" of non-literals as text
        cases = [c.strip() for c in cases.strip("[]").split(",") if c.strip()]
    if cases:
        wanted = {str(c) for c in cases}
        missing = wanted - {it["case"] for it in items}
        if missing:
            sys.exit(f"{datalist}: no case {sorted(missing)}")
        items = [it for it in items if it["case"] in wanted]
    if not items:
        sys.exit(f"{datalist}: no case to take the histogram from")
    quantiles = {}
    for view in VIEWS:
        images = [np.asarray(nib.load(it[f"xray_{view}"]).dataobj, dtype=np.float32) for it in items]
        quantiles[view] = reference_quantiles(images, n_quantiles)
    meta = read_json(Path(items[0]["ct"]).parent / "meta.json")
    names = ", ".join(it["case"] for it in items)
    write_reference(
        out, quantiles, source=f"DRRs of {names} ({datalist}); scripts/xray_reference.py", geometry=meta.get("drr", "")
    )
    print(f"wrote {out}: {len(items)} case(s), {n_quantiles} quantiles per view")


if __name__ == "__main__":
    install_last_line_hook()  # the bundle's message is the last line of a failure
    fire.Fire(main, serialize=lambda result: None)
