"""The paper's evaluation chain as MONAI post-processing and Ignite handlers (``configs/evaluate.yaml``).

Per case (a dictionary with the reconstruction ``pred`` and the target ``ct``, both
``(1, D, H, W)`` in [0, 1]): :class:`ImageMetricsd` adds PSNR(2D), PSNR(3D), SSIM(2D), SSIM(3D),
MAE and optionally LPIPS(vgg) (:mod:`duolift_bundle.metrics`); :class:`AnatomicalDiced` adds the
lung and vessel DICE of segmentations of both volumes converted back to HU, with the segmenters'
names. :class:`MetricsReport` collects the rows and writes ``metrics.csv`` (per case),
``summary.json`` (mean and std) and ``table.md`` (laid out like the paper's Table 1 / Table 3);
:class:`FigureWriter` writes the Figure-2 style comparison of the first cases.
"""

from __future__ import annotations

import csv
import logging
import os
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.transforms import MapTransform

from duolift_bundle.constants import CT_KEY, PRED_KEY, unit_to_hu
from duolift_bundle.io_utils import atomic_path, write_json
from duolift_bundle.metrics import image as im

__all__ = [
    "ImageMetricsd",
    "AnatomicalDiced",
    "MetricsReport",
    "FigureWriter",
    "lung_segmenter",
    "vessel_segmenter",
    "METRIC_COLUMNS",
    "MeanVolume",
]

logger = logging.getLogger(__name__)

#: Report columns: key -> (header, higher is better)
METRIC_COLUMNS: dict[str, tuple[str, bool]] = {
    "psnr_2d": ("PSNR(2D) dB", True),
    "psnr_3d": ("PSNR(3D) dB", True),
    "ssim_2d": ("SSIM(2D)", True),
    "ssim_3d": ("SSIM(3D)", True),
    "lpips": ("LPIPS", False),
    "mae": ("MAE", False),
    "dice_lung": ("DICE lung", True),
    "dice_vessel": ("DICE vessel", True),
}


def _volume(x: Any) -> np.ndarray:
    a = np.asarray(torch.as_tensor(x).detach().cpu().float())
    return a[0] if a.ndim == 4 else a


def lung_segmenter(name: str = "lungmask", weights: Optional[str] = None, allow_download: bool = False):
    """``"lungmask"`` (the paper's, R231) or ``"classical"`` (offline fallback)."""
    from duolift_bundle.metrics.anatomy import ClassicalLungSegmenter, LungmaskR231

    if name == "lungmask":
        return LungmaskR231(weights=weights, allow_download=allow_download)
    if name == "classical":
        return ClassicalLungSegmenter()
    raise ValueError(f"lung_segmenter must be 'lungmask' or 'classical', got {name!r}")


def vessel_segmenter(name: str = "totalsegmentator", weights_dir: Optional[str] = None, lung=None, device: str = "cpu"):
    """``"totalsegmentator"`` (the paper's, lung_vessels) or ``"frangi"`` (offline fallback, inside
    the lungs found by ``lung``)."""
    from duolift_bundle.metrics.anatomy import FrangiVesselSegmenter, TotalSegmentatorVessels

    if name == "totalsegmentator":
        return TotalSegmentatorVessels(weights_dir=weights_dir, device=device)
    if name == "frangi":
        return FrangiVesselSegmenter(lung)
    raise ValueError(f"vessel_segmenter must be 'totalsegmentator' or 'frangi', got {name!r}")


