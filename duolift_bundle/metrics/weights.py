"""The one resolver of pretrained weights (DESIGN.md "Offline weights").

No package ships the weights the evaluation needs, and the machines this bundle is built on reach
only package registries. Every weights file is found in this order:

1. an explicit path (a config value / function argument),
2. an environment variable naming the file (or folder),
3. the tool's default cache (``$TORCH_HOME/hub/checkpoints`` for lungmask and torchvision's VGG16,
   ``$TOTALSEG_WEIGHTS_PATH`` or ``$TOTALSEG_HOME_DIR/nnunet/results`` for TotalSegmentator),
4. a download into that cache, only when ``allow_download=True``.

When nothing is found the error names the file, its URL and the folder to put it in.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from duolift_bundle.errors import DuoLiftError

__all__ = [
    "WeightSpec",
    "WeightsNotFoundError",
    "LUNGMASK_R231",
    "VGG16",
    "TOTALSEG_LUNG_VESSELS",
    "resolve_weights",
    "torch_hub_dir",
    "totalseg_weights_dir",
    "check_evaluation_weights",
    "OFFLINE_HINT",
]


class WeightsNotFoundError(DuoLiftError, FileNotFoundError):
    """A pretrained weights file is missing and may not (or cannot) be downloaded."""


@dataclass(frozen=True)
class WeightSpec:
    """One weights artefact: ``filename`` is a file name or, for folders, a glob pattern."""

    name: str
    filename: str
    url: str
    env_var: str
    cache: str  # "torch_hub" or "totalseg"
    is_folder: bool = False


LUNGMASK_R231 = WeightSpec(
    "lungmask U-Net R231 (Hofmanninger et al. 2020)",
    "unet_r231-d5d2fc3d.pth",
    "https://github.com/JoHof/lungmask/releases/download/v0.0/unet_r231-d5d2fc3d.pth",
    "DUOLIFT_LUNGMASK_WEIGHTS",
    "torch_hub",
)
VGG16 = WeightSpec(
    "torchvision VGG16 (the LPIPS(vgg) backbone)",
    "vgg16-397923af.pth",
    "https://download.pytorch.org/models/vgg16-397923af.pth",
    "DUOLIFT_VGG16_WEIGHTS",
    "torch_hub",
)
_TOTALSEG_HOW = (
    "https://github.com/wasserth/TotalSegmentator (on a connected machine: totalseg_download_weights -t lung_vessels)"
)
#: TotalSegmentator 2.x ``lung_vessels``: the vessel model (task 117) and, for its lung crop,
#: the 3 mm ``total`` model (task 297).
TOTALSEG_LUNG_VESSELS = (
    WeightSpec(
        "TotalSegmentator lung_vessels model (task 117)",
        "Dataset117_*",
        _TOTALSEG_HOW,
        "TOTALSEG_WEIGHTS_PATH",
        "totalseg",
        is_folder=True,
    ),
    WeightSpec(
        "TotalSegmentator total 3 mm model (task 297, lung crop)",
        "Dataset297_*",
        _TOTALSEG_HOW,
        "TOTALSEG_WEIGHTS_PATH",
        "totalseg",
        is_folder=True,
    ),
)


def torch_hub_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (torch's default cache of downloaded weights)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def totalseg_weights_dir() -> Path:
    """TotalSegmentator's nnU-Net results folder, as TotalSegmentator itself resolves it."""
    if os.environ.get("TOTALSEG_WEIGHTS_PATH"):
        return Path(os.environ["TOTALSEG_WEIGHTS_PATH"])
    home = Path(os.environ.get("TOTALSEG_HOME_DIR", Path.home() / ".totalsegmentator"))
    return home / "nnunet" / "results"


def _cache_dir(spec: WeightSpec) -> Path:
    return torch_hub_dir() if spec.cache == "torch_hub" else totalseg_weights_dir()


