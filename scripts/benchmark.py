"""Performance figures of the bundle, measured on demand (never in the timed test suite).

    python scripts/benchmark.py                       # all sections, JSON to stdout
    python scripts/benchmark.py --real_ct ../shared/data/chest-ct-dicom/normal001 --repeats 5

    python scripts/benchmark.py --sections matmul,generator     # the network figures only

Sections:

- ``drr``: DRR seconds per 128^3 volume (both views, X2CT geometry, 320 px detector) and its
  ratio to a ``torch.nn.functional.grid_sample`` ray-marching baseline run in the same process.
- ``phantoms`` / ``prepare_real``: phantom generation + preparation seconds per case, and
  preparation seconds for a real case (eager and lazy protocol).
- ``augmentation``: seconds per training item of a prepared case against the same case through
  the on-the-fly DRR augmentation (``train.yaml``'s ``augment: true``), at 64^3 and 128^3.
- ``matmul``: the machine's practical fp32 peak, a 4096^2 matrix multiply in GFLOP/s.
- ``generator``: DuoLift (paper widths) and the X2CT-style baseline at 64^3 and 128^3:
  inference seconds per volume, peak resident memory, forward FLOPs
  (``torch.utils.flop_counter`` on the ``meta`` device) and achieved GFLOP/s as a fraction of
  the matmul peak; training-step seconds (forward, backward, Adam) at 64^3. Every configuration
  runs in a fresh process so its peak resident memory is its own.
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
from duolift_bundle.errors import install_last_line_hook
from duolift_bundle.geometry import Protocol
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
    mu = hu_to_mu(Protocol().ct.to_hu(ct))
    samples = F.grid_sample(mu, grid, align_corners=True, padding_mode="zeros")
    step = geo.sid * float(t[1] - t[0]) * torch.sqrt(1 + (u**2 + v**2) / geo.sid**2)
    return samples.sum(dim=2)[0, 0] * step


def drr(repeats: int = 5) -> dict:
    from duolift_bundle.synthetic.phantoms import make_phantom

    ph = make_phantom(0, size=128)
    ct = torch.from_numpy(np.clip(Protocol().ct.to_unit(ph.hu), 0, 1))[None, None].float()
    proj = DRRProjector(Protocol())
    ours = _time(lambda: proj(ct), repeats)
    geo = DRRGeometry()
    base = _time(lambda: _grid_sample_baseline(ct, geo, Protocol().ct.voxel_mm), max(1, repeats // 2))
    return {
        "drr_both_views_128cube_s": ours,
        "baseline_grid_sample_one_view_s": base,
        "speedup_vs_baseline_per_view": round(base["median_s"] / (ours["median_s"] / 2), 1),
        "threads": torch.get_num_threads(),
    }


def phantoms(n: int = 4) -> dict:
    from duolift_bundle.synthetic.phantoms import make_phantom_set

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        summary = make_phantom_set(tmp, n=n, size=128, protocol=Protocol.build(128, lazy=True), progress=False)
        dt = time.perf_counter() - t0
    return {"phantom_generate_and_prepare_s_per_case": round(dt / n, 3), "cases": n, "failed": len(summary["failed"])}


def prepare_real(real_ct: str | None = None) -> dict:
    from duolift_bundle.datasets.prepare import prepare

    real_ct = real_ct or os.path.join(
        os.path.dirname(__file__), "..", "..", "shared", "data", "chest-ct-dicom", "normal001"
    )
    if not os.path.isdir(real_ct):
        return {"prepare_real_case": f"skipped: {real_ct} not found"}
    out = {}
    for lazy in (False, True):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            s = prepare(real_ct, tmp, Protocol.build(lazy=lazy), progress=False)
            out[f"prepare_real_case_s_{'lazy' if lazy else 'eager'}"] = round(time.perf_counter() - t0, 2)
            assert not s["failed"], s["failed"]
    return out


def augmentation(repeats: int = 5, sizes: tuple[int, ...] = (64, 128)) -> dict:
    """Seconds per training item: a prepared case (NIfTI DRRs read from the cache) against the
    on-the-fly DRR augmentation of the same case (random affine / elastic / intensity, then both
    DRRs simulated), on this process's device (CPU here)."""
    from duolift_bundle.datasets.routes import make_dataset
    from duolift_bundle.synthetic.phantoms import make_phantom_set

    out = {}
    for size in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            make_phantom_set(tmp, n=2, size=size, seed=0, fractions=(1.0, 0.0, 0.0), progress=False)
            protocol = Protocol.build(size)
            datalist = os.path.join(tmp, "datalist.json")
            plain = make_dataset("prepared", "training", 2, protocol, datalist=datalist)
            augmented = make_dataset("prepared", "training", 2, protocol, datalist=datalist, augmentation={})
            epoch = iter(range(10**6))

            def _augmented():
                augmented.set_epoch(next(epoch))
                return augmented[0]

            t_plain = _time(lambda: plain[0], repeats)["median_s"]
            t_aug = _time(_augmented, repeats)["median_s"]
        out[f"augmentation_{size}"] = {
            "prepared_s_per_case": t_plain,
            "augmented_s_per_case": t_aug,
            "extra_s_per_case": round(t_aug - t_plain, 4),
        }
    return out


