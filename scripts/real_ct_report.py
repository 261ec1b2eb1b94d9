"""Leave-one-out report on the shared real chest CTs: each fold's held-out CT reconstructed by the
models trained without it, next to the baselines, with the evaluation's own metric code.

    python scripts/real_ct_report.py --out docs/real_ct_loo.json --figures docs/figures

For every case C of ``--real`` (a prepared datalist at the models' size) and every entry of
``--models`` (name -> ``[views, weights, width]``; ``{case}`` in the path is replaced by C; a folder
means its newest checkpoint, i.e. the weights of the last epoch), the held-out CT's DRRs are
reconstructed and scored: PSNR / SSIM in 2D and 3D (duolift_bundle.metrics.image, as
``evaluate.yaml``). Baselines in the same table: the mean of the other real CTs and the mean of the
fold's training CTs (``--fold_datalist``: real + phantoms, each CT once). Writes OUT (JSON), prints
one markdown table per fold and, with ``--figures``, one tri-planar figure per fold.

Bone columns: ``bone_hu`` is the mean HU of each volume over the held-out CT's bone voxels (target
>= ``--bone_hu``, 300 HU by default: the vertebrae, ribs, sternum and scapulae at 64^3);
``bone_contrast_hu`` is that mean minus the volume's mean over the soft tissue beside the bone
(target -200..200 HU, within 3 voxels = 15 mm of it along every axis). The target's own values are the reference:
a model that puts the spine and ribs where they are comes close to both; one that paints soft
tissue there has a contrast near 0, and one that only brightens the region has a raised mean and
still no contrast.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

import fire
import nibabel as nib
import numpy as np
import scipy.ndimage as ndi
import torch
from duolift_bundle.datasets.routes import load_datalist
from duolift_bundle.datasets.splits import SPLITS
from duolift_bundle.engines.reports import markdown_table
from duolift_bundle.errors import install_last_line_hook
from duolift_bundle.geometry import CTProtocol
from duolift_bundle.io_utils import write_json
from duolift_bundle.metrics.image import psnr_2d, psnr_3d, ssim_2d, ssim_3d
from duolift_bundle.registry import load_registry

ROOT = Path(__file__).resolve().parents[1]
METRICS = {"psnr_2d": psnr_2d, "psnr_3d": psnr_3d, "ssim_2d": ssim_2d, "ssim_3d": ssim_3d}
#: the fold runs of the two shipped models (train_real_folds.sh); the phantom-only model is one file
FOLD_RUNS = {"double_view": "runs/real64_dv_{case}/checkpoints", "single_view": "runs/real64_sv_{case}/checkpoints"}
#: table row -> [views, weights (a file, or a fold's checkpoint folder), width]: the registry's models
DEFAULT_MODELS = {
    spec.title: [spec.views, FOLD_RUNS.get(name, spec.file), spec.width]
    for name, spec in load_registry(ROOT).models.items()
}


def _read(path: str) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj, dtype=np.float32)


@functools.lru_cache(maxsize=None)
def _network_def(views: int, width: float):
    """The inference config's network (inference.yaml: 64^3) of ``views`` and ``width``,
    parsed once per architecture (each fold loads its weights into it)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(ROOT / "configs" / "inference.yaml")])
    parser.update({"bundle_root": str(ROOT), "views": views, "width": width})
    return parser.get_parsed_content("network_def")


def _network(views: int, weights: str, width: float):
    """That network with ``weights`` (a file, or a folder's newest checkpoint)."""
    from duolift_bundle.engines.resume import latest_checkpoint
    from duolift_bundle.networks import load_generator

    path = latest_checkpoint(weights) if os.path.isdir(weights) else weights
    return load_generator(_network_def(views, width), path), path


def _mean(items: list[dict]) -> np.ndarray:
    """The voxel-wise mean of the items' CTs, each CT once (the baselines' MeanVolume)."""
    from duolift_bundle.networks import MeanVolume

    return MeanVolume.from_files(list(dict.fromkeys(it["ct"] for it in items))).mean[0].numpy()


