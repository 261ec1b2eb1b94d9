"""Performance figures of the bundle, measured on demand (never in the timed test suite).

    python scripts/benchmark.py                       # all sections, JSON to stdout
    python scripts/benchmark.py --real_ct ../shared/data/chest-ct-dicom/normal001 --repeats 5

    python scripts/benchmark.py --sections generator,shipped,training   # the network figures only
    python scripts/benchmark.py --sections generator,training --device cuda  # on a GPU

Every report starts with ``cpu`` (model, the SIMD / bfloat16 flags, cores, threads, clock) and
``reference``: the theoretical peak from those flags, cores and clock (its assumptions stated),
and the rates measured in the same run: an fp32 4096^2 matmul and the 3D convolutions that carry
most of DuoLift's FLOPs, at their real sizes (and the same in bfloat16 where the CPU has
AVX512-BF16 or AMX, or on a GPU). Every "fraction" of a network's rate is taken against the best
rate measured for its precision (``best_gflop_per_s``): a network's FLOP rate is an average of
its layers' rates plus overheads, so with its own heaviest layers in the reference it cannot
exceed 1. The theoretical peak is recorded, not divided by: a clock read in a virtual machine is
often the base clock, and turbo would put a measured rate above it.

Sections:

- ``drr``: DRR seconds per 128^3 volume (both views, X2CT geometry, 320 px detector) and its
  ratio to a ``torch.nn.functional.grid_sample`` ray-marching baseline run in the same process.
- ``phantoms`` / ``prepare_real``: phantom generation + preparation seconds per case, and
  preparation seconds for a real case (eager and lazy protocol).
- ``augmentation``: seconds per training item of a prepared case against the same case through
  the on-the-fly DRR augmentation (``train.yaml``'s ``augment: true``), at 64^3 and 128^3.
- ``generator``: DuoLift (paper widths) and the X2CT-style baseline, inference at 64^3 and
  128^3 in fp32, and DuoLift at 128^3 in bfloat16 autocast with the PSNR between the two outputs
  (same weights, same input): seconds, peak resident memory, forward FLOPs
  (``torch.utils.flop_counter`` on the ``meta`` device), GFLOP/s and its fraction of the
  reference. Every configuration runs in a fresh process so its peak resident memory is its own.
- ``compile``: ``torch.compile`` against eager inference (first call, with compilation, and the
  next one) at ``--compile_size``.
- ``shipped``: the shipped models on the embedded sample at 64^3, fp32 and bfloat16: seconds per
  case of ``python -m monai.bundle run inferring`` end to end (a fresh process: start, weights,
  the case, the files) and of a warm ``serving.Reconstructor`` call (what a MONAI Label request
  runs), with the PSNR between the two precisions' volumes and each one's PSNR against the
  sample's CT.
- ``training``: one training step (G forward, backward, Adam; batch 1) of DuoLift at 64^3 and
  128^3, paper widths and width 1/8, in fp32 (on a GPU also bfloat16 autocast): seconds,
  samples per second, peak memory.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

import fire
import numpy as np
import torch
import torch.nn.functional as F
from duolift_bundle.errors import ConfigError, RunError, install_last_line_hook
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


#: the 3D convolutions that carry most of DuoLift's FLOPs at 128^3 (in, out, spatial edge; 3x3x3):
#: F_u's and the U-Net++ full-resolution blocks' parts (32, 64 in), the third ResNet block, the
#: 64^3 and 32^3 ResNet blocks
CONV_SHAPES = ((32, 32, 128), (64, 32, 128), (64, 64, 128), (128, 64, 128), (256, 128, 64), (1024, 256, 32))

#: fp32 lanes of one SIMD register and bfloat16 FLOPs per cycle and core, by CPU flag
_FP32_LANES = (("avx512f", 16), ("avx2", 8), ("sse2", 4))
_BF16_PER_CYCLE = (("amx_bf16", 1024), ("avx512_bf16", 128))
_FMA_UNITS = 2  # an assumption: two FMA ports per core (server Xeon / EPYC); not in /proc/cpuinfo


def cpu_info() -> dict:
    """Model, the relevant flags, cores usable by this process, torch threads and the clock."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    flags = set(fields.get("flags", "").split())
    clock_mhz, source = None, None
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") as f:
            clock_mhz, source = int(f.read()) / 1000.0, "cpufreq max"
    except (OSError, ValueError):
        if fields.get("cpu MHz"):
            clock_mhz, source = float(fields["cpu MHz"]), "/proc/cpuinfo cpu MHz (may be the base clock)"
    relevant = ["sse2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "avx512_vnni", "amx_tile",
                "amx_bf16", "amx_int8"]  # fmt: skip
    return {
        "model": fields.get("model name", "unknown"),
        "flags": [f for f in relevant if f in flags],
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "threads": torch.get_num_threads(),
        "clock_ghz": round(clock_mhz / 1000.0, 3) if clock_mhz else None,
        "clock_source": source,
        "torch": torch.__version__,
    }


