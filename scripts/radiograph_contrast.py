"""Measure the contrast mappings of clinical radiographs (``xray_contrast``: none / histogram) to
choose the default, as the model card reports it.

    python scripts/radiograph_contrast.py --out docs/radiograph_contrast.json

Two measurements, with the served models of ``models/registry.json`` (double view;
``configs/inference_single_view.yaml``: single view):

1. **The held-out real CT** ``normal001`` (embedded sample, 64^3; never seen in training): its
   DRRs are turned into "clinical" films by display mappings a radiograph may have been through
   (``VARIANTS``: gamma curves, a display window, unsharp masking with a sigmoid look-up table),
   written (clipped to [0, 1]) as 8-bit PNGs with a sidecar giving their true pixel size, read back through the
   bundle's radiograph path with each contrast mapping and reconstructed. Reported: PSNR of the
   network's input against the true DRR, and PSNR(3D) / SSIM(3D) of the reconstruction against
   the true CT.
2. **The real film** (pydicom-data's ``RG1_UNCI.dcm``, single view; no CT): the quality report
   without ground truth, i.e. the overlap (Dice) of the lung fields and the body outline of the
   input with those of the re-projected reconstruction, and the re-projection's PSNR.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import fire
import nibabel as nib
import numpy as np
import torch
from duolift_bundle.constants import VIEWS
from duolift_bundle.datasets.sample import real_radiograph, sample_dir
from duolift_bundle.errors import install_last_line_hook
from duolift_bundle.inputs.radiograph import RadiographSettings, load_radiograph
from duolift_bundle.inputs.radiograph_placement import field_mm
from duolift_bundle.io_utils import write_json
from duolift_bundle.metrics.image import psnr_3d, psnr_image, ssim_3d
from duolift_bundle.registry import load_registry
from duolift_bundle.transforms.consistency import ProjectionConsistencyd
from PIL import Image
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]
#: the served models' configs (models/registry.json), named by their views
MODELS = {f"{m.figure}": list(m.configs) for m in load_registry(ROOT).served()}
CONTRASTS = ("none", "histogram")


def _unsharp_sigmoid(x: np.ndarray) -> np.ndarray:
    sharp = x + 1.0 * (x - ndimage.gaussian_filter(x, 3.0))
    return 1.0 / (1.0 + np.exp(-(sharp - 0.55) * 8.0))


#: display mappings of a [0, 1] DRR (dense bright), as a clinical film may have been processed
VARIANTS = {
    "DRR as is": lambda x: x,
    "gamma 0.6": lambda x: x**0.6,
    "gamma 1.6": lambda x: x**1.6,
    "full-range stretch": lambda x: (x - x.min()) / (x.max() - x.min()),
    "window 0.3-0.9": lambda x: np.clip((x - 0.3) / 0.6, 0.0, 1.0),
    "unsharp + sigmoid LUT": lambda x: (lambda y: (y - y.min()) / (y.max() - y.min()))(_unsharp_sigmoid(x)),
}


def _parser(configs: list[str]):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(ROOT / "configs" / "inference.yaml"), *[str(ROOT / c) for c in configs]])
    parser.update({"bundle_root": str(ROOT), "device": "$torch.device('cpu')"})
    return parser


def _film(drr: np.ndarray, mapping, folder: Path, name: str, pixel_mm: float) -> Path:
    display = np.clip(mapping(np.asarray(drr, np.float64)), 0.0, 1.0)
    path = folder / f"{name}.png"
    Image.fromarray((display * 255).round().astype(np.uint8), "L").save(path)
    write_json(folder / f"{name}.json", {"pixel_spacing": [pixel_mm, pixel_mm], "magnification": 1.0})
    return path


def main(out: str = "docs/radiograph_contrast.json") -> None:
    case = sample_dir(64) / "normal001"
    ct = torch.as_tensor(np.asarray(nib.load(case / "ct.nii.gz").dataobj, np.float32))[None]
    drrs = {v: np.asarray(nib.load(case / f"xray_{v}.nii.gz").dataobj, np.float32) for v in VIEWS}
    results: dict = {"held_out_ct": {}, "real_film": {}}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for model, configs in MODELS.items():
            parser = _parser(configs)
            protocol, views = parser.get_parsed_content("protocol"), parser.get_parsed_content("views")
            network = parser.get_parsed_content("network").eval()
            reference = parser.get_parsed_content("xray_reference")
            pixel_mm = field_mm(protocol.drr.geometry) / protocol.xray_size
            settings = {
                contrast: RadiographSettings(contrast=contrast, reference=reference) for contrast in CONTRASTS
            }  # each reads the reference once
            for variant, mapping in VARIANTS.items():
                films = {
                    v: _film(drrs[v], mapping, tmp, f"{variant.replace(' ', '_')}_{v}", pixel_mm) for v in VIEWS[:views]
                }
                for contrast in CONTRASTS:
                    x = np.stack([load_radiograph(films[v], v, protocol, settings[contrast])[0] for v in VIEWS[:views]])
                    with torch.no_grad():
                        pred = network(torch.as_tensor(x)[None])[0]
                    row = {
                        "input_psnr": round(
                            float(
                                np.mean(
                                    [
                                        psnr_image(torch.as_tensor(x[i]), torch.as_tensor(drrs[v]))
                                        for i, v in enumerate(VIEWS[:views])
                                    ]
                                )
                            ),
                            2,
                        ),
                        "psnr_3d": round(psnr_3d(pred, ct), 2),
                        "ssim_3d": round(ssim_3d(pred, ct), 4),
                    }
                    results["held_out_ct"].setdefault(model, {}).setdefault(variant, {})[contrast] = row
                    print(f"normal001 {model:12s} {variant:22s} {contrast:9s} {row}", flush=True)
            if views == 1:
                film = real_radiograph()
                check = ProjectionConsistencyd(views=1, protocol=protocol)
                for contrast in CONTRASTS:
                    x, info = load_radiograph(film, "frontal", protocol, settings[contrast])
                    with torch.no_grad():
                        pred = network(torch.as_tensor(x)[None, None])[0]
                    scores = check({"xray": torch.as_tensor(x)[None], "pred": pred})["consistency"]
                    results["real_film"][contrast] = {
                        **scores,
                        "pixel_mm": info["pixel_mm"],
                        "spacing_source": info["spacing_source"],
                    }
                    print(f"RG1_UNCI {model} {contrast:9s} {scores}", flush=True)
    results["variants"] = list(VARIANTS)
    write_json(out, results)
    print(f"wrote {out}")


if __name__ == "__main__":
    install_last_line_hook()  # the bundle's message is the last line of a failure
    fire.Fire(main, serialize=lambda result: None)