def _find(folder: Path, spec: WeightSpec) -> Optional[Path]:
    if spec.is_folder:
        hits = sorted(glob.glob(os.path.join(glob.escape(str(folder)), spec.filename)))
        return Path(hits[0]) if hits else None
    path = folder / spec.filename
    return path if path.is_file() else None


def resolve_weights(
    spec: WeightSpec, explicit: Optional[str | os.PathLike] = None, allow_download: bool = False
) -> Path:
    """Path of the weights of ``spec`` (see the module docstring for the order).

    Raises:
        WeightsNotFoundError: an explicit path that does not exist, or nothing found anywhere.
    """
    if explicit:
        path = Path(explicit)
        if path.is_file() or (spec.is_folder and path.is_dir()):
            return path
        raise WeightsNotFoundError(f"{spec.name}: the given weights path {path} does not exist")
    env = os.environ.get(spec.env_var)
    if env:
        path = Path(env)
        if path.is_file() and not spec.is_folder:
            return path
        if path.is_dir():
            found = _find(path, spec)
            if found is not None:
                return found
    folder = _cache_dir(spec)
    found = _find(folder, spec)
    if found is not None:
        return found
    if allow_download and not spec.is_folder:
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / spec.filename
        torch.hub.download_url_to_file(spec.url, str(target), progress=False)
        return target
    raise WeightsNotFoundError(
        f"{spec.name}: weights {spec.filename} not found. Download {spec.url} and put it in {folder} "
        f"(or set ${spec.env_var} to its path, or pass the path in the config)"
        + ("" if allow_download or spec.is_folder else "; downloading is off (allow_download=False)")
    )


#: what to do when the paper's pretrained models are out of reach (evaluate.yaml's ``offline``)
OFFLINE_HINT = (
    "or run with --offline True: the offline fallbacks (classical lung mask, Frangi vessels, no LPIPS), "
    "named in every report, whose numbers are not the paper's"
)


def check_evaluation_weights(
    lpips: bool = True,
    vgg_weights: Optional[str | os.PathLike] = None,
    lung_segmenter: str = "lungmask",
    lungmask_weights: Optional[str | os.PathLike] = None,
    vessel_segmenter: str = "totalsegmentator",
    totalseg_weights: Optional[str | os.PathLike] = None,
    allow_download: bool = False,
) -> list[Path]:
    """Resolve every pretrained weights file the evaluation's settings need (LPIPS' VGG16,
    lungmask R231, TotalSegmentator's two models), before any of them is built, and report
    all the missing ones in one error.

    Returns:
        the resolved paths.

    Raises:
        WeightsNotFoundError: one line per missing file (name, file, URL, folder), then the
            ``--offline True`` hint.
    """
    wanted: list[tuple[WeightSpec, Optional[Path]]] = []
    if lpips:
        wanted.append((VGG16, Path(vgg_weights) if vgg_weights else None))
    if lung_segmenter == "lungmask":
        wanted.append((LUNGMASK_R231, Path(lungmask_weights) if lungmask_weights else None))
    if vessel_segmenter == "totalsegmentator":
        for spec in TOTALSEG_LUNG_VESSELS:  # an explicit folder holds the Dataset* folders
            explicit = None
            if totalseg_weights:
                explicit = _find(Path(totalseg_weights), spec) or Path(totalseg_weights) / spec.filename
            wanted.append((spec, explicit))
    found, missing = [], []
    for spec, explicit in wanted:
        try:
            found.append(resolve_weights(spec, explicit, allow_download and not spec.is_folder))
        except WeightsNotFoundError as err:
            missing.append(str(err))
    if missing:
        lines = "\n".join(f"  - {m}" for m in missing)
        raise WeightsNotFoundError(
            f"{len(missing)} pretrained weights file(s) of the paper's evaluation are missing:\n{lines}\n"
            f"Put them in place (or pass --vgg_weights / --lungmask_weights / --totalseg_weights), {OFFLINE_HINT}."
        )
    return found
