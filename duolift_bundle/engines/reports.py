"""Ignite handlers that report a run: the evaluation's metric tables and figures, the inference
summary. MONAI's ``MetricsSaver`` writes per-case CSVs and summary statistics; :class:`MetricsReport`
is kept because it also writes the paper's table layout (``table.md``) and records which
segmenters and metric mode produced the numbers, so a fallback number is never mistaken for the
paper's."""

from __future__ import annotations

import csv
import json
import logging
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
from duolift_bundle.constants import CT_KEY, FAILED_NAME, PRED_KEY
from duolift_bundle.datasets.origin import ORIGINS, case_origin
from duolift_bundle.io_utils import atomic_path, write_case_list, write_json
from ignite.engine import Engine, Events

__all__ = [
    "METRIC_COLUMNS",
    "MetricsReport",
    "FigureWriter",
    "InferenceSummary",
    "engine_items",
    "markdown_table",
    "read_case_metrics",
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


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A markdown table (no trailing newline): ``header`` cells, a rule, one line per row; every
    report of the bundle and its scripts writes its tables through it."""
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def read_case_metrics(output_dir: str | os.PathLike, digits: int | None = None) -> dict[str, dict[str, float]]:
    """``{case: {metric: value}}`` of the ``metrics.csv`` a :class:`MetricsReport` wrote in
    ``output_dir`` (numeric columns only; ``digits``: rounded). The records of the shipped models
    read their sample metrics through it."""
    with open(os.path.join(os.fspath(output_dir), "metrics.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    out = {}
    for row in rows:
        values = {}
        for key, text in row.items():
            if key in ("case", "origin") or not text or key.endswith("segmenter"):
                continue
            values[key] = float(text) if digits is None else round(float(text), digits)
        out[row["case"]] = values
    return out


def engine_items(engine: Engine) -> list[dict]:
    outputs = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
    batches = engine.state.batch if isinstance(engine.state.batch, list) else [engine.state.batch]
    return [{**dict(b), **dict(o)} for b, o in zip(batches, outputs)]


class MetricsReport:
    """Collect every case's ``metrics`` and write, when the run completes, ``metrics.csv`` (with
    each case's ``origin``, real or synthetic), ``summary.json`` and ``table.md``.

    Real and synthetic cases (:func:`~duolift_bundle.datasets.origin.case_origin`) are never averaged
    together: ``summary.json`` holds ``groups`` ``{origin: {"n_cases", "metrics": {key: {"mean",
    "std", "n"}}}}`` and, only when every case has one origin, the same ``metrics`` at the top
    level; ``table.md`` has one row "method: mean +- std" per origin, as the paper's tables. Both
    record the segmenters and metric mode used, and the failed cases of a
    :class:`~duolift_bundle.engines.case_failures.CaseTolerantEvaluator` (also ``failed.json``)."""

    def __init__(self, output_dir: str, method: str = "DuoLift", mode: str = "paper") -> None:
        self.output_dir = os.fspath(output_dir)
        self.method = method
        self.mode = mode
        self.rows: list[dict] = []
        self.failed: dict[str, str] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda e: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self._write)

    def _collect(self, engine: Engine) -> None:
        for item in engine_items(engine):
            row = {
                "case": str(item.get("case", len(self.rows))),
                "origin": case_origin(item),
                **item.get("metrics", {}),
            }
            self.rows.append(row)
            shown = " ".join(f"{k}={row[k]:.4f}" for k in METRIC_COLUMNS if k in row)
            logger.info("%s (%s): %s", row["case"], row["origin"], shown)

    @staticmethod
    def _stats(rows: list[dict]) -> dict:
        out = {}
        for key in METRIC_COLUMNS:
            values = [float(r[key]) for r in rows if key in r]
            if values:
                out[key] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}
        return out

    def summary(self) -> dict:
        out: dict[str, Any] = {"method": self.method, "metric_mode": self.mode, "n_cases": len(self.rows), "groups": {}}
        for origin in ORIGINS:
            rows = [r for r in self.rows if r["origin"] == origin]
            if rows:
                out["groups"][origin] = {"n_cases": len(rows), "metrics": self._stats(rows)}
        if len(out["groups"]) <= 1:  # one origin: its metrics are every case's
            out["metrics"] = self._stats(self.rows)
        for key in ("lung_segmenter", "vessel_segmenter"):
            names = sorted({r[key] for r in self.rows if key in r})
            if names:
                out[key] = names[0] if len(names) == 1 else names
        out["failed"] = dict(self.failed)
        return out

    def markdown(self, summary: dict) -> str:
        groups = summary["groups"]
        cols = [k for k in METRIC_COLUMNS if any(k in g["metrics"] for g in groups.values())]
        header = ["method", "cases"] + [METRIC_COLUMNS[k][0] + (" ↑" if METRIC_COLUMNS[k][1] else " ↓") for k in cols]
        rows = []
        for origin, group in groups.items():
            cells = []
            for k in cols:
                m = group["metrics"].get(k)
                digits = 2 if k.startswith("psnr") else 4
                cells.append(f"{m['mean']:.{digits}f} ± {m['std']:.{digits}f}" if m else "-")
            rows.append([self.method, f"{origin} (n = {group['n_cases']})", *cells])
        notes = [
            f"n = {summary['n_cases']} cases; real and synthetic cases are reported apart; metric mode: {summary['metric_mode']}"
        ]
        for key in ("lung_segmenter", "vessel_segmenter"):
            if key in summary:
                notes.append(f"{key.replace('_', ' ')}: {summary[key]}")
        if "lpips" not in cols:
            notes.append("LPIPS: not computed (--lpips False or --offline True)")
        if summary.get("failed"):
            notes.append(
                f"{len(summary['failed'])} failed case(s), not in the table: {', '.join(summary['failed'])} ({FAILED_NAME})"
            )
        return "\n".join([markdown_table(header, rows), "", "; ".join(notes), ""])

    def _write(self, engine: Engine) -> None:
        os.makedirs(self.output_dir, exist_ok=True)
        self.failed = dict(getattr(engine, "failed_cases", {}))
        keys = ["case", "origin"] + [
            k for k in (*METRIC_COLUMNS, "lung_segmenter", "vessel_segmenter") if any(k in r for r in self.rows)
        ]
        with atomic_path(os.path.join(self.output_dir, "metrics.csv")) as tmp:
            with open(tmp, "w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=keys, extrasaction="ignore")
                writer.writeheader()
                writer.writerows(self.rows)
        summary = self.summary()
        write_json(os.path.join(self.output_dir, "summary.json"), summary)
        write_case_list(os.path.join(self.output_dir, FAILED_NAME), self.failed)
        with atomic_path(os.path.join(self.output_dir, "table.md")) as tmp:
            with open(tmp, "w") as f:
                f.write(self.markdown(summary))
        failed = f"; {len(self.failed)} failed ({FAILED_NAME})" if self.failed else ""
        logger.info(
            "evaluation of %d case(s) written to %s (metrics.csv, summary.json, table.md)%s",
            len(self.rows),
            self.output_dir,
            failed,
        )


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
            path = comparison_figure(
                item[CT_KEY], {self.name: item[PRED_KEY]}, os.path.join(self.output_dir, f"{case}.png"), title=title
            )
            self.written.append(path)


class InferenceSummary:
    """Ignite handler: a progress bar, a log line per case (files written, projection
    consistency and the quality report of
    :class:`~duolift_bundle.transforms.consistency.ProjectionConsistencyd`; a warning line per
    note on its inputs, such as an estimated pixel size) and, when the run completes,
    ``<output_dir>/summary.json`` ``{"cases": [...], "failed": {case: reason}}`` and
    ``failed.json`` (the failures a
    :class:`~duolift_bundle.engines.case_failures.CaseTolerantEvaluator` recorded)."""

    def __init__(self, output_dir: str, progress: bool = True) -> None:
        self.output_dir = os.fspath(output_dir)
        self.progress = progress
        self.rows: list[dict] = []
        self._bar = None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._case)
        engine.add_event_handler(Events.COMPLETED, self._done)
        engine.add_event_handler(Events.EXCEPTION_RAISED, self._abort)

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()  # now, or tqdm redraws it at exit, after the error message
            self._bar = None

    def _abort(self, engine: Engine, exc: BaseException) -> None:
        self._close_bar()
        raise exc

    def _start(self, engine: Engine) -> None:
        self.rows = []
        if self.progress:
            from tqdm import tqdm

            self._bar = tqdm(total=engine.state.epoch_length, desc="reconstructing", unit="case")

    def _case(self, engine: Engine) -> None:
        merged_items = engine_items(engine)
        for merged in merged_items:
            row = {
                "case": merged.get("case"),
                "kind": merged.get("kind"),
                "source": merged.get("source"),
                "files": merged.get("written", []),
            }
            row.update(merged.get("consistency", {}))
            if merged.get("refinement"):
                row["refinement"] = merged["refinement"]
            inputs = json.loads(merged["xray_info"]) if merged.get("xray_info") else {}
            warnings = [f"{view}: {note}" for view, info in inputs.items() for note in info.get("notes", [])]
            warnings += list(merged.get("quality_warnings", []))
            row.update(inputs=inputs, warnings=warnings)
            self.rows.append(row)
            scores = " ".join(f"{k}={v}" for k, v in merged.get("consistency", {}).items())
            logger.info(
                "%s (%s): wrote %s; projection consistency %s",
                row["case"],
                row["kind"],
                ", ".join(row["files"]),
                scores,
            )
            for warning in warnings:
                logger.warning("%s: %s", row["case"], warning)
        if self._bar is not None:
            self._bar.update(1)  # total: iterations (engine.state.epoch_length)

    def _done(self, engine: Engine) -> None:
        self._close_bar()
        failed = dict(getattr(engine, "failed_cases", {}))
        write_json(os.path.join(self.output_dir, "summary.json"), {"cases": self.rows, "failed": failed})
        write_case_list(os.path.join(self.output_dir, FAILED_NAME), failed)
        warned = [f"{row['case']} ({len(row['warnings'])})" for row in self.rows if row["warnings"]]
        logger.info(
            "%d case(s) reconstructed into %s%s%s",
            len(self.rows),
            self.output_dir,
            f"; {len(failed)} failed ({FAILED_NAME})" if failed else "",
            f"; with warnings (summary.json): {', '.join(warned)}" if warned else "",
        )