class MeanVolume(torch.nn.Module):
    """The trivial baseline of the model card: whatever the X-rays, predict the voxel-wise mean of
    the training CTs. ``(B, V, H, W) -> (B, 1, D, H, W)``. A reconstruction network that does not
    beat it has learnt nothing case-specific. Evaluate it through ``evaluate.yaml`` (the same
    metric code as the model) with ``configs/baseline_mean.yaml``."""

    def __init__(self, mean: torch.Tensor) -> None:
        super().__init__()
        if mean.ndim != 4 or mean.shape[0] != 1:
            raise ValueError(f"the mean volume must be (1, D, H, W), got {tuple(mean.shape)}")
        self.register_buffer("mean", mean.float())

    @classmethod
    def from_datalist(cls, datalist: str, split: str = "training", size: Optional[int] = None) -> "MeanVolume":
        """Average the ``ct`` volumes of ``split`` of a prepared ``datalist.json`` (checked to be
        ``size``^3 when given)."""
        import nibabel as nib

        from duolift_bundle.data.datasets import load_datalist

        items = load_datalist(datalist, split)
        if not items:
            raise ValueError(f"{datalist}: no '{split}' case to average")
        total = None
        for item in items:
            vol = np.asarray(nib.load(item[CT_KEY]).dataobj, dtype=np.float64)
            if size is not None and vol.shape != (size,) * 3:
                raise ValueError(f"{item[CT_KEY]}: CT of shape {vol.shape}, expected {(size,) * 3}")
            total = vol if total is None else total + vol
        return cls(torch.from_numpy(total / len(items))[None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mean[None].expand(x.shape[0], *self.mean.shape).to(x.dtype)


class ImageMetricsd(MapTransform):
    """Add ``metrics`` = {psnr_2d, psnr_3d, ssim_2d, ssim_3d, mae[, lpips]} comparing ``pred_key``
    with ``target_key``. ``mode="x2ct"`` reproduces X2CT-GAN's metric code (PSNR +4.29 dB, 7x7
    uniform SSIM(2D)); ``lpips`` is a :class:`~duolift_bundle.metrics.perceptual.SliceLPIPS` or None."""

    def __init__(self, pred_key: str = PRED_KEY, target_key: str = CT_KEY, lpips=None, mode: str = "paper", axes: Sequence[int] = (0, 1, 2)) -> None:
        super().__init__(keys=[pred_key, target_key])
        if mode not in ("paper", "x2ct"):
            raise ValueError(f"metric mode must be 'paper' or 'x2ct', got {mode!r}")
        self.pred_key, self.target_key = pred_key, target_key
        self.lpips = lpips
        self.mode = mode
        self.axes = tuple(axes)

    def __call__(self, data: Mapping[str, Any]) -> dict:
        d = dict(data)
        p, t = _volume(d[self.pred_key]), _volume(d[self.target_key])
        row = dict(d.get("metrics", {}))
        row.update(
            psnr_2d=im.psnr_2d(p, t, self.axes, mode=self.mode),
            psnr_3d=im.psnr_3d(p, t, mode=self.mode),
            ssim_2d=im.ssim_2d(p, t, self.axes, mode=self.mode),
            ssim_3d=im.ssim_3d(p, t),
            mae=im.mae(p, t),
        )
        if self.lpips is not None:
            row["lpips"] = self.lpips(p, t)
        d["metrics"] = row
        return d


class AnatomicalDiced(MapTransform):
    """Add ``dice_lung`` / ``dice_vessel`` (and the segmenters' names) to ``metrics``: both volumes
    are converted to HU and segmented by ``lung`` and ``vessel``; ``spacing`` in mm."""

    def __init__(self, lung, vessel, pred_key: str = PRED_KEY, target_key: str = CT_KEY, spacing: Sequence[float] = (2.5, 2.5, 2.5)) -> None:
        super().__init__(keys=[pred_key, target_key])
        self.lung, self.vessel = lung, vessel
        self.pred_key, self.target_key = pred_key, target_key
        self.spacing = tuple(float(s) for s in spacing)

    def __call__(self, data: Mapping[str, Any]) -> dict:
        from duolift_bundle.metrics.anatomy import anatomical_dice

        d = dict(data)
        p, t = unit_to_hu(_volume(d[self.pred_key])), unit_to_hu(_volume(d[self.target_key]))
        row = dict(d.get("metrics", {}))
        row.update(anatomical_dice(p, t, self.spacing, self.lung, self.vessel))
        d["metrics"] = row
        return d


def _items(engine: Engine) -> list[dict]:
    outputs = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
    batches = engine.state.batch if isinstance(engine.state.batch, list) else [engine.state.batch]
    return [{**dict(b), **dict(o)} for b, o in zip(batches, outputs)]


class MetricsReport:
    """Collect every case's ``metrics`` and write, when the run completes, ``metrics.csv``,
    ``summary.json`` (mean, std, n per metric; the segmenters and metric mode used) and
    ``table.md`` (one row "method: mean +- std" per metric column, as the paper's tables)."""

    def __init__(self, output_dir: str, method: str = "DuoLift", mode: str = "paper") -> None:
        self.output_dir = os.fspath(output_dir)
        self.method = method
        self.mode = mode
        self.rows: list[dict] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda e: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _collect(self, engine: Engine) -> None:
        for item in _items(engine):
            row = {"case": str(item.get("case", len(self.rows))), **item.get("metrics", {})}
            self.rows.append(row)
            shown = " ".join(f"{k}={row[k]:.4f}" for k in METRIC_COLUMNS if k in row)
            logger.info("%s: %s", row["case"], shown)

    def summary(self) -> dict:
        out: dict[str, Any] = {"method": self.method, "metric_mode": self.mode, "n_cases": len(self.rows), "metrics": {}}
        for key in METRIC_COLUMNS:
            values = [float(r[key]) for r in self.rows if key in r]
            if values:
                out["metrics"][key] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}
        for key in ("lung_segmenter", "vessel_segmenter"):
            names = sorted({r[key] for r in self.rows if key in r})
            if names:
                out[key] = names[0] if len(names) == 1 else names
        return out

    def markdown(self, summary: dict) -> str:
        cols = [k for k in METRIC_COLUMNS if k in summary["metrics"]]
        head = "| method | " + " | ".join(METRIC_COLUMNS[k][0] + (" ↑" if METRIC_COLUMNS[k][1] else " ↓") for k in cols) + " |"
        sep = "|---|" + "---|" * len(cols)
        cells = []
        for k in cols:
            m = summary["metrics"][k]
            digits = 2 if k.startswith("psnr") else 4
            cells.append(f"{m['mean']:.{digits}f} ± {m['std']:.{digits}f}")
        row = f"| {self.method} | " + " | ".join(cells) + " |"
        notes = [f"n = {summary['n_cases']} cases; metric mode: {summary['metric_mode']}"]
        for key in ("lung_segmenter", "vessel_segmenter"):
            if key in summary:
                notes.append(f"{key.replace('_', ' ')}: {summary[key]}")
        return "\n".join([head, sep, row, "", "; ".join(notes), ""])

    def _write(self, engine: Engine) -> None:
        os.makedirs(self.output_dir, exist_ok=True)
        keys = ["case"] + [k for k in (*METRIC_COLUMNS, "lung_segmenter", "vessel_segmenter") if any(k in r for r in self.rows)]
        with atomic_path(os.path.join(self.output_dir, "metrics.csv")) as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(self.rows)
        summary = self.summary()
        write_json(os.path.join(self.output_dir, "summary.json"), summary)
        with atomic_path(os.path.join(self.output_dir, "table.md")) as tmp:
            with open(tmp, "w") as f:
                f.write(self.markdown(summary))
        logger.info("evaluation of %d case(s) written to %s (metrics.csv, summary.json, table.md)", len(self.rows), self.output_dir)


class FigureWriter:
    """Write ``figures/<case>.png`` (target, reconstruction, |difference| in three planes, as the
    paper's Figure 2) for the first ``n_cases`` cases."""

    def __init__(self, output_dir: str, n_cases: int = 3, name: str = "DuoLift") -> None:
        self.output_dir = os.path.join(os.fspath(output_dir), "figures")
        self.n_cases = n_cases
        self.name = name
        self.written: list[str] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        from duolift_bundle.viz import comparison_figure

        for item in _items(engine):
            if len(self.written) >= self.n_cases:
                return
            case = str(item.get("case", len(self.written)))
            title = case
            if "metrics" in item and "psnr_3d" in item["metrics"]:
                title += f"  PSNR(3D) {item['metrics']['psnr_3d']:.2f} dB, SSIM(3D) {item['metrics']['ssim_3d']:.3f}"
            path = comparison_figure(_volume(item[CT_KEY]), {self.name: _volume(item[PRED_KEY])}, os.path.join(self.output_dir, f"{case}.png"), title=title)
            self.written.append(path)
