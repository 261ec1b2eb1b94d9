"""Helpers of the multi-GPU override (``configs/multi_gpu_train.yaml``): torchrun + DDP."""

from __future__ import annotations

import hashlib
import os

import torch
import torch.distributed as dist
from duolift_bundle.errors import RunError
from duolift_bundle.io_utils import write_json
from duolift_bundle.networks.loading import unwrap

__all__ = ["init_distributed", "local_device", "weights_digest", "write_rank_digest", "cleanup_distributed"]


def init_distributed() -> bool:
    """Join the process group started by ``torchrun`` (NCCL on GPUs, gloo on CPU)."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        raise RunError("multi_gpu_train.yaml must be started by torchrun (RANK / WORLD_SIZE are not set)")
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    if torch.cuda.is_available():
        torch.cuda.set_device(local_device())
    return True


def local_device() -> torch.device:
    """``cuda:<LOCAL_RANK>`` when GPUs exist, else the CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def weights_digest(network: torch.nn.Module) -> str:
    """SHA-256 of every parameter and buffer (names and exact bytes) of the unwrapped network."""
    h = hashlib.sha256()
    for name, tensor in sorted(unwrap(network).state_dict().items()):
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def write_rank_digest(network: torch.nn.Module, output_dir: str) -> str:
    """Write ``rank<r>_weights.json`` (this rank's weights digest): DDP ranks must agree."""
    rank = dist.get_rank() if dist.is_initialized() else 0
    digest = weights_digest(network)
    os.makedirs(output_dir, exist_ok=True)
    write_json(os.path.join(output_dir, f"rank{rank}_weights.json"), {"rank": rank, "sha256": digest})
    return digest


def cleanup_distributed() -> bool:
    if dist.is_initialized():
        dist.destroy_process_group()
    return True
