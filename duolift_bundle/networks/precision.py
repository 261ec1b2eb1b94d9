"""Inference precision: float32, or bfloat16 autocast where the hardware runs it natively.

MONAI's evaluators take ``amp`` for CUDA only (``torch.autocast("cuda")``); a CPU with AVX512-BF16
or AMX runs the 3D convolutions of DuoLift about 2x faster in bfloat16, so the inferer itself
opens the autocast region, on whatever device the input is. The network's instance norms keep
float32 statistics and the output is handed back in float32 (``docs/README.md``, "Performance
(networks)": speed and the accuracy against float32).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

import torch
from duolift_bundle.errors import ConfigError
from monai.inferers import SimpleInferer

__all__ = ["PRECISIONS", "AutocastInferer", "cpu_runs_bfloat16"]

logger = logging.getLogger(__name__)

#: the precisions of ``inference.yaml``'s ``precision``
PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def cpu_runs_bfloat16() -> bool:
    """True when this CPU has bfloat16 arithmetic (AVX512-BF16 or AMX-BF16, ``/proc/cpuinfo``);
    elsewhere PyTorch emulates it, slower than float32."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line for line in f if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class AutocastInferer(SimpleInferer):
    """MONAI's ``SimpleInferer`` under ``torch.autocast(<input's device>, dtype)``; returns float32.

    Args:
        precision: ``"float32"`` (no autocast) or ``"bfloat16"``.
    """

    def __init__(self, precision: str = "float32") -> None:
        super().__init__()
        if precision not in PRECISIONS:
            raise ConfigError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
        self.precision = precision
        self._warned = False

    def __call__(self, inputs: torch.Tensor, network: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if self.precision == "float32":
            return super().__call__(inputs, network, *args, **kwargs)
        device_type = inputs.device.type
        if device_type == "cpu" and not self._warned and not cpu_runs_bfloat16():
            logger.warning("precision bfloat16 on a CPU without AVX512-BF16 / AMX: emulated, slower than float32")
            self._warned = True
        with torch.autocast(device_type, dtype=PRECISIONS[self.precision]):
            out = super().__call__(inputs, network, *args, **kwargs)
        return out.float() if isinstance(out, torch.Tensor) else out
