"""Equal-budget comparison of training recipes on the leave-one-out folds of the real CTs.

The runner behind ``scripts/compare_recipes.py`` (and the paper's ablation study: Table 4's conv
lift and single branch are recipes too). A :class:`ComparisonSpec` (``configs/compare.yaml``)
names

- ``recipes``: overrides of the training configs (``configs/train.yaml`` + ``train_real.yaml``),
  one training run per recipe, fold and seed, each with the same ``--time_budget_s``;
- ``refinements``: settings of the projection-consistent refinement
  (:mod:`duolift_bundle.transforms.refine`) every trained model is evaluated with;
- the data: the prepared real CTs (``real``), optional phantoms, the folds (held-out cases).

Stages, each resumable (a finished run or score is not redone; a run with full checkpoints is
continued with ``--resume``):

1. ``data``: each fold's training datalist (the other real CTs, ``real_repeats`` times, plus the
   phantoms; the held-out case validates) under ``<out>/data/``;
2. ``train``: the runs, ``parallel`` at a time, ``threads`` each, in ``<out>/runs/<recipe>_<fold>_s<seed>``;
3. ``evaluate``: the held-out CT of each fold reconstructed from its DRRs by each run's last-epoch
   weights (never the best-validated ones: the held-out case chose nothing), refined by each
   refinement, scored with the evaluation's metric code (:mod:`duolift_bundle.metrics.image`:
   PSNR / SSIM in 2D and 3D) plus bone Dice (target and reconstruction above ``bone_hu``), next
   to the baselines (mean of the other real CTs; mean of the fold's training CTs, phantoms
   included). Writes ``<out>/results.json`` and ``<out>/table.md``: per fold, and mean +- std
   over the deciding folds (every fold but ``held_out``, which is reported and never decides).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import platform
import re
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import nibabel as nib
import numpy as np
import torch
from duolift_bundle.constants import view_names
from duolift_bundle.datasets.routes import load_datalist
from duolift_bundle.datasets.splits import SPLITS
from duolift_bundle.engines.reports import markdown_table
from duolift_bundle.errors import ConfigError, InputFileError
from duolift_bundle.geometry import CTProtocol, Protocol
from duolift_bundle.io_utils import atomic_path, read_json, write_json
from duolift_bundle.losses import BONE_HU

__all__ = ["ComparisonSpec", "Run", "plan_runs", "prepare_folds", "train_runs", "evaluate_runs", "format_table"]

logger = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
METRIC_NAMES = ("psnr_3d", "ssim_3d", "psnr_2d", "ssim_2d", "bone_dice")
BASELINES = ("mean of the other real CTs", "mean of the fold's training CTs")


@dataclass(frozen=True)
class ComparisonSpec:
    """What to compare, on what, under which budget (``configs/compare.yaml``; see the module docstring).

    Args:
        recipes: name -> training-config overrides (``views``, ``width``, ``lift`` ...).
        refinements: name -> ``{"refine_steps", "refine_weight"[, "refine_lr"]}``.
        real: the prepared real CTs' ``datalist.json`` (at ``size``).
        phantoms: a prepared phantom datalist, or None.
        folds: held-out case names (unique parts of the case ids).
        held_out: the fold reported but never used to decide (normal001).
        seeds: training seeds.
        budget_s: training seconds per run (``--time_budget_s``), equal for every recipe.
        parallel, threads: runs at once and threads per run.
        real_repeats: listings of each real training CT per epoch.
        size: volume size of the runs (64, or 128 on a GPU).
        train_configs: the training configs merged (relative to the bundle root).
        train_args: overrides every run gets (epochs, learning-rate schedule, device ...).
        bone_hu: the bone threshold of the bone Dice.
        models: trained weights scored without training, name -> ``{"weights", "views", "width",
            "lift", "folds"}`` (e.g. the shipped models on the folds they never saw); ``folds``
            lists where they may be scored (held out from their training).
    """

    recipes: Mapping[str, Mapping[str, Any]]
    refinements: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: {"none": {"refine_steps": 0}})
    real: str = "data/real64/datalist.json"
    phantoms: str | None = None
    folds: Sequence[str] = ("normal001", "P002", "cap002", "Lung_Dx-A0001", "Lung_Dx-A0002")
    held_out: str = "normal001"
    seeds: Sequence[int] = (0,)
    budget_s: float = 600.0
    parallel: int = 2
    threads: int = 1
    real_repeats: int = 4
    size: int = 64
    train_configs: Sequence[str] = ("configs/train.yaml", "configs/train_real.yaml")
    train_args: Mapping[str, Any] = field(default_factory=dict)
    bone_hu: float = BONE_HU
    models: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)

    _STRUCTURED = ("recipes", "refinements", "folds", "seeds", "train_configs", "train_args", "models")

    def __post_init__(self) -> None:
        if not self.recipes and not self.models:
            raise ConfigError("a comparison needs at least one recipe or model")
        for name, overrides in {**self.recipes, **self.models}.items():
            try:
                view_names(int(overrides.get("views", 2)))
            except ConfigError as err:
                raise ConfigError(f"recipe {name}: {err}") from None
        for name, model in self.models.items():
            if "weights" not in model or not model.get("folds"):
                raise ConfigError(f"model {name}: needs its weights file and the folds it may be scored on")
        if self.budget_s <= 0 or self.parallel < 1 or self.threads < 1:
            raise ConfigError(f"budget_s, parallel and threads must be positive, got {self}")

    @classmethod
    def from_file(cls, path: str | os.PathLike, **overrides: Any) -> "ComparisonSpec":
        """Read a YAML spec; keyword arguments (the command line's ``--key value``) win."""
        import yaml

        with open(path) as f:
            doc = yaml.safe_load(f) or {}
        unknown = sorted((set(doc) | set(overrides)) - set(cls.__dataclass_fields__))
        if unknown:
            raise InputFileError(
                f"{path}: unknown setting(s) {unknown}; the settings are {sorted(cls.__dataclass_fields__)}"
            )
        for key, value in overrides.items():
            if isinstance(value, str) and key in cls._STRUCTURED:  # "[P002, Lung_Dx-A0001]" from a shell
                value = yaml.safe_load(value)
            if value is not None:
                doc[key] = value
        return cls(**doc)


@dataclass(frozen=True)
class Run:
    """One training run: a recipe on a fold with a seed, in ``folder``."""

    recipe: str
    fold: str
    seed: int
    folder: str

    @property
    def checkpoints(self) -> str:
        return os.path.join(self.folder, "checkpoints")


def plan_runs(spec: ComparisonSpec, out: str | os.PathLike) -> list[Run]:
    """Every (recipe, fold, seed) run, folds interleaved so that a partial comparison covers them."""
    runs = []
    for seed, fold, recipe in itertools.product(spec.seeds, spec.folds, spec.recipes):
        runs.append(Run(recipe, fold, int(seed), os.path.join(os.fspath(out), "runs", f"{recipe}_{fold}_s{seed}")))
    return runs


def _fold_datalist(out: str | os.PathLike, fold: str) -> str:
    return os.path.join(os.fspath(out), "data", fold, "datalist.json")


def prepare_folds(spec: ComparisonSpec, out: str | os.PathLike) -> dict[str, str]:
    """Write each fold's training datalist (stage 1); returns fold -> datalist path."""
    from duolift_bundle.datasets.training_sets import compose_datalist

    paths = {}
    for fold in spec.folds:
        path = _fold_datalist(out, fold)
        compose_datalist(
            path, _abs(spec.real), [fold], _abs(spec.phantoms) if spec.phantoms else None, spec.real_repeats
        )
        paths[fold] = path
    return paths


def _abs(path: str) -> str:
    return path if os.path.isabs(path) else str(ROOT / path)


def _override_args(overrides: Mapping[str, Any]) -> list[str]:
    args = []
    for key, value in overrides.items():
        text = "$None" if value is None else (json.dumps(value) if isinstance(value, (list, dict)) else str(value))
        args += [f"--{key}", text]
    return args


def training_command(spec: ComparisonSpec, run: Run, out: str | os.PathLike, resume: bool) -> list[str]:
    """The ``monai.bundle run training`` command of ``run``."""
    configs = "[" + ",".join(f"'{_abs(c)}'" for c in spec.train_configs) + "]"
    args = {
        "bundle_root": str(ROOT),
        "dataset_dir": os.path.dirname(os.path.abspath(_fold_datalist(out, run.fold))),
        "output_dir": os.path.abspath(run.folder),
        "size": spec.size,
        "seed": run.seed,
        "time_budget_s": spec.budget_s,
        **dict(spec.train_args),
        **dict(spec.recipes[run.recipe]),
    }
    if resume:
        args["resume"] = True
    return [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", configs, *_override_args(args)]


def _finished(run: Run) -> bool:
    return os.path.exists(os.path.join(run.folder, "finished.json"))


def train_runs(spec: ComparisonSpec, out: str | os.PathLike, runs: Sequence[Run]) -> dict[str, int]:
    """Stage 2: train every unfinished run, ``spec.parallel`` at a time; returns run -> exit code.

    A run is finished when its process exited 0 (``finished.json`` records the command, its
    seconds and exit code); one with full checkpoints and no ``finished.json`` is resumed.
    """
    todo = [r for r in runs if not _finished(r)]
    codes: dict[str, int] = {}
    active: list[tuple[Run, subprocess.Popen, float, Any, list[str]]] = []
    env = {**os.environ, "OMP_NUM_THREADS": str(spec.threads), "MKL_NUM_THREADS": str(spec.threads)}
    while todo or active:
        while todo and len(active) < spec.parallel:
            run = todo.pop(0)
            os.makedirs(run.folder, exist_ok=True)
            resume = any(Path(run.checkpoints).glob("checkpoint_epoch=*.pt"))
            cmd = training_command(spec, run, out, resume)
            log = open(os.path.join(run.folder, "log"), "a")
            logger.info("training %s (%s)", run.folder, "resumed" if resume else "new")
            active.append(
                (run, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), time.time(), log, cmd)
            )
        time.sleep(2.0)
        for item in list(active):
            run, proc, t0, log, cmd = item
            if proc.poll() is None:
                continue
            log.close()
            active.remove(item)
            codes[run.folder] = proc.returncode
            if proc.returncode == 0:
                write_json(
                    os.path.join(run.folder, "finished.json"),
                    {"command": cmd, "seconds": round(time.time() - t0, 1), "returncode": 0},
                )
            else:
                logger.error("run %s exited %d (see %s/log)", run.folder, proc.returncode, run.folder)
    return codes


def _read(path: str) -> np.ndarray:
    return np.asarray(nib.load(path).dataobj, dtype=np.float32)


def score(pred: np.ndarray, target: np.ndarray, bone_hu: float, ct: CTProtocol) -> dict[str, float]:
    """The comparison's metrics of one ``(D, H, W)`` reconstruction in [0, 1] against its target
    (bone: above ``bone_hu`` on the HU window of ``ct``)."""
    from duolift_bundle.metrics.anatomy import dice
    from duolift_bundle.metrics.image import psnr_2d, psnr_3d, ssim_2d, ssim_3d

    pred = np.clip(pred, 0.0, 1.0)
    level = ct.to_unit(bone_hu)
    return {
        "psnr_3d": round(float(psnr_3d(pred, target)), 3),
        "ssim_3d": round(float(ssim_3d(pred, target)), 4),
        "psnr_2d": round(float(psnr_2d(pred, target)), 3),
        "ssim_2d": round(float(ssim_2d(pred, target)), 4),
        "bone_dice": round(dice(pred > level, target > level), 4),
    }


def _network(spec: ComparisonSpec, run: Run, weights: str, device: torch.device) -> torch.nn.Module:
    """The run's generator (inference.yaml's network_def with the recipe's settings) with ``weights``."""
    from duolift_bundle.networks import load_generator
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "inference.yaml"))
    recipe = {**spec.models, **spec.recipes}[run.recipe]
    settings = {k: recipe[k] for k in ("views", "width", "lift", "dual_branch") if k in recipe}
    parser.update({"bundle_root": str(ROOT), "size": spec.size, **settings})
    return load_generator(parser.get_parsed_content("network_def"), weights, device).eval()


