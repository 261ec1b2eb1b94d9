"""Performance figures of the bundle, measured on demand (never in the timed test suite).

    python scripts/benchmark.py                       # all sections, JSON to stdout
    python scripts/benchmark.py --real_ct ../shared/data/chest-ct-dicom/normal001 --repeats 5

Sections (this issue): DRR seconds per 128^3 volume (both views, X2CT geometry, 320 px detector),
its ratio to a ``torch.nn.functional.grid_sample`` ray-marching baseline run in the same process,
phantom generation + preparation seconds per case, and preparation seconds for a real case
(eager and lazy protocol). Later issues add the generator figures.
"""

from __future__ import annotations

import json
import os
import statistics
import tempfile
import time

import fire
import numpy as np
import torch
import torch.nn.functional as F

from duolift_bundle.transforms.drr import DRRGeometry, DRRProjector, hu_to_mu


def _time(fn, repeats: int) -> dict:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": round(statistics.median(times), 4), "min_s": round(min(times), 4), "repeats": repeats}


def _grid_sample_baseline(ct: torch.Tensor, geo: DRRGeometry, spacing: float, n_samples: int = 256) -> torch.Tensor:
    """Naive frontal cone-beam ray marching with trilinear grid_sample (the usual PyTorch DRR)."""
    p = geo.detector_pixels
    det = (torch.arange(p) - (p - 1) / 2) * geo.pixel_size
    u, v = torch.meshgrid(det, det, indexing="ij")
    half = (ct.shape[-1] - 1) / 2 * spacing
    t = torch.linspace(geo.sad - half * 1.8, geo.sad + half * 1.8, n_samples) / geo.sid  # along the ray
    # points: source at y = +sad, detector at y = sad - sid
    z = u[None] * t[:, None, None]
    x = v[None] * t[:, None, None]
    y = geo.sad - geo.sid * t[:, None, None].expand_as(z)
    grid = torch.stack([x / half, y / half, z / half], dim=-1)[None]  # (1, S, P, P, 3) as (W, H, D)
    mu = hu_to_mu(ct * 2500 - 1024)
    samples = F.grid_sample(mu, grid, align_corners=True, padding_mode="zeros")
    step = geo.sid * float(t[1] - t[0]) * torch.sqrt(1 + (u**2 + v**2) / geo.sid**2)
    return samples.sum(dim=2)[0, 0] * step


def drr(repeats: int = 5) -> dict:
    from duolift_bundle.data.phantoms import make_phantom

    ph = make_phantom(0, size=128)
    ct = torch.from_numpy(np.clip((ph.hu + 1024) / 2500, 0, 1))[None, None].float()
    proj = DRRProjector()
    ours = _time(lambda: proj(ct), repeats)
    geo = DRRGeometry()
    base = _time(lambda: _grid_sample_baseline(ct, geo, 2.5), max(1, repeats // 2))
    return {
        "drr_both_views_128cube_s": ours,
        "baseline_grid_sample_one_view_s": base,
        "speedup_vs_baseline_per_view": round(base["median_s"] / (ours["median_s"] / 2), 1),
        "threads": torch.get_num_threads(),
    }


def phantoms(n: int = 4) -> dict:
    from duolift_bundle.data.phantoms import make_phantom_set
    from duolift_bundle.data.prepare import PrepareOptions

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = make_phantom_set(tmp, n=n, size=128, options=PrepareOptions(lazy=True), progress=False)
        dt = time.perf_counter() - t0
    return {"phantom_generate_and_prepare_s_per_case": round(dt / n, 3), "cases": n, "failed": len(summary["failed"])}


def prepare_real(real_ct: str | None = None) -> dict:
    from duolift_bundle.data.prepare import PrepareOptions, prepare

    real_ct = real_ct or os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "chest-ct-dicom", "normal001")
    if not os.path.isdir(real_ct):
        return {"prepare_real_case": f"skipped: {real_ct} not found"}
    out = {}
    for lazy in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            s = prepare(real_ct, tmp, PrepareOptions(lazy=lazy), progress=False)
            out[f"prepare_real_case_s_{'lazy' if lazy else 'eager'}"] = round(time.perf_counter() - t0, 2)
            assert not s["failed"], s["failed"]
    return out


def main(repeats: int = 5, real_ct: str | None = None, sections: str = "drr,phantoms,prepare_real") -> None:
    """Run the benchmark sections and print one JSON document."""
    report = {"torch": torch.__version__, "cpu_count": os.cpu_count()}
    wanted = [s.strip() for s in sections.split(",")]
    if "drr" in wanted:
        report.update(drr(repeats))
    if "phantoms" in wanted:
        report.update(phantoms())
    if "prepare_real" in wanted:
        report.update(prepare_real(real_ct))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    fire.Fire(main)