def theoretical_peak(info: dict) -> dict:
    """GFLOP/s from flags, cores and clock: fp32 = cores x clock x 2 (FMA) x lanes x FMA units;
    bfloat16 = cores x clock x the instruction's FLOPs per cycle (AMX-BF16 1024, AVX512-BF16
    2 x 32 x 2)."""
    flags, cores, ghz = set(info["flags"]), int(info["cores"]), info["clock_ghz"]
    if not ghz:
        return {"fp32_gflop_per_s": None, "bf16_gflop_per_s": None, "assumptions": "no clock found"}
    lanes = next((n for flag, n in _FP32_LANES if flag in flags), 1)
    bf16 = next((n for flag, n in _BF16_PER_CYCLE if flag in flags), None)
    return {
        "fp32_gflop_per_s": round(cores * ghz * 2 * lanes * _FMA_UNITS, 1),
        "bf16_gflop_per_s": round(cores * ghz * bf16, 1) if bf16 else None,
        "assumptions": f"{cores} cores x {ghz} GHz ({info['clock_source']}); fp32: 2 FLOP per FMA x {lanes} lanes x "
        f"{_FMA_UNITS} FMA units (assumed); bf16: {bf16} FLOP per cycle and core"
        + (" (Intel's AMX-BF16 figure)" if "amx_bf16" in flags else ""),
    }


def _bf16_native(device: str) -> bool:
    from duolift_bundle.networks.precision import cpu_runs_bfloat16

    return device != "cpu" or cpu_runs_bfloat16()


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def reference(device: str = "cpu", repeats: int = 3) -> dict:
    """The rates this run divides by: a 4096^2 matmul and :data:`CONV_SHAPES` (channels-last,
    inference mode) in fp32, and in bfloat16 where it runs natively; the best of each precision."""
    out: dict = {"device": device, "measured_gflop_per_s": {}}
    precisions = ["fp32"] + (["bf16"] if _bf16_native(device) else [])
    for precision in precisions:
        dtype = torch.float32 if precision == "fp32" else torch.bfloat16
        rates = {}
        n = 4096
        a, b = torch.rand(n, n, device=device, dtype=dtype), torch.rand(n, n, device=device, dtype=dtype)
        t = _time(lambda: (a @ b, _sync(device)), repeats)
        rates[f"matmul_{n}"] = round(2 * n**3 / t["min_s"] / 1e9, 1)
        a = b = torch.empty(0)  # freed before the convolutions
        for cin, cout, edge in CONV_SHAPES:
            conv = torch.nn.Conv3d(cin, cout, 3, padding=1).to(device=device, dtype=dtype)
            conv = conv.to(memory_format=torch.channels_last_3d)
            x = torch.rand(1, cin, edge, edge, edge, device=device, dtype=dtype)
            x = x.contiguous(memory_format=torch.channels_last_3d)
            with torch.inference_mode():
                t = _time(lambda: (conv(x), _sync(device)), max(1, repeats - 1))
            rates[f"conv3d_{cin}to{cout}_{edge}cube"] = round(2 * edge**3 * cin * cout * 27 / t["min_s"] / 1e9, 1)
        out["measured_gflop_per_s"][precision] = rates
    out["best_gflop_per_s"] = {p: max(r.values()) for p, r in out["measured_gflop_per_s"].items()}
    return out


def _build(model: str, size: int, device: str = "cpu", width: float = 1.0) -> torch.nn.Module:
    from duolift_bundle.networks import DuoLiftGenerator, X2CTGenerator

    with torch.device(device):
        if model == "duolift":
            return DuoLiftGenerator(views=2, image_size=size, volume_size=size, width=width)
        levels = size.bit_length() - 1  # X2CT-style widths: the 128^3 defaults, truncated at 64^3
        return X2CTGenerator(
            views=2,
            image_size=size,
            encoder_channels=(32, 64, 128, 256, 256)[: levels - 2],
            decoder_channels=(256, 128, 64, 32, 16, 16)[: levels - 1],
        )