def _case_files(spec: ComparisonSpec, items: Sequence[dict]) -> dict[str, dict]:
    """Each fold's item among the real CTs (exactly one case id containing the fold's name)."""
    found = {}
    for fold in spec.folds:
        hits = [it for it in items if fold in it["case"]]
        if len(hits) != 1:
            raise InputFileError(f"{spec.real}: fold {fold!r} matches {len(hits)} cases (needs exactly one)")
        found[fold] = hits[0]
    return found


def evaluate_runs(spec: ComparisonSpec, out: str | os.PathLike, runs: Sequence[Run]) -> dict:
    """Stage 3: score every trained run with every refinement and the baselines (on the GPU when
    there is one); returns the results."""
    from duolift_bundle.engines.resume import latest_checkpoint
    from duolift_bundle.networks import MeanVolume
    from duolift_bundle.transforms.drr import DRRProjector
    from duolift_bundle.transforms.refine import refine_volume

    real_items = [it for split in SPLITS for it in load_datalist(_abs(spec.real), split)]
    cases = _case_files(spec, real_items)
    targets = {fold: _read(item["ct"]) for fold, item in cases.items()}  # read once, scored many times
    protocol = Protocol.build(size=spec.size)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results: dict[str, Any] = {"folds": {}, "runs": {}}
    for fold, item in cases.items():
        target = targets[fold]
        others = [it["ct"] for it in real_items if it["case"] != item["case"]]
        fold_rows = {
            BASELINES[0]: score(MeanVolume.from_files(others).mean[0].numpy(), target, spec.bone_hu, protocol.ct)
        }
        training = load_datalist(_fold_datalist(out, fold), "training")
        train_cts = list(dict.fromkeys(it["ct"] for it in training))
        fold_rows[BASELINES[1]] = score(
            MeanVolume.from_files(train_cts).mean[0].numpy(), target, spec.bone_hu, protocol.ct
        )
        results["folds"][fold] = {"case": item["case"], "rows": fold_rows}
    xrays = {
        f: torch.from_numpy(np.stack([_read(it["xray_frontal"]), _read(it["xray_lateral"])]))[None]
        for f, it in cases.items()
    }
    fixed = [
        (Run(name, fold, 0, os.fspath(_abs(m["weights"]))), _abs(m["weights"]))
        for name, m in spec.models.items()
        for fold in m["folds"]
        if fold in cases
    ]
    for run, weights in [(r, None) for r in runs] + fixed:
        if weights is None:
            try:
                weights = latest_checkpoint(run.checkpoints)
            except FileNotFoundError:
                logger.warning("no checkpoint in %s: not scored", run.checkpoints)
                continue
        views = int({**spec.models, **spec.recipes}[run.recipe].get("views", 2))
        net = _network(spec, run, weights, device)
        x = xrays[run.fold][:, :views].to(device)
        with torch.no_grad():
            pred = net(x)
        projector = DRRProjector(protocol, view_names(views)).to(device)
        target = targets[run.fold]
        name = os.path.basename(weights)  # checkpoint_epoch=NNNN.pt of a run; a model file has none
        epochs = int(name.split("=")[1].split(".")[0]) if name.startswith("checkpoint_epoch=") else None
        log = Path(run.folder) / "log"
        curve = re.findall(r"Epoch\[(\d+)\] Metrics -- val_psnr: ([\d.]+)", log.read_text()) if log.is_file() else []
        finished = Path(run.folder) / "finished.json"
        results["runs"][f"{run.recipe}/{run.fold}/s{run.seed}"] = {
            "validation_psnr": [[int(e), float(v)] for e, v in curve],
            "training": read_json(finished) if finished.is_file() else None,
            "recipe": run.recipe,
            "fold": run.fold,
            "seed": run.seed,
            "weights": weights,
            "epochs": epochs,
        }
        for ref_name, ref in spec.refinements.items():
            t0 = time.perf_counter()
            vol = refine_volume(
                pred, x, projector, int(ref.get("refine_steps", 0)), float(ref.get("refine_weight", 1.0)),
                float(ref.get("refine_lr", 0.01)),
            )  # fmt: skip
            row = score(vol[0, 0].cpu().numpy(), target, spec.bone_hu, protocol.ct)
            row["refine_seconds"] = round(time.perf_counter() - t0, 2)
            name = f"{run.recipe}, refine {ref_name}"
            results["folds"][run.fold]["rows"].setdefault(name, {"seeds": {}})["seeds"][str(run.seed)] = row
    return results


