"""scripts/benchmark.py: the theoretical peak from flags, cores and clock (analytic values), and
the CPU description every report starts with. (The timed sections run on demand, never here.)"""

from __future__ import annotations

import sys

import pytest
from conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
import benchmark  # noqa: E402


@pytest.mark.parametrize(
    "flags, fp32, bf16",
    [
        # 2 cores x 2 GHz x 2 FLOP/FMA x 16 lanes x 2 units; AMX-BF16: 1024 FLOP/cycle/core
        (["avx2", "avx512f", "avx512_bf16", "amx_bf16"], 256.0, 4096.0),
        # AVX512-BF16 without AMX (Zen 4 / 5): 2 x 32 x 2 FLOP per cycle and core
        (["avx2", "avx512f", "avx512_bf16"], 256.0, 512.0),
        # AVX2 only: 8 lanes, no native bfloat16
        (["avx2", "fma"], 128.0, None),
    ],
)
def test_theoretical_peak(flags, fp32, bf16):
    info = {"flags": flags, "cores": 2, "clock_ghz": 2.0, "clock_source": "test"}
    peak = benchmark.theoretical_peak(info)
    assert peak["fp32_gflop_per_s"] == fp32 and peak["bf16_gflop_per_s"] == bf16
    assert "2 cores x 2.0 GHz" in peak["assumptions"]


def test_cpu_description_names_flags_threads_and_clock():
    import torch

    info = benchmark.cpu_info()
    assert info["threads"] == torch.get_num_threads() and info["cores"] >= 1
    assert set(info["flags"]) <= {"sse2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16",
                                  "avx512_vnni", "amx_tile", "amx_bf16", "amx_int8"}  # fmt: skip
    assert benchmark.theoretical_peak({**info, "clock_ghz": None})["fp32_gflop_per_s"] is None


def test_fractions_are_taken_against_the_best_measured_rate_of_the_precision():
    ref = {"best_gflop_per_s": {"fp32": 200.0, "bf16": 500.0}}
    r = benchmark._fractions({"gflop_per_s": 150.0, "precision": "fp32"}, ref)
    assert r["fraction_of_best_same_precision"] == 0.75 and r["fraction_of_best_measured"] == 0.3
