"""Ship the real-chest models and write their provenance (``docs/shipped_models.json``).

Two steps around the quick start (whose sample metrics the record keeps):

    python scripts/record_shipped_models.py export --dv_run runs/real64_dv --sv_run runs/real64_sv
    python scripts/quickstart.py --out quickstart
    python scripts/record_shipped_models.py record --dv_run runs/real64_dv --sv_run runs/real64_sv --sample quickstart

``sample --sample quickstart`` refreshes the sample metrics alone (after an inference default changed).

``export`` copies the generator of each run's last full checkpoint (the last epoch: the held-out
validation case only reports, it does not pick weights) to ``models/model.pt`` (double view) and
``models/model_single_view.pt``, and writes the baselines' mean volumes to ``models/baselines/``;
it refuses to replace a shipped file that differs unless ``--replace True``, and writes the new
hashes into ``models/registry.json``. ``record`` writes the
hashes, the recipe as the configs resolve it, the commands, the validation curves, the
leave-one-out table (``docs/real_ct_loo.json``, from ``scripts/real_ct_report.py``) and the
sample metrics; ``tests/workflows/test_bundle_checks.py`` checks the files against it.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import fire
import torch
from duolift_bundle.engines.handlers import read_validation_curve
from duolift_bundle.engines.reports import read_case_metrics
from duolift_bundle.errors import install_last_line_hook
from duolift_bundle.registry import REGISTRY, load_registry
from duolift_bundle.shipped import ShippedFileError, file_sha256

ROOT = Path(__file__).resolve().parents[1]
RECORD = ROOT / "docs" / "shipped_models.json"
TRAIN_CONFIGS = {
    "double_view": ["configs/train.yaml", "configs/train_real.yaml"],
    "single_view": ["configs/train.yaml", "configs/train_real.yaml", "configs/train_real_single_view.yaml"],
}
#: the shipped models and baselines: their files and inference configs (models/registry.json)
REGISTERED = load_registry(ROOT)
FILES = {key: REGISTERED.models[key].file for key in TRAIN_CONFIGS}
INFER_CONFIGS = {key: list(REGISTERED.models[key].configs) for key in TRAIN_CONFIGS}
BASELINES = {key: spec.file for key, spec in REGISTERED.baselines.items()}


def _register(file: str, digest: str) -> None:
    """Write a shipped file's new hash into the registry (the guard and the checks read it there)."""
    from duolift_bundle.io_utils import read_json, write_json

    doc = read_json(ROOT / REGISTRY)
    for section in ("models", "baselines", "files"):
        for entry in doc.get(section, {}).values():
            if entry["file"] == file:
                entry["sha256"] = digest
    write_json(ROOT / REGISTRY, doc)


SETTING_KEYS = [
    "views",
    "size",
    "width",
    "gan",
    "masked_loss",
    "augment",
    "batch_size",
    "accumulation_steps",
    "g_lr",
    "max_epochs",
    "lr_milestone",
    "seed",
    "init_ckpt",
    "init_strict",
    "datalist",
]
DATA_COMMANDS = [
    "python scripts/prepare_data.py --src ../shared/data/chest-ct-dicom --out data/real64 --size 64",
    "python scripts/make_phantoms.py --out data/phantoms64_n256 --n 256 --size 64 --seed 2000",
    "python scripts/make_training_set.py --out data/real64_normal001_n256/datalist.json --real data/real64/datalist.json "
    '--phantoms data/phantoms64_n256/datalist.json --holdout "[normal001]" --real_repeats 16',
]
#: the GPU runs (scripts/train_real_folds.sh) had a time budget; these are the epochs it came to
STAGE_2 = (
    "python -m monai.bundle run training --config_file \"['configs/train.yaml','configs/train_real.yaml']\" "
    "--init_ckpt runs/real64_dv/checkpoints/checkpoint_epoch=0007.pt --init_strict true --max_epochs 9 --lr_milestone 7 "
    "--output_dir runs/real64_dv_stage2"
)
HARDWARE = (
    "one NVIDIA H200 (torch 2.11, CUDA, AMP), 16 CPU cores; all folds and recipes at once "
    "(stage 1: nine runs sharing the GPU, stage 2: three)"
)


