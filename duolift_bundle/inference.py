"""Inference on files: cases of X-ray images or CTs -> reconstructed CT NIfTI files.

Used by ``configs/inference.yaml`` (and ``configs/evaluate.yaml``). A case is either

- a folder holding ``frontal*`` and (double view) ``lateral*`` radiographs (PNG / JPEG, 2D NIfTI
  or DICOM; :mod:`duolift_bundle.data.xray_io`): the output gets the **default geometry**
  :func:`default_affine` (the 128^3 protocol's 320 mm cube, 2.5 mm voxels, centred on the world
  origin, axes inferior / posterior / left), since a radiograph carries no 3D position; or
- a CT (a DICOM series folder, a 3D NIfTI / MHD / NRRD file): it goes through the 128^3
  protocol, its DRRs are simulated (the round trip used for evaluation) and the output gets the
  affine of the protocol volume, so it lies on top of the source CT in world space.

Outputs per case, written atomically: ``<output_dir>/<case>/recon_hu.nii.gz`` (HU) and, with
``save_unit``, ``recon_unit.nii.gz`` ([0, 1]); a summary line per case with the projection
consistency (the reconstruction re-projected with the same DRR geometry and compared with the
input X-rays: PSNR / SSIM per view, a quality signal that needs no ground truth), and
``summary.json`` for the run.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.transforms import MapTransform, Transform

from duolift_bundle.constants import CT_KEY, PRED_KEY, VIEWS, XRAY_KEY, unit_to_hu
from duolift_bundle.data.ct_io import is_volume_file
from duolift_bundle.data.phantoms import phantom_affine
from duolift_bundle.data.sources import discover_cases
from duolift_bundle.data.xray_io import NORMALIZE, XRayInputError, find_view_files, load_xray
from duolift_bundle.engines.trainer import unwrap
from duolift_bundle.io_utils import atomic_path, write_json
from duolift_bundle.metrics.image import psnr_image, ssim_image
from duolift_bundle.transforms.drr import DRRGeometry, DRRProjector

__all__ = [
    "default_affine",
    "inference_items",
    "LoadInferenceCased",
    "prepare_inference_batch",
    "load_generator",
    "check_writable",
    "ProjectionConsistencyd",
    "SaveReconstructiond",
    "InferenceSummary",
]

logger = logging.getLogger(__name__)

AFFINE_KEY = "affine"


def default_affine(size: int = 128, fov: float = 320.0) -> np.ndarray:
    """RAS affine given to reconstructions from X-rays alone: the protocol's ``fov`` mm cube
    centred on the world origin, axes inferior / posterior / patient-left (axcodes IPL)."""
    return phantom_affine(size, fov)


def inference_items(source: str | os.PathLike, views: int = 2) -> list[dict]:
    """The cases under ``source`` (see the module docstring), sorted by name.

    Raises:
        XRayInputError: an X-ray folder without the views the model needs.
        FileNotFoundError: ``source`` does not exist or holds no case.
    """
    src = os.fspath(source)
    if not os.path.exists(src):
        raise FileNotFoundError(f"{src}: inference input not found")
    if os.path.isfile(src):
        entries = [src]
    else:  # sub-folders and volume files; side files of a prepared set (datalist.json, README) are not cases
        names = [n for n in sorted(os.listdir(src)) if not n.startswith(".")]
        entries = [os.path.join(src, n) for n in names if os.path.isdir(os.path.join(src, n)) or is_volume_file(n)]
        skipped = [n for n in names if os.path.join(src, n) not in entries]
        if skipped:
            logger.info("%s: not cases, skipped: %s", src, ", ".join(skipped))
    if os.path.isdir(src) and (find_view_files(src) or _holds_dicom(src)):
        entries = [src]  # the folder itself is one case (X-rays, or one DICOM CT series)
    items: list[dict] = []
    for entry in entries:
        if os.path.isdir(entry) and find_view_files(entry):
            files = find_view_files(entry)
            wanted = VIEWS[:views]
            missing = [v for v in wanted if v not in files]
            if missing:
                raise XRayInputError(
                    f"{entry}: the {views}-view model needs {' and '.join(wanted)} X-rays; no {', '.join(missing)}* file "
                    f"(found {', '.join(Path(p).name for p in files.values())})"
                )
            items.append({"case": Path(entry).name, "kind": "xray", **{v: files[v] for v in wanted}})
        else:
            for case in discover_cases(entry):
                items.append({"case": case.case_id, "kind": "ct", CT_KEY: case.path})
    if not items:
        raise FileNotFoundError(f"{src}: no X-ray case (frontal*/lateral* files) and no CT found")
    names = [i["case"] for i in items]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"{src}: several inputs map to the same case name(s) {dupes}; rename them")
    return items


def _holds_dicom(folder: str) -> bool:
    from duolift_bundle.data.sources import is_dicom_file

    names = sorted(n for n in os.listdir(folder) if os.path.isfile(os.path.join(folder, n)))[:20]
    return any(is_dicom_file(os.path.join(folder, n)) for n in names)


class LoadInferenceCased(Transform):
    """An item of :func:`inference_items` -> ``{"case", "kind", "xray" (V, S, S), "affine" (4, 4)}``
    (+ ``"ct"`` in [0, 1] for CT cases). CT cases run the raw-CT chain of the datasets (protocol,
    table removal, DRRs) with ``protocol`` / ``drr`` settings; X-ray files are scaled by
    ``normalize`` (:func:`~duolift_bundle.data.xray_io.load_xray`)."""

    def __init__(self, views: int = 2, size: int = 128, protocol: Optional[Mapping] = None, drr: Optional[Mapping] = None, normalize: str = "max") -> None:
        if normalize not in NORMALIZE:
            raise ValueError(f"X-ray normalize must be one of {NORMALIZE}, got {normalize!r}")
        self.normalize = normalize
        self.views = views
        self.size = size
        self.protocol = dict(protocol or {})
        drr = dict(drr or {})
        drr["geometry"] = {**dict(drr.get("geometry") or {}), "output_size": size}  # X-rays at the model's size
        self.drr = drr
        self._ct_chain = None

    def _ct(self, item: dict) -> dict:
        from duolift_bundle.data.datasets import raw_ct_transforms

        if self._ct_chain is None:
            self._ct_chain = raw_ct_transforms(self.views, self.size, self.protocol, self.drr)
        out = self._ct_chain({"case": item["case"], CT_KEY: item[CT_KEY]})
        ct = out[CT_KEY]
        return {
            "case": item["case"],
            "kind": "ct",
            "source": str(item[CT_KEY]),
            XRAY_KEY: torch.as_tensor(np.asarray(out[XRAY_KEY]), dtype=torch.float32),
            CT_KEY: torch.as_tensor(np.asarray(ct), dtype=torch.float32),
            AFFINE_KEY: torch.as_tensor(np.asarray(ct.affine), dtype=torch.float64),
        }

    def __call__(self, data: Mapping[str, Any]) -> dict:
        item = dict(data)
        if item.get("kind") == "ct":
            return self._ct(item)
        views = [load_xray(item[v], self.size, self.normalize) for v in VIEWS[: self.views]]
        return {
            "case": item["case"],
            "kind": "xray",
            "source": ", ".join(str(item[v]) for v in VIEWS[: self.views]),
            XRAY_KEY: torch.as_tensor(np.stack(views)),
            AFFINE_KEY: torch.as_tensor(default_affine(self.size), dtype=torch.float64),
        }


def prepare_inference_batch(batchdata: dict, device=None, non_blocking: bool = False, **kwargs):
    """MONAI ``prepare_batch``: the X-rays as a plain tensor, no target."""
    x = batchdata[XRAY_KEY]
    x = x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)
    return x.to(device=device, non_blocking=non_blocking, **kwargs), None


def load_generator(network: torch.nn.Module, ckpt_path: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Load ``models/model.pt`` (a generator ``state_dict``) into ``network``; a checkpoint of
    another configuration gives an error naming the file and the first mismatches."""
    path = os.fspath(ckpt_path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: checkpoint not found (train one, or pass --ckpt_path)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "generator" in state and isinstance(state["generator"], dict):
        state = state["generator"]  # a full training checkpoint
    net = unwrap(network)
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs network {tuple(own[k].shape)}" for k in own if k in state and state[k].shape != own[k].shape]
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
        raise ValueError(
            f"{path}: checkpoint does not fit this network configuration ({detail}); "
            "pass the overrides the model was trained with (e.g. --views, --width, --lift, --dual_branch; "
            "the demo model shipped as models/model.pt needs configs/demo.yaml merged after the config)"
        )
    net.load_state_dict(state)
    return network.to(device).eval()


def check_writable(folder: str | os.PathLike) -> bool:
    """Create ``folder`` if needed and make sure files can be written there (before any case runs)."""
    folder = os.fspath(folder)
    try:
        os.makedirs(folder, exist_ok=True)
        with atomic_path(os.path.join(folder, ".write_test")) as tmp:
            Path(tmp).write_bytes(b"")
        os.remove(os.path.join(folder, ".write_test"))
    except OSError as err:
        raise PermissionError(f"{folder}: output folder is not writable ({err.strerror or err})") from err
    return True


class ProjectionConsistencyd(MapTransform):
    """Re-project ``pred`` with the DRR geometry of the inputs and compare with ``xray`` per view:
    adds ``"consistency": {"frontal_psnr", "frontal_ssim", ...}``."""

    def __init__(self, views: int = 2, size: int = 128, drr: Optional[Mapping] = None, fov: float = 320.0) -> None:
        super().__init__(keys=[PRED_KEY, XRAY_KEY])
        settings = dict(drr or {})
        geometry = settings.pop("geometry", None)
        geo = DRRGeometry(**{**(geometry or {}), "output_size": size})
        self.views = VIEWS[:views]
        self.projector = DRRProjector(geo, views=self.views, spacing=fov / size, **settings)

    def __call__(self, data: Mapping[str, Any]) -> dict:
        d = dict(data)
        pred = torch.as_tensor(d[PRED_KEY]).float().detach().cpu()
        xray = torch.as_tensor(d[XRAY_KEY]).float().detach().cpu()
        with torch.no_grad():
            reproj = self.projector(pred[None])[0]
        scores = {}
        for i, view in enumerate(self.views):
            scores[f"{view}_psnr"] = round(psnr_image(reproj[i], xray[i]), 3)
            scores[f"{view}_ssim"] = round(ssim_image(reproj[i], xray[i]), 4)
        d["consistency"] = scores
        return d


class SaveReconstructiond(MapTransform):
    """Write ``pred`` as ``<output_dir>/<case>/recon_hu.nii.gz`` (HU) with the item's affine, and
    ``recon_unit.nii.gz`` ([0, 1]) when ``save_unit``; atomically (temp file + rename)."""

    def __init__(self, output_dir: str, save_unit: bool = False, hu_window: Sequence[float] | None = None) -> None:
        super().__init__(keys=[PRED_KEY])
        self.output_dir = os.fspath(output_dir)
        self.save_unit = save_unit
        self.hu_window = tuple(hu_window) if hu_window else None

    def __call__(self, data: Mapping[str, Any]) -> dict:
        import nibabel as nib

        d = dict(data)
        pred = np.asarray(torch.as_tensor(d[PRED_KEY]).detach().cpu().float())[0]
        if AFFINE_KEY in d:
            affine = np.asarray(torch.as_tensor(d[AFFINE_KEY]).cpu(), dtype=np.float64)
        elif hasattr(d.get(CT_KEY), "affine"):  # a prepared target CT (MetaTensor): its world space
            affine = np.asarray(torch.as_tensor(d[CT_KEY].affine).cpu(), dtype=np.float64)
        else:
            affine = default_affine(pred.shape[-1])
        case_dir = os.path.join(self.output_dir, str(d["case"]))
        hu = unit_to_hu(pred, *self.hu_window) if self.hu_window else unit_to_hu(pred)
        outputs = {"recon_hu.nii.gz": hu.astype(np.float32)}
        if self.save_unit:
            outputs["recon_unit.nii.gz"] = pred.astype(np.float32)
        written = []
        for name, array in outputs.items():
            path = os.path.join(case_dir, name)
            with atomic_path(path) as tmp:
                img = nib.Nifti1Image(array, affine)
                img.header.set_xyzt_units("mm")
                nib.save(img, tmp)
            written.append(path)
        d["written"] = written
        return d


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
        outputs = engine.state.output if isinstance(engine.state.output, list) else [engine.state.output]
        batches = engine.state.batch if isinstance(engine.state.batch, list) else [engine.state.batch]
        for out, batch in zip(outputs, batches):
            merged = {**dict(batch), **dict(out)}
            row = {"case": merged.get("case"), "kind": merged.get("kind"), "source": merged.get("source"), "files": merged.get("written", [])}
            row.update(merged.get("consistency", {}))
            self.rows.append(row)
            scores = " ".join(f"{k}={v}" for k, v in merged.get("consistency", {}).items())
            logger.info("%s (%s): wrote %s; projection consistency %s", row["case"], row["kind"], ", ".join(row["files"]), scores)
        if self._bar is not None:
            self._bar.update(len(outputs))

    def _done(self, engine: Engine) -> None:
        if self._bar is not None:
            self._bar.close()
        write_json(os.path.join(self.output_dir, "summary.json"), {"cases": self.rows})
        logger.info("%d case(s) reconstructed into %s", len(self.rows), self.output_dir)
