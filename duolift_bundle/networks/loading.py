"""Loading generator weights (``models/model.pt`` or a full training checkpoint) into a network,
and reaching the network inside its wrappers (DDP, DataParallel, auxiliary outputs)."""

from __future__ import annotations

import logging
import os

import torch
import torch.nn as nn
from duolift_bundle.errors import InputFileError, MissingFileError
from monai.networks.utils import copy_model_state

__all__ = ["unwrap", "load_generator"]

logger = logging.getLogger(__name__)


def unwrap(network: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel / DataParallel / auxiliary-output wrappers."""
    while True:
        inner = getattr(network, "module", None)
        if not isinstance(inner, nn.Module):
            inner = getattr(network, "net", None) if getattr(network, "wraps_generator", False) else None
        if not isinstance(inner, nn.Module):
            return network
        network = inner


def load_generator(
    network: torch.nn.Module, ckpt_path: str | os.PathLike, device: str | torch.device = "cpu", strict: bool = True
) -> torch.nn.Module:
    """Load ``models/model.pt`` (a generator ``state_dict``) into ``network``; a checkpoint of
    another configuration gives an error naming the file and the first mismatches.

    ``strict=False`` is for warm starts (``train.yaml``'s ``init_ckpt`` with ``init_strict:
    false``), e.g. a single-view model from a double-view one: every tensor whose name and shape
    match is loaded, the others keep their initialisation and are logged; fewer than half
    matching is still an error."""
    path = os.fspath(ckpt_path)
    if not os.path.isfile(path):
        raise MissingFileError(f"{path}: checkpoint not found (train one, or pass --ckpt_path)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "generator" in state and isinstance(state["generator"], dict):
        state = state["generator"]  # a full training checkpoint
    net = unwrap(network)
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs network {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    if not strict:
        # MONAI's copy_model_state takes every tensor whose name and shape match
        merged, loaded, skipped = copy_model_state(net, state, inplace=False)
        if len(loaded) * 2 < len(own):
            raise InputFileError(
                f"{path}: only {len(loaded)} of the network's {len(own)} tensors fit; not a warm start for this network"
            )
        if skipped:
            logger.warning(
                "%s: warm start loads %d of %d tensors; kept initialised: %s",
                path,
                len(loaded),
                len(own),
                ", ".join(sorted(skipped)),
            )
        net.load_state_dict(merged)
        return network.to(device).eval()
    if missing or unexpected or shapes:
        detail = "; ".join(
            part
            for part in (
                f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else "",
                f"{len(shapes)} of another shape (e.g. {shapes[0]})" if shapes else "",
            )
            if part
        )
        raise InputFileError(
            f"{path}: checkpoint does not fit this network configuration ({detail}); "
            "pass the overrides the model was trained with (e.g. --views, --width, --lift, --dual_branch; "
            "each model of models/registry.json lists the configs it runs with, e.g. "
            "configs/inference_single_view.yaml merged after configs/inference.yaml for the single-view model)"
        )
    net.load_state_dict(state)
    return network.to(device).eval()
