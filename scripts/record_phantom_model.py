"""Write ``docs/phantom_model.json``, the provenance record of the phantom-only model
(``models/phantom_cnn.pt``: trained on phantoms only; the "before" row of the model card and
the warm start of the shipped real-chest models), from the
outputs of its training and evaluation runs (the model card's numbers come from this file, and
``tests/workflows/test_bundle_checks.py`` checks the model file and the configs against it).

    python scripts/record_phantom_model.py --train_run runs/demo64 \\
        --heldout eval/demo_heldout --baseline eval/baseline_heldout \\
        --validation eval/demo_validation --sample quickstart

``--train_run`` is the training run's ``output_dir`` (its ``validation_curve.json`` is read);
``--heldout`` / ``--baseline`` / ``--validation`` / ``--sample`` are ``output_dir`` folders of
``evaluate.yaml`` runs (their ``summary.json`` and ``metrics.csv`` are read).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import fire
from duolift_bundle.engines.handlers import read_validation_curve
from duolift_bundle.engines.reports import read_case_metrics
from duolift_bundle.errors import install_last_line_hook
from duolift_bundle.shipped import file_sha256

ROOT = Path(__file__).resolve().parents[1]

#: the demo model's training configs, merged in this order (configs/train_phantom_only.yaml says how)
PHANTOM_ONLY_CONFIGS = ["configs/train.yaml", "configs/train_cnn.yaml", "configs/train_phantom_only.yaml"]
#: the settings of the recipe recorded in the provenance (resolved from PHANTOM_ONLY_CONFIGS)
SETTING_KEYS = [
    "views",
    "size",
    "width",
    "gan",
    "masked_loss",
    "batch_size",
    "accumulation_steps",
    "g_lr",
    "max_epochs",
    "lr_milestone",
    "seed",
    "dataset_dir",
    "key_metric",
]
DATA_COMMAND = "python scripts/make_phantoms.py data/demo64 --n 96 --size 64 --seed 100 --workers 2"


def recipe() -> tuple[dict, list[str]]:
    """The recipe's settings as the merged configs resolve them (bundle_root ".") and the two
    commands that reproduce the model."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(ROOT / f) for f in PHANTOM_ONLY_CONFIGS])
    parser["bundle_root"] = "."
    settings = {key: parser.get_parsed_content(key) for key in SETTING_KEYS}
    configs = "[" + ",".join(f"'{f}'" for f in PHANTOM_ONLY_CONFIGS) + "]"
    return settings, [DATA_COMMAND, f'python -m monai.bundle run training --config_file "{configs}"']


def _summary(folder: str | None) -> dict | None:
    if not folder:
        return None
    summary = json.loads((Path(folder) / "summary.json").read_text())
    return {
        k: {"mean": round(v["mean"], 4), "std": round(v["std"], 4), "n": v["n"]} for k, v in summary["metrics"].items()
    } | {"segmenters": [summary.get("lung_segmenter"), summary.get("vessel_segmenter")]}


def _training(run: str) -> dict:
    """The run's validation curve (``<run>/validation_curve.json``, the ValidationCurve handler's)."""
    curve = read_validation_curve(str(Path(run) / "validation_curve.json"))
    best = max(curve, key=lambda e: curve[e]["val_psnr"])
    last = curve[max(curve, key=int)]
    return {
        "epochs": max(int(e) for e in curve),
        "validation_curve": {e: {"val_psnr": v["val_psnr"], "val_ssim": v["val_ssim"]} for e, v in curve.items()},
        "best_epoch": int(best),
        "best_val_psnr": curve[best]["val_psnr"],
        "best_val_ssim": curve[best]["val_ssim"],
        "wall_seconds": last["seconds"],
    }


#: Where the shipped phantom model and its record live.
PHANTOM_MODEL = str(ROOT / "models" / "phantom_cnn.pt")
PHANTOM_RECORD = str(ROOT / "docs" / "phantom_model.json")


def main(
    train_run: str = "runs/demo64",
    heldout: str = "eval/demo_heldout",
    baseline: str = "eval/baseline_heldout",
    validation: str | None = "eval/demo_validation",
    sample: str = "quickstart",
    model: str = PHANTOM_MODEL,
    out: str = PHANTOM_RECORD,
) -> None:
    from duolift_bundle.io_utils import write_json
    from duolift_bundle.networks import load_generator
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(ROOT / "configs" / "inference.yaml")])
    net = load_generator(parser.get_parsed_content("network_def"), model)  # also proves the file fits the config
    settings, command = recipe()
    record = {
        "model": "DuoLift-CNN, double view, 64^3, width 0.125 (configs/inference.yaml)",
        "file": "models/phantom_cnn.pt",
        "sha256": file_sha256(model),
        "parameters": int(sum(p.numel() for p in net.parameters())),
        "bytes": Path(model).stat().st_size,
        "training": {
            "command": command,
            "settings": settings,
            "data": "96 phantoms (seeds 100-195) at 64^3 from scripts/make_phantoms.py; "
            "seeded split 82 training / 9 validation / 5 test",
            "hardware": "2 CPU cores (no GPU), torch 2.14.1, 2 threads",
            **_training(train_run),
        },
        "heldout_data": "32 phantoms (seeds 1000-1031) at 64^3: python scripts/make_phantoms.py data/demo64_heldout "
        "--n 32 --size 64 --seed 1000 --fractions '[0,0,1]'",
        "heldout": _summary(heldout),
        "baseline": {
            "method": "mean of the 82 training CTs (configs/baseline_mean.yaml)",
            "heldout": _summary(baseline),
        },
        "validation": _summary(validation),
        "sample": read_case_metrics(sample, digits=4),
    }
    write_json(out, record)  # atomic
    print(f"wrote {out}")


if __name__ == "__main__":
    install_last_line_hook()  # the bundle's message is the last line of a failure
    sys.exit(fire.Fire(main))
