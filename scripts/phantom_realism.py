"""Realism report: phantoms against real chest CTs, after the same protocol.

    python scripts/phantom_realism.py --real data/real128/datalist.json \
        --phantoms data/phantoms128/datalist.json --out docs/realism/after.json

Both datalists hold prepared cases (scripts/prepare_data.py, scripts/make_phantoms.py) of the
same protocol size. Writes OUT (per-case statistics and the comparison) and prints the markdown
table of the model card ("Realism"); --before adds a column from an earlier report.
"""

from __future__ import annotations

import sys

import fire
import nibabel as nib
import numpy as np
from duolift_bundle.datasets.routes import load_datalist
from duolift_bundle.datasets.splits import SPLITS
from duolift_bundle.engines.reports import markdown_table
from duolift_bundle.errors import install_last_line_hook
from duolift_bundle.geometry import CTProtocol
from duolift_bundle.io_utils import read_json, write_json
from duolift_bundle.synthetic.realism import STATISTICS, chest_statistics, compare


def _read(path: str) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj, dtype=np.float32)


def measure(datalist: str) -> dict[str, dict[str, float]]:
    """Statistics of every case of a prepared datalist (all splits), keyed by case id."""
    out = {}
    for split in SPLITS:
        for item in load_datalist(datalist, split):
            ct = _read(item["ct"])
            size = ct.shape[-1]
            voxel = CTProtocol().fov_mm / size
            xray = np.stack([_read(item["xray_frontal"]), _read(item["xray_lateral"])])
            out[item["case"]] = chest_statistics(ct, _read(item["lung_mask"]), xray, voxel)
    return out


def _fmt(v: float) -> str:
    return f"{v:.0f}" if abs(v) >= 100 else f"{v:.2f}" if abs(v) < 10 else f"{v:.1f}"


def table(comparison: dict, before: dict | None = None) -> str:
    """Markdown: statistic | real range | phantoms (before) | phantoms | inside."""
    header = ["statistic", "real CTs (min-max)"]
    header += ["phantoms before (mean, min-max)"] if before else []
    header += ["phantoms (mean, min-max)", "mean inside the real range"]
    rows = []
    for key, (unit, _) in STATISTICS.items():
        c = comparison[key]
        row = [f"{key} ({unit})" if unit else key, f"{_fmt(c['real_min'])} - {_fmt(c['real_max'])}"]
        if before:
            b = before[key]
            mark = "" if b["inside"] else " ✗"
            row.append(f"{_fmt(b['synthetic_mean'])} ({_fmt(b['synthetic_min'])} - {_fmt(b['synthetic_max'])}){mark}")
        row.append(f"{_fmt(c['synthetic_mean'])} ({_fmt(c['synthetic_min'])} - {_fmt(c['synthetic_max'])})")
        row.append("yes" if c["inside"] else "no")
        rows.append(row)
    return markdown_table(header, rows)


def main(real: str, phantoms: str, out: str, before: str | None = None) -> None:
    """Measure REAL and PHANTOMS (prepared datalists), write OUT, print the table."""
    real_stats = measure(real)
    phantom_stats = measure(phantoms)
    comparison = compare(list(real_stats.values()), list(phantom_stats.values()))
    doc = {
        "real": real_stats,
        "phantoms": phantom_stats,
        "comparison": comparison,
        "sources": {"real": real, "phantoms": phantoms},
    }
    write_json(out, doc)
    print(table(comparison, read_json(before)["comparison"] if before else None))
    outside = [k for k, c in comparison.items() if not c["inside"]]
    print(
        f"\n{len(STATISTICS) - len(outside)} of {len(STATISTICS)} phantom means inside the real range; outside: "
        f"{', '.join(outside) or 'none'}"
    )


if __name__ == "__main__":
    install_last_line_hook()  # the bundle's message is the last line of a failure
    sys.exit(fire.Fire(main))