def _row_value(row: dict, metric: str) -> float:
    """A row's metric, averaged over its seeds when it has several."""
    if "seeds" in row:
        values = [s[metric] for s in row["seeds"].values()]
        return float(np.mean(values))
    return float(row[metric])


def summarise(spec: ComparisonSpec, results: dict) -> dict:
    """Mean +- std over the deciding folds (all but ``held_out``) where each row was scored (a
    fixed model only where it was held out of training; ``folds`` lists them)."""
    deciding = [f for f in results["folds"] if f != spec.held_out]
    names = list(dict.fromkeys(n for f in results["folds"].values() for n in f["rows"]))
    summary = {}
    for name in names:
        present = [f for f in deciding if name in results["folds"][f]["rows"]]
        if not present:
            continue
        summary[name] = {"folds": present}
        for metric in METRIC_NAMES:
            values = [_row_value(results["folds"][f]["rows"][name], metric) for f in present]
            summary[name][metric] = [round(float(np.nanmean(values)), 4), round(float(np.nanstd(values)), 4)]
        gains = [
            _row_value(results["folds"][f]["rows"][name], "psnr_3d")
            - _row_value(results["folds"][f]["rows"][BASELINES[0]], "psnr_3d")
            for f in present
        ]
        summary[name]["psnr_3d_gain_min"] = round(float(np.min(gains)), 3)
    return {"deciding_folds": deciding, "rows": summary}