def _write_once(path: Path, data: bytes, replace: bool) -> str:
    from duolift_bundle.io_utils import atomic_path

    if path.exists() and path.read_bytes() != data and not replace:
        raise ShippedFileError(f"{path}: a different shipped file is there; pass --replace True to replace it")
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        Path(tmp).write_bytes(data)
    return file_sha256(path)


def export(
    dv_run: str,
    sv_run: str,
    training_datalist: str = "data/real64_normal001_n256/datalist.json",
    real: str = "data/real64/datalist.json",
    holdout: str = "normal001",
    replace: bool = False,
) -> None:
    """Copy the runs' last generators to models/ and write the baselines' mean volumes."""
    from duolift_bundle.datasets.routes import load_datalist
    from duolift_bundle.datasets.splits import SPLITS
    from duolift_bundle.engines.resume import latest_checkpoint
    from duolift_bundle.networks import MeanVolume

    for key, run in (("double_view", dv_run), ("single_view", sv_run)):
        ckpt = latest_checkpoint(str(Path(run) / "checkpoints"))
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
        # a full checkpoint holds the generator under "generator"; the GPU fold runs came back as
        # bare generators (the wider ones in float16 for the trip): ship float32 either way
        state = {k: (v.float() if v.is_floating_point() else v) for k, v in state.get("generator", state).items()}
        buf = io.BytesIO()
        torch.save(state, buf)
        digest = _write_once(ROOT / FILES[key], buf.getvalue(), replace)
        _register(FILES[key], digest)
        print(f"{FILES[key]}: {digest[:16]}... from {ckpt}")
    real_cts = [it["ct"] for s in SPLITS for it in load_datalist(real, s) if holdout not in it["case"]]
    means = {
        "mean_training_cts": MeanVolume.from_datalist(training_datalist, "training", 64),
        "mean_real_training_cts": MeanVolume.from_files(real_cts, 64),
    }
    for key, volume in means.items():
        path = ROOT / BASELINES[key]
        # compared as volumes, not bytes: an unchanged mean keeps its file (and recorded hash)
        if path.exists() and torch.equal(MeanVolume.from_file(str(path)).mean, volume.mean.float()):
            print(f"{BASELINES[key]}: unchanged")
            continue
        if path.exists() and not replace:
            raise ShippedFileError(f"{path}: a different shipped file is there; pass --replace True to replace it")
        volume.save(str(path))
        _register(BASELINES[key], file_sha256(path))
        print(f"{BASELINES[key]}: {file_sha256(path)[:16]}...")


def _curve(folder: Path) -> dict:
    """A training stage's validation curve (``<folder>/validation_curve.json``, the ValidationCurve
    handler's): its epochs, learning rates, metrics and seconds trained."""
    curve = read_validation_curve(str(folder / "validation_curve.json"))
    return {
        "epochs": max(int(e) for e in curve),
        "validation_case": "normal001 (held out; reported only, the last epoch's weights are shipped)",
        "learning_rates": [v.get("lr") for _, v in sorted(curve.items(), key=lambda kv: int(kv[0]))],
        "validation_curve": {e: {"val_psnr": v["val_psnr"], "val_ssim": v["val_ssim"]} for e, v in curve.items()},
        "wall_seconds": curve[max(curve, key=int)]["seconds"],
    }


XRAY_REFERENCE = "models/xray_reference.json"
XRAY_REFERENCE_COMMAND = (
    "python scripts/xray_reference.py --datalist data/real64/datalist.json "
    "--cases chest-ct-dicom_P002,chest-ct-dicom_cap002 --out models/xray_reference.json"
)


def xray_reference_record() -> dict:
    """Provenance of the reference histogram of ``xray_contrast: histogram`` (the DRRs of the
    shipped models' two real training CTs)."""
    return {"file": XRAY_REFERENCE, "sha256": file_sha256(ROOT / XRAY_REFERENCE), "command": XRAY_REFERENCE_COMMAND}


