"""Ignite handlers that report a run: the evaluation's metric tables and figures, the inference
summary. MONAI's ``MetricsSaver`` writes per-case CSVs and summary statistics; :class:`MetricsReport`
is kept because it also writes the paper's table layout (``table.md``) and records which
segmenters and metric mode produced the numbers, so a fallback number is never mistaken for the
paper's."""

from __future__ import annotations

import csv
import logging
import os
from typing import Any

import numpy as np
from ignite.engine import Engine, Events

from duolift_bundle.constants import CT_KEY, PRED_KEY
from duolift_bundle.io_utils import atomic_path, write_json

__all__ = ["METRIC_COLUMNS", "MetricsReport", "FigureWriter", "InferenceSummary", "engine_items"]

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


def engine_items(engine: Engine) -> list[dict]:
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
        for item in engine_items(engine):
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

        for item in engine_items(engine):
            if len(self.written) >= self.n_cases:
                return
            case = str(item.get("case", len(self.written)))
            title = case
            if "metrics" in item and "psnr_3d" in item["metrics"]:
                title += f"  PSNR(3D) {item['metrics']['psnr_3d']:.2f} dB, SSIM(3D) {item['metrics']['ssim_3d']:.3f}"
            path = comparison_figure(item[CT_KEY], {self.name: item[PRED_KEY]}, os.path.join(self.output_dir, f"{case}.png"), title=title)
            self.written.append(path)


class InferenceSummary:
    """Ignite handler: a progress bar, a log line per case (files written, projection
    consistency) and ``<output_dir>/summary.json`` when the run completes."""

    def __init__(self, output_dir: str, progress: bool = True) -> None:
        self.output_dir = os.fspath(output_dir)
        self.progress = progress
        self.rows: list[dict] = []
        self._bar = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._case)
        engine.add_event_handler(Events.COMPLETED, self._done)

    def _start(self, engine: Engine) -> None:
        self.rows = []
        if self.progress:
            from tqdm import tqdm

            self._bar = tqdm(total=engine.state.epoch_length, desc="reconstructing", unit="case")

    def _case(self, engine: Engine) -> None:
        merged_items = engine_items(engine)
        for merged in merged_items:
            row = {"case": merged.get("case"), "kind": merged.get("kind"), "source": merged.get("source"), "files": merged.get("written", [])}
            row.update(merged.get("consistency", {}))
            self.rows.append(row)
            scores = " ".join(f"{k}={v}" for k, v in merged.get("consistency", {}).items())
            logger.info("%s (%s): wrote %s; projection consistency %s", row["case"], row["kind"], ", ".join(row["files"]), scores)
        if self._bar is not None:
            self._bar.update(len(merged_items))

    def _done(self, engine: Engine) -> None:
        if self._bar is not None:
            self._bar.close()
        write_json(os.path.join(self.output_dir, "summary.json"), {"cases": self.rows})
        logger.info("%d case(s) reconstructed into %s", len(self.rows), self.output_dir)