def format_table(spec: ComparisonSpec, results: dict) -> str:
    """Markdown: the mean +- std table over the deciding folds, then PSNR(3D) per fold."""
    summary = results["summary"]
    if spec.recipes:
        budget = (
            f"Budget {spec.budget_s:g} s of training per run, {spec.threads} thread(s), {spec.parallel} at once; "
            f"seeds {list(spec.seeds)}"
        )
    else:
        budget = "Trained models scored only (no training)"
    header = ["row", "folds", "PSNR(3D)", "SSIM(3D)", "PSNR(2D)", "SSIM(2D)", "bone Dice"]
    header.append("min gain over other-CT mean (dB)")
    rows = []
    for name, r in summary["rows"].items():
        cells = [
            f"{r[m][0]:.3f} ± {r[m][1]:.3f}" if "ssim" in m or "dice" in m else f"{r[m][0]:.2f} ± {r[m][1]:.2f}"
            for m in METRIC_NAMES
        ]
        rows.append([name, len(r["folds"]), *cells, f"{r['psnr_3d_gain_min']:+.2f}"])
    folds = list(results["folds"])
    names = list(dict.fromkeys(n for f in results["folds"].values() for n in f["rows"]))
    per_fold = []
    for name in names:
        cells = []
        for f in folds:
            row = results["folds"][f]["rows"].get(name)
            cells.append(f"{_row_value(row, 'psnr_3d'):.2f}" if row else "-")
        per_fold.append([name, *cells])
    lines = [
        f"Deciding folds: {', '.join(summary['deciding_folds'])} (held out, never deciding: {spec.held_out}). "
        f"{budget}; {spec.size}^3.",
        "",
        markdown_table(header, rows),
        "",
        "PSNR(3D) per fold (dB):",
        "",
        markdown_table(["row", *folds], per_fold),
    ]
    return "\n".join(lines) + "\n"


def hardware() -> dict:
    """The machine the comparison ran on (CPU model and flags of note, threads, GPU)."""
    info: dict[str, Any] = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__}
    try:
        text = Path("/proc/cpuinfo").read_text()
        model = next((ln.split(":", 1)[1].strip() for ln in text.splitlines() if ln.startswith("model name")), "")
        flags = next((ln.split(":", 1)[1].split() for ln in text.splitlines() if ln.startswith("flags")), [])
        info["cpu"] = model
        info["cpu_flags"] = sorted(f for f in flags if f.startswith(("avx", "amx", "fma")))
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_results(spec: ComparisonSpec, out: str | os.PathLike, results: dict, command: Sequence[str]) -> str:
    """Add the summary and the provenance, write ``results.json`` and ``table.md``; returns the table."""
    results["summary"] = summarise(spec, results)
    results["spec"] = json.loads(json.dumps(asdict(spec)))
    results["command"] = list(command)
    results["hardware"] = hardware()
    write_json(os.path.join(os.fspath(out), "results.json"), results)
    table = format_table(spec, results)
    with atomic_path(os.path.join(os.fspath(out), "table.md")) as tmp, open(tmp, "w") as f:
        f.write(table)
    return table