def _bone_regions(target: np.ndarray, bone_hu: float) -> tuple[np.ndarray, np.ndarray]:
    """The target's bone voxels (>= ``bone_hu``) and the soft tissue within 3 voxels of them."""
    bone = target >= CTProtocol().to_unit(bone_hu)
    hu = CTProtocol().to_hu(target)
    beside = ndi.binary_dilation(bone, np.ones((3, 3, 3), bool), iterations=3) & ~bone & (hu >= -200) & (hu <= 200)
    return bone, beside


def _bone_columns(volume: np.ndarray, bone: np.ndarray, beside: np.ndarray) -> dict[str, float]:
    hu = CTProtocol().to_hu(np.clip(volume, 0, 1))
    return {
        "bone_hu": round(float(hu[bone].mean()), 1),
        "bone_contrast_hu": round(float(hu[bone].mean() - hu[beside].mean()), 1),
    }


def main(
    real: str = "data/real64/datalist.json",
    fold_datalist: str = "data/real64_{case}_n256/datalist.json",
    models: dict | None = None,
    out: str = "docs/real_ct_loo.json",
    figures: str | None = None,
    bone_hu: float = 300.0,
) -> None:
    """Score every fold (see the module docstring); write OUT and print the tables."""
    from duolift_bundle.viz import comparison_figure

    models = models or DEFAULT_MODELS
    cases = [it for split in SPLITS for it in load_datalist(real, split)]
    report: dict = {
        "real": real,
        "models": {k: list(v) for k, v in models.items()},
        "bone_hu_threshold": bone_hu,
        "folds": {},
    }
    for held in cases:
        short = held["case"].split("_")[-1]
        target = _read(held["ct"])
        xray = torch.from_numpy(np.stack([_read(held["xray_frontal"]), _read(held["xray_lateral"])]))[None]
        others = [it for it in cases if it is not held]
        preds = {
            "mean of the other real CTs": _mean(others),
            "mean of the fold's training CTs": _mean(load_datalist(fold_datalist.format(case=short), "training")),
        }
        sources = {}
        for name, (views, weights, width) in models.items():
            net, path = _network(int(views), weights.format(case=short), float(width))
            with torch.no_grad():
                preds[name] = net(xray[:, : int(views)])[0, 0].numpy()
            sources[name] = os.path.relpath(path, ROOT) if os.path.isabs(path) else path
        bone, beside = _bone_regions(target, bone_hu)
        rows = {
            name: {m: round(float(fn(np.clip(p, 0, 1), target)), 4) for m, fn in METRICS.items()}
            for name, p in preds.items()
        }
        for name, p in preds.items():
            rows[name].update(_bone_columns(p, bone, beside))
        ref = _bone_columns(target, bone, beside)
        report["folds"][short] = {"case": held["case"], "rows": rows, "weights": sources, "target": ref}
        print(
            f"\n### held out: {short} (bone: {int(bone.sum())} voxels >= {bone_hu:g} HU; target: bone "
            f"{ref['bone_hu']:.0f} HU, contrast {ref['bone_contrast_hu']:.0f} HU)"
        )
        header = ["method", "PSNR(2D)", "PSNR(3D)", "SSIM(2D)", "SSIM(3D)", "bone (HU)", "bone contrast (HU)"]
        cells = [
            [name, f"{r['psnr_2d']:.2f}", f"{r['psnr_3d']:.2f}", f"{r['ssim_2d']:.3f}", f"{r['ssim_3d']:.3f}"]
            + [f"{r['bone_hu']:.0f}", f"{r['bone_contrast_hu']:.0f}"]
            for name, r in rows.items()
        ]
        print("\n" + markdown_table(header, cells))
        if figures:
            shown = {k: preds[k] for k in (*models, "mean of the other real CTs") if k in preds}
            comparison_figure(
                target, shown, Path(figures) / f"loo_{short}.png", title=f"{short} held out (leave-one-out)"
            )
    write_json(out, report)


if __name__ == "__main__":
    install_last_line_hook()  # the bundle's message is the last line of a failure
    sys.exit(fire.Fire(main))