def _flops(model: str, size: int, train: bool, width: float = 1.0) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    net = _build(model, size, "meta", width)
    net.train(train)
    x = torch.zeros(1, 2, size, size, device="meta")
    with FlopCounterMode(display=False) as counter:
        if train:
            net(x).mean().backward()
        else:
            with torch.no_grad():
                net(x)
    return counter.get_total_flops()


def _peak_memory_gb(device: str) -> float:
    """GPU: the most memory PyTorch allocated; CPU: this process's peak resident memory (VmHWM of
    its address space: ``ru_maxrss`` would carry the parent's peak into a spawned child)."""
    if device.startswith("cuda"):
        return round(torch.cuda.max_memory_allocated() / 1e9, 2)
    with open("/proc/self/status") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return round(kb * 1024 / 1e9, 2)


def _measure(
    model: str, size: int, mode: str, repeats: int, precision: str = "fp32", width: float = 1.0,
    device: str = "cpu", save: str | None = None,
) -> dict:  # fmt: skip
    """Runs in a child process: seconds, peak memory and FLOPs of one configuration."""
    torch.manual_seed(0)
    net = _build(model, size, device, width)
    x = torch.rand(1, 2, size, size, generator=torch.Generator().manual_seed(1)).to(device)
    autocast = torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=precision == "bf16")
    result: list = []
    if mode == "inference":
        net.eval()

        def step():
            with torch.inference_mode(), autocast:
                result[:] = [net(x).float()]
            _sync(device)

    else:
        if device == "cpu":  # a step that does not fit fails with an error instead of the kernel's OOM kill
            import resource

            total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
            resource.setrlimit(resource.RLIMIT_AS, (int(0.85 * total), int(0.85 * total)))
        net.train()
        target = torch.rand(1, 1, size, size, size, device=device)
        opt = torch.optim.Adam(net.parameters(), lr=1e-4)

        def step():
            opt.zero_grad(set_to_none=True)
            with autocast:
                loss = F.mse_loss(net(x).float(), target)
            loss.backward()
            opt.step()
            _sync(device)

    timing = _time(step, repeats) if repeats > 0 else _time_once(step)
    if save and result:
        torch.save(result[0].cpu(), save)
    flops = _flops(model, size, mode == "train", width)
    return {
        "seconds": timing["median_s"],
        "repeats": timing["repeats"],
        "samples_per_s": round(1.0 / timing["median_s"], 3),
        "peak_memory_gb": _peak_memory_gb(device),
        "memory": "GPU max allocated" if device.startswith("cuda") else "peak RSS of the process",
        "precision": precision,
        "gflop": round(flops / 1e9, 1),
        "gflop_per_s": round(flops / 1e9 / timing["median_s"], 1),
        "parameters_m": round(sum(p.numel() for p in net.parameters()) / 1e6, 2),
    }


def _time_once(fn) -> dict:
    t0 = time.perf_counter()
    fn()
    return {"median_s": round(time.perf_counter() - t0, 3), "min_s": None, "repeats": 1}


def _in_child(fn, *args, **kwargs):
    import multiprocessing as mp

    with mp.get_context("spawn").Pool(1) as pool:
        return pool.apply(fn, args, kwargs)