def record(
    dv_run: str, sv_run: str, sample: str = "quickstart", loo: str = "docs/real_ct_loo.json", out: str | Path = RECORD
) -> None:
    """Write docs/shipped_models.json (see the module docstring)."""
    from duolift_bundle.io_utils import read_json, write_json
    from duolift_bundle.networks import load_generator
    from monai.bundle import ConfigParser

    doc: dict = {"models": {}, "baselines": {}}
    for key, run in (("double_view", dv_run), ("single_view", sv_run)):
        path = ROOT / FILES[key]
        parser = ConfigParser()
        parser.read_config([str(ROOT / f) for f in INFER_CONFIGS[key]])
        parser["bundle_root"] = "."
        net = load_generator(parser.get_parsed_content("network_def"), path)  # proves the file fits its config
        train = ConfigParser()
        train.read_config([str(ROOT / f) for f in TRAIN_CONFIGS[key]])
        train["bundle_root"] = "."
        files = "[" + ",".join(f"'{f}'" for f in TRAIN_CONFIGS[key]) + "]"
        command = DATA_COMMANDS + [f'python -m monai.bundle run training --config_file "{files}"']
        stages = {}
        if key == "double_view":  # stage 1 ran with --output_dir <run>/stage1, stage 2 in <run>
            command.append(STAGE_2)
            stages = {"stage_1": _curve(Path(run) / "stage1")}
        doc["models"][key] = {
            "file": FILES[key],
            "sha256": file_sha256(path),
            "parameters": int(sum(p.numel() for p in net.parameters())),
            "bytes": path.stat().st_size,
            "training": {
                "command": command,
                "settings": {k: train.get_parsed_content(k) for k in SETTING_KEYS},
                "data": "real CTs P002 and cap002 (COVID-CT-MD, CC BY 4.0), each listed 16 times per epoch with on-the-fly DRR "
                "augmentation, plus 226 phantoms (seeds 2000-2255, training + validation split) at 64^3; "
                "normal001 never trained on",
                "hardware": HARDWARE,
                **stages,
                **_curve(Path(run)),
            },
            "sample": read_case_metrics(Path(sample) / key, digits=4),
        }
    for key, file in BASELINES.items():
        doc["baselines"][key] = {
            "file": file,
            "sha256": file_sha256(ROOT / file),
            "sample": read_case_metrics(Path(sample) / key, digits=4),
        }
    doc["baselines"]["phantom_only"] = {
        "file": "models/phantom_cnn.pt",
        "sha256": file_sha256(ROOT / "models/phantom_cnn.pt"),
        "sample": read_case_metrics(Path(sample) / "phantom_only", digits=4),
    }
    doc["xray_reference"] = xray_reference_record()
    doc["leave_one_out"] = read_json(ROOT / loo)["folds"]
    write_json(out, doc)
    print(f"wrote {out}")


def sample(sample: str = "quickstart", out: str | Path = RECORD) -> None:
    """Refresh only the sample metrics of docs/shipped_models.json from a quick start's output
    (after an inference default changed, e.g. the refinement), recording the refinement settings
    the quick start's evaluation ran with."""
    from duolift_bundle.io_utils import read_json, write_json
    from monai.bundle import ConfigParser

    doc = read_json(out)
    for key in doc["models"]:
        parser = ConfigParser()
        parser.read_config([str(ROOT / f) for f in INFER_CONFIGS[key]])
        doc["models"][key]["sample"] = read_case_metrics(Path(sample) / key, digits=4)
        doc["models"][key]["sample_refinement"] = {k: parser[k] for k in ("refine_steps", "refine_weight", "refine_lr")}
    for key in doc["baselines"]:
        doc["baselines"][key]["sample"] = read_case_metrics(Path(sample) / key, digits=4)
    write_json(out, doc)
    print(f"wrote {out}")


if __name__ == "__main__":
    install_last_line_hook()  # the bundle's message is the last line of a failure
    sys.exit(fire.Fire({"export": export, "record": record, "sample": sample}))