def matmul_peak(n: int = 4096, repeats: int = 5) -> float:
    """GFLOP/s of an ``n x n`` fp32 matrix multiply (the machine's practical peak)."""
    a, b = torch.rand(n, n), torch.rand(n, n)
    t = _time(lambda: a @ b, repeats)
    return round(2 * n**3 / t["median_s"] / 1e9, 1)


def _build(model: str, size: int, device: str = "cpu") -> torch.nn.Module:
    from duolift_bundle.networks import DuoLiftGenerator, X2CTGenerator

    with torch.device(device):
        if model == "duolift":
            return DuoLiftGenerator(views=2, image_size=size, volume_size=size)
        levels = size.bit_length() - 1  # X2CT-style widths: the 128^3 defaults, truncated at 64^3
        return X2CTGenerator(
            views=2,
            image_size=size,
            encoder_channels=(32, 64, 128, 256, 256)[: levels - 2],
            decoder_channels=(256, 128, 64, 32, 16, 16)[: levels - 1],
        )


def _flops(model: str, size: int, train: bool) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    net = _build(model, size, "meta")
    net.train(train)
    x = torch.zeros(1, 2, size, size, device="meta")
    with FlopCounterMode(display=False) as counter:
        if train:
            net(x).mean().backward()
        else:
            with torch.no_grad():
                net(x)
    return counter.get_total_flops()


def _measure(model: str, size: int, mode: str, repeats: int) -> dict:
    """Runs in a child process: seconds, peak RSS and FLOPs of one configuration."""
    import resource

    torch.manual_seed(0)
    net = _build(model, size)
    x = torch.rand(1, 2, size, size)
    if mode == "inference":
        net.eval()

        def step():
            with torch.inference_mode():
                net(x)

    else:
        net.train()
        target = torch.rand(1, 1, size, size, size)
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)

        def step():
            opt.zero_grad(set_to_none=True)
            F.mse_loss(net(x), target).backward()
            opt.step()

    timing = _time(step, repeats) if repeats > 0 else _time_once(step)
    flops = _flops(model, size, mode == "train")
    return {
        "seconds": timing["median_s"],
        "repeats": timing["repeats"],
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
        "gflop": round(flops / 1e9, 1),
        "gflop_per_s": round(flops / 1e9 / timing["median_s"], 1),
        "parameters_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 2),
    }


def _time_once(fn) -> dict:
    t0 = time.perf_counter()
    fn()
    return {"median_s": round(time.perf_counter() - t0, 3), "min_s": None, "repeats": 1}


def generator(repeats: int = 2, peak: float | None = None) -> dict:
    """DuoLift and X2CT-style generator figures, each configuration in a fresh process."""
    import multiprocessing as mp

    peak = peak or matmul_peak()
    runs = [
        ("duolift", 64, "inference", repeats),
        ("duolift", 128, "inference", 0),  # about a minute per volume: one untimed-warm-up-free run
        ("duolift", 64, "train", repeats),
        ("x2ct", 64, "inference", repeats),
        ("x2ct", 128, "inference", repeats),
        ("x2ct", 64, "train", repeats),
    ]
    out: dict = {"matmul_peak_gflop_per_s": peak}
    ctx = mp.get_context("spawn")
    for model, size, mode, reps in runs:
        with ctx.Pool(1) as pool:
            r = pool.apply(_measure, (model, size, mode, reps))
        r["fraction_of_matmul_peak"] = round(r["gflop_per_s"] / peak, 2)
        out[f"{model}_{mode}_{size}"] = r
    for size in (64, 128):
        a, b = out[f"duolift_inference_{size}"], out[f"x2ct_inference_{size}"]
        out[f"duolift_over_x2ct_inference_time_{size}"] = round(a["seconds"] / b["seconds"], 1)
    return out


def main(
    repeats: int = 5,
    real_ct: str | None = None,
    sections: str = "drr,phantoms,prepare_real,augmentation,matmul,generator",
) -> None:
    """Run the benchmark sections and print one JSON document."""
    report = {"torch": torch.__version__, "cpu_count": os.cpu_count()}
    # fire turns "a,b" into a tuple
    wanted = [s.strip() for s in (sections.split(",") if isinstance(sections, str) else sections)]
    if "drr" in wanted:
        report.update(drr(repeats))
    if "phantoms" in wanted:
        report.update(phantoms())
    if "prepare_real" in wanted:
        report.update(prepare_real(real_ct))
    if "augmentation" in wanted:
        report.update(augmentation(repeats))
    if "matmul" in wanted or "generator" in wanted:
        report["matmul_peak_gflop_per_s"] = matmul_peak()
    if "generator" in wanted:
        report.update(generator(repeats=2, peak=report["matmul_peak_gflop_per_s"]))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    install_last_line_hook()  # the bundle's message is the last line of a failure
    fire.Fire(main)