def _fractions(result: dict, ref: dict) -> dict:
    best = ref["best_gflop_per_s"]
    own = best.get(result["precision"])
    result["fraction_of_best_same_precision"] = round(result["gflop_per_s"] / own, 2) if own else None
    result["fraction_of_best_measured"] = round(result["gflop_per_s"] / max(best.values()), 2)
    return result


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR of ``a`` against ``b`` on the [0, 1] scale (peak 1)."""
    mse = float(((a.double() - b.double()) ** 2).mean())
    return round(10 * np.log10(1.0 / mse), 2) if mse > 0 else float("inf")


def generator(ref: dict, repeats: int = 2, device: str = "cpu") -> dict:
    """DuoLift and X2CT-style generator inference, each configuration in a fresh process."""
    large = 0 if device == "cpu" else repeats  # tens of seconds per 128^3 volume on a CPU: one run, no warm-up
    runs = [
        ("duolift", 64, "fp32", repeats),
        ("duolift", 128, "fp32", large),
        ("x2ct", 64, "fp32", repeats),
        ("x2ct", 128, "fp32", repeats),
    ]
    if _bf16_native(device):
        runs.insert(2, ("duolift", 128, "bf16", large))
    out: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        for model, size, precision, reps in runs:
            save = os.path.join(tmp, f"{model}_{size}_{precision}.pt")
            r = _in_child(_measure, model, size, "inference", reps, precision, 1.0, device, save)
            out[f"{model}_inference_{size}_{precision}"] = _fractions(r, ref)
        if "duolift_inference_128_bf16" in out:
            a, b = (torch.load(os.path.join(tmp, f"duolift_128_{p}.pt")) for p in ("bf16", "fp32"))
            out["duolift_inference_128_bf16"]["psnr_db_against_fp32"] = _psnr(a, b)
            out["duolift_inference_128_bf16"]["weights"] = "random (seed 0): no 128^3 paper-width model is trained"
    for size in (64, 128):
        a, b = out[f"duolift_inference_{size}_fp32"], out[f"x2ct_inference_{size}_fp32"]
        out[f"duolift_over_x2ct_inference_time_{size}"] = round(a["seconds"] / b["seconds"], 1)
    return out


def training(ref: dict, device: str = "cpu") -> dict:
    """One DuoLift training step (batch 1) at 64^3 and 128^3, paper widths and width 1/8."""
    out: dict = {}
    precisions = ["fp32"] + (["bf16"] if device != "cpu" else [])  # the trainer's AMP runs on CUDA only
    for size in (64, 128):
        for width in (1.0, 0.125):
            for precision in precisions:
                key = f"duolift_train_{size}_width{width:g}_{precision}"
                try:
                    reps = 1 if size == 64 or device != "cpu" else 0  # a GPU step gets its warm-up
                    r = _in_child(_measure, "duolift", size, "train", reps, precision, width, device)
                    out[key] = _fractions(r, ref)
                except Exception as err:  # an out-of-memory kill of the child is a result too
                    out[key] = {"error": f"{type(err).__name__}: {err}"}
    return out


def _compile_child(size: int, compiled: bool) -> dict:
    torch.manual_seed(0)
    net = _build("duolift", size).eval()
    x = torch.rand(1, 2, size, size)
    fn = torch.compile(net) if compiled else net
    with torch.inference_mode():
        t0 = time.perf_counter()
        fn(x)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        fn(x)
        second = time.perf_counter() - t0
    return {"first_call_s": round(first, 1), "next_call_s": round(second, 2), "peak_memory_gb": _peak_memory_gb("cpu")}


def compile_comparison(size: int = 64) -> dict:
    """Eager (the hand-made inference path) against ``torch.compile`` of the same module."""
    return {f"duolift_{size}_{'compiled' if c else 'eager'}": _in_child(_compile_child, size, c) for c in (False, True)}


def shipped(repeats: int = 3) -> dict:
    """The shipped models on the embedded sample (64^3): ``run inferring`` per case end to end
    and a warm ``Reconstructor`` call, fp32 and bfloat16, with the volumes' PSNRs."""
    import nibabel as nib
    from duolift_bundle.datasets.sample import sample_dir
    from duolift_bundle.metrics import psnr_3d
    from duolift_bundle.networks.precision import PRECISIONS
    from duolift_bundle.registry import load_registry
    from duolift_bundle.serving import Reconstructor
    from monai.bundle import ConfigParser

    root = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
    case = os.path.join(str(sample_dir(64)), "normal001")

    def contract(file: str) -> torch.Tensor:
        return torch.from_numpy(np.asarray(nib.load(os.path.join(case, file)).dataobj, dtype=np.float32))

    truth = contract("ct.nii.gz")
    precisions = ["float32"] + (["bfloat16"] if _bf16_native("cpu") else [])
    out: dict = {}
    for spec in load_registry(root).served():
        name = spec.name
        weights = {k: os.path.join(root, v) for k, v in spec.weights_override().items()}
        for precision in precisions:
            with tempfile.TemporaryDirectory() as tmp:
                staged = os.path.join(tmp, "in", "normal001")
                os.makedirs(staged)
                for view in ("frontal", "lateral")[: spec.views]:
                    os.symlink(os.path.join(case, f"xray_{view}.nii.gz"), os.path.join(staged, f"xray_{view}.nii.gz"))
                settings = {**spec.overrides, **weights, "precision": precision}
                cmd = [sys.executable, "-m", "monai.bundle", "run", "inferring", "--config_file",
                       "[" + ",".join(f"'{c}'" for c in spec.configs) + "]", "--bundle_root", root,
                       "--input_dir", os.path.join(tmp, "in"), "--save_figure", "False", "--progress", "False",
                       *[a for k, v in settings.items() for a in (f"--{k}", str(v))]]  # fmt: skip
                times = []
                for i in range(repeats):
                    t0 = time.perf_counter()
                    done = subprocess.run(
                        cmd + ["--output_dir", os.path.join(tmp, f"out{i}")], capture_output=True, cwd=root
                    )
                    times.append(time.perf_counter() - t0)
                    if done.returncode:
                        raise RunError(done.stderr.decode()[-2000:])
                reconstruct = Reconstructor(root, spec.configs, {**settings, "device": "cpu"})
                source = staged  # a case folder, as stage_case leaves a client's files
                reconstruct(source, os.path.join(tmp, "warm"))  # the first request also builds the pipeline
                t_req = _time(lambda: reconstruct(source, os.path.join(tmp, f"req{time.time_ns()}")), repeats)
                out[f"{name}_{precision}"] = {
                    "run_inferring_s_per_case": round(statistics.median(times), 2),
                    "reconstructor_call_s": t_req["median_s"],
                }
        # accuracy, in process on the sample's prepared X-rays against its CT (the data contract's
        # [0, 1] scale and axes, as the evaluation compares them), without the refinement
        parser = ConfigParser()
        parser.read_config([os.path.join(root, c) for c in spec.configs])
        parser.update({"bundle_root": root, "device": "cpu", **spec.overrides, **weights})
        net = parser.get_parsed_content("network").eval()
        views = [contract(f"xray_{v}.nii.gz")[None] for v in ("frontal", "lateral")[: spec.views]]
        x = torch.cat(views, dim=0)[None]
        preds = {}
        for precision in precisions:
            with torch.inference_mode(), torch.autocast("cpu", PRECISIONS[precision], enabled=precision != "float32"):
                preds[precision] = net(x).float()[0, 0]
            out[f"{name}_{precision}"]["psnr_3d_db_against_sample_ct"] = round(psnr_3d(preds[precision], truth), 2)
        if "bfloat16" in preds:
            out[f"{name}_bfloat16"]["psnr_db_against_float32"] = _psnr(preds["bfloat16"], preds["float32"])
    return out


