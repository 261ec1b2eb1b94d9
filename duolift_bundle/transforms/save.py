"""Placing a reconstruction in world space and writing it as NIfTI, atomically."""

from __future__ import annotations

import os
from collections.abc import Hashable, Mapping
from typing import Any

import nibabel as nib
import numpy as np
import torch
from duolift_bundle.constants import CT_KEY, PRED_KEY, VIEWS, XRAY_KEY
from duolift_bundle.errors import ConfigError, MissingKeyError
from duolift_bundle.geometry import CTProtocol, grid_affine
from duolift_bundle.io_utils import atomic_path
from monai.data import MetaTensor
from monai.transforms import MapTransform

__all__ = ["ToReferenceGeometryd", "SaveReconstructiond", "SaveInferenceFigured"]


class ToReferenceGeometryd(MapTransform):
    """Make each volume of ``keys`` (``pred``) a MetaTensor placed in world space: with the affine
    of ``ref_key`` (the CT the reconstruction belongs to: an evaluation target or a CT input)
    when the item has one, else with the protocol's default placement
    (:meth:`~duolift_bundle.geometry.CTProtocol.affine`: radiographs carry no 3D position)."""

    def __init__(self, keys: Hashable = PRED_KEY, ref_key: str = CT_KEY, protocol: CTProtocol | None = None) -> None:
        super().__init__(keys)
        self.ref_key = ref_key
        self.protocol = protocol or CTProtocol()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        ref = d.get(self.ref_key)
        for key in self.key_iterator(d):
            pred = torch.as_tensor(d[key]).detach().cpu().float()
            if isinstance(ref, MetaTensor):
                affine = ref.affine.clone()
            else:
                affine = torch.as_tensor(grid_affine(int(pred.shape[-1]), self.protocol.fov_mm))
            d[key] = MetaTensor(pred, affine=affine.to(torch.float64))
        return d


class SaveReconstructiond(MapTransform):
    """Write each volume of ``keys`` (a MetaTensor ``(1, D, H, W)`` in [0, 1], placed by
    :class:`ToReferenceGeometryd`) as ``<output_dir>/<case>/recon_hu.nii.gz`` (HU) and, with
    ``save_unit``, ``recon_unit.nii.gz`` ([0, 1]), HU on the window of ``protocol`` (the
    :class:`CTProtocol`, X2CT's by default); records the paths under ``"written"``.

    With ``target_key`` (the evaluation's ``ct``: the true CT, a MetaTensor in [0, 1] on the same
    grid) the true CT is written beside it as ``target_hu.nii.gz``, in HU too, so that the two open
    side by side in 3D Slicer with one window (the prepared ``ct.nii.gz`` files hold the data
    contract's [0, 1] scale).

    MONAI's ``SaveImaged`` names files ``<subject>/<subject>_<postfix>`` and writes in place; the
    bundle's layout and the guarantee that no half-written file is ever left behind need a
    temporary name and a rename, so the MetaTensor's array and affine go to nibabel (the library
    under MONAI's ``NibabelWriter``) through a temporary file that replaces the target.
    """

    def __init__(
        self,
        keys: Hashable = PRED_KEY,
        output_dir: str = ".",
        save_unit: bool = False,
        protocol: CTProtocol | None = None,
        target_key: str | None = None,
    ) -> None:
        super().__init__(keys)
        self.output_dir = os.fspath(output_dir)
        self.save_unit = save_unit
        self.target_key = target_key
        self.protocol = protocol or CTProtocol()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        case_dir = os.path.join(self.output_dir, str(d["case"]))
        written = []
        for key in self.key_iterator(d):
            pred = d[key]
            if not isinstance(pred, MetaTensor):
                raise ConfigError(f"{d['case']}: '{key}' carries no affine; place it with ToReferenceGeometryd first")
            outputs = {"recon_hu.nii.gz": self.protocol.to_hu(pred)}
            if self.save_unit:
                outputs["recon_unit.nii.gz"] = pred
            if self.target_key is not None:
                if self.target_key not in d:
                    raise MissingKeyError(
                        f"{d['case']}: no '{self.target_key}' (the true CT) to write beside the reconstruction"
                    )
                # on the reconstruction's grid: ToReferenceGeometryd gave it the true CT's affine
                target = torch.as_tensor(d[self.target_key]).detach().cpu().float().reshape(pred.shape)
                outputs["target_hu.nii.gz"] = MetaTensor(self.protocol.to_hu(target), affine=pred.affine)
            for name, volume in outputs.items():
                path = os.path.join(case_dir, name)
                img = nib.Nifti1Image(
                    np.asarray(volume.array[0], dtype=np.float32), np.asarray(volume.affine, dtype=np.float64)
                )
                img.header.set_xyzt_units("mm")
                with atomic_path(path) as tmp:
                    nib.save(img, tmp)
                written.append(path)
        d["written"] = written
        return d


class SaveInferenceFigured(MapTransform):
    """Write ``<output_dir>/<case>/figure.png`` (:func:`duolift_bundle.viz.inference_figure`: the
    inputs as the network saw them, the re-projections of :class:`ProjectionConsistencyd`,
    tri-planar slices of the reconstruction ``keys``) and add its path to ``"written"``."""

    def __init__(self, keys: Hashable = PRED_KEY, output_dir: str = ".", xray_key: str = XRAY_KEY) -> None:
        super().__init__(keys)
        self.output_dir = os.fspath(output_dir)
        self.xray_key = xray_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        from duolift_bundle.viz import inference_figure

        d = dict(data)
        if "reprojection" not in d:
            raise MissingKeyError(
                f"{d['case']}: no 'reprojection'; run ProjectionConsistencyd before SaveInferenceFigured"
            )
        path = os.path.join(self.output_dir, str(d["case"]), "figure.png")
        scores = d.get("consistency", {})
        views = VIEWS[: len(d[self.xray_key])]
        shown = ", ".join(
            f"{v} {scores[v + '_psnr']:.1f} dB"
            + (f", lung Dice {scores[v + '_lung_dice']:.2f}" if scores.get(v + "_lung_dice") is not None else "")
            for v in views
        )
        for key in self.key_iterator(d):
            inference_figure(
                d[self.xray_key],
                d["reprojection"],
                d[key],
                path,
                title=f"{d['case']}: re-projection vs input {shown}",
                lung_fields=d.get("input_lung_fields"),
            )
        d["written"] = [*d.get("written", []), path]
        return d