SECTIONS = ("drr", "phantoms", "prepare_real", "augmentation", "generator", "compile", "shipped", "training")
#: what runs without --sections (compile and training take long)
DEFAULT_SECTIONS = ",".join(s for s in SECTIONS if s not in ("compile", "training"))


def main(
    repeats: int = 5,
    real_ct: str | None = None,
    sections: str = DEFAULT_SECTIONS,
    device: str = "cpu",
    compile_size: int = 64,
    out: str | None = None,
) -> None:
    """Run the benchmark sections and print one JSON document (and write it to ``out``)."""
    wanted = [s.strip() for s in (sections.split(",") if isinstance(sections, str) else sections)]  # fire: a tuple
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}; sections are {list(SECTIONS)}")
    info = cpu_info()
    report: dict = {"cpu": info, "device": device}
    if device.startswith("cuda"):
        report["gpu"] = torch.cuda.get_device_name(0)
    report["reference"] = {"theoretical": theoretical_peak(info), **reference(device)}
    ref = report["reference"]
    if "drr" in wanted:
        report.update(drr(repeats))
    if "phantoms" in wanted:
        report.update(phantoms())
    if "prepare_real" in wanted:
        report.update(prepare_real(real_ct))
    if "augmentation" in wanted:
        report.update(augmentation(repeats))
    if "generator" in wanted:
        report["generator"] = generator(ref, repeats=2, device=device)
    if "compile" in wanted:
        report["compile"] = compile_comparison(compile_size)
    if "shipped" in wanted:
        report["shipped"] = shipped()
    if "training" in wanted:
        report["training"] = training(ref, device)
    text = json.dumps(report, indent=2)
    if out:
        from duolift_bundle.io_utils import write_json

        write_json(out, report)
    print(text)


if __name__ == "__main__":
    install_last_line_hook()  # the bundle's message is the last line of a failure
    fire.Fire(main)
