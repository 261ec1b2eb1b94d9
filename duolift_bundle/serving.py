"""Reconstructing one case at a time inside a long-running process (a MONAI Label server), through
``configs/inference.yaml``'s own pipeline.

:class:`Reconstructor` parses the inference configs once and loads the network once; each call
runs the config's own ``evaluator`` (``LoadInferenceCase`` -> the generator ->
``ProjectionConsistencyd`` -> ``ToReferenceGeometryd`` -> ``SaveReconstructiond``) on one staged
case and returns the reconstruction's file and its summary row: the same volume, geometry and
report as ``python -m monai.bundle run inferring`` writes for that case. Nothing here preprocesses
or post-processes on its own.

:func:`stage_case` turns the files a client sent into the case layout inference reads (docs/guide.md,
"Inference"): one radiograph -> ``<case>/frontal<suffix>``; files whose names say their view
(``frontal*`` / ``lateral*``, or ``xray_frontal*`` / ``xray_lateral*`` as a prepared case holds
them: :func:`~duolift_bundle.inputs.radiograph_io.view_of_name`, the rule of ``run inferring`` too) ->
``<case>/`` under their names; a 3D volume file (NIfTI / MHD / NRRD) or the files of one DICOM
series -> a CT, reconstructed from its DRRs.

Errors are :class:`ServingError` subclasses whose ``status`` is the HTTP status a server should
answer with: 404 no input, 415 a file type the bundle does not read, 400 a view missing for the
model, 422 a file of the right type that the bundle cannot use (its message says why).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from duolift_bundle.errors import ConfigError, DuoLiftError
from duolift_bundle.inputs.ct_io import ITK_SUFFIXES, CTInputError, file_suffix, is_3d_volume, is_dicom_file
from duolift_bundle.inputs.discovery import NoCaseFoundError, discover_cases
from duolift_bundle.inputs.radiograph import CONFIG_KEYS
from duolift_bundle.inputs.radiograph_io import XRAY_SUFFIXES, view_of_name
from duolift_bundle.io_utils import read_json
from duolift_bundle.transforms.quality import REQUEST_KEY as QUALITY_KEY

__all__ = [
    "REQUEST_SETTINGS",
    "ServingError",
    "NoInputError",
    "UnsupportedInputError",
    "MissingViewError",
    "CaseFailedError",
    "stage_case",
    "Reconstructor",
    "RECON_FILE",
]

#: the reconstruction in HU that ``SaveReconstructiond`` writes into ``<output_dir>/<case>/``
RECON_FILE = "recon_hu.nii.gz"
#: inference.yaml's radiograph settings that one request may set for itself (docs/guide.md, "Real radiographs")


#: the inference settings a request may set for itself: the radiograph settings and the quality gate
REQUEST_SETTINGS: tuple[str, ...] = CONFIG_KEYS + (QUALITY_KEY,)


class ServingError(DuoLiftError):
    """An input a server should refuse; ``status`` is the HTTP status that says so."""

    status = 400


class NoInputError(ServingError, FileNotFoundError):
    """No file reached the reconstruction (an unknown or expired session, no upload)."""

    status = 404


class UnsupportedInputError(ServingError, ValueError):
    """A file of a type the bundle does not read."""

    status = 415


class MissingViewError(ServingError, ValueError):
    """A radiograph case without a view the model needs, or files that cannot be told apart."""

    status = 400


class CaseFailedError(ServingError, ValueError):
    """A readable file that the bundle could not reconstruct from; the message is its reason."""

    status = 422


def _is_volume(path: str) -> bool:
    try:
        return is_3d_volume(path)
    except CTInputError as err:  # a NIfTI name on something else: a 415, as any unreadable type
        raise UnsupportedInputError(str(err)) from err


def _check_type(path: str) -> None:
    suffix = file_suffix(path)
    if suffix in XRAY_SUFFIXES or suffix in ITK_SUFFIXES or is_dicom_file(path):
        return
    accepted = ", ".join(sorted(set(XRAY_SUFFIXES) | set(ITK_SUFFIXES)))
    raise UnsupportedInputError(
        f"{os.path.basename(path)}: not a file type the bundle reads (radiographs: PNG / JPEG / 2D NIfTI / "
        f"DICOM; CTs: a 3D NIfTI / MHD / NRRD file or a DICOM series; accepted suffixes {accepted})"
    )


def stage_case(image: str | os.PathLike | None, root: str | os.PathLike, case: str = "case") -> Path:
    """Lay out the input ``image`` (a file, or a folder of the files of one request, nested or not) as a case
    under ``root`` and return the source to give to inference (a case folder's parent, or a CT file).

    Raises:
        NoInputError: ``image`` is empty or does not exist.
        UnsupportedInputError: a file of a type the bundle does not read.
        MissingViewError: several radiographs whose names do not say which is the frontal and
            which the lateral view.
    """
    if not image or not os.path.exists(image):
        raise NoInputError(
            f"{image or '(none)'}: no input reached the reconstruction (an unknown or expired session, or no file sent)"
        )
    image = os.fspath(image)
    files = [image]
    if os.path.isdir(image):  # a session's folder; an uncompressed archive may nest its files
        files = sorted(os.path.join(top, f) for top, _, names in os.walk(image) for f in names)
        names = [os.path.basename(f) for f in files]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise MissingViewError(f"{', '.join(twice)}: several files of the request have this name; send one case")
    if not files:
        raise NoInputError(f"{image}: the request holds no file")
    for f in files:
        _check_type(f)
    root = Path(root)
    folder = root / case
    if len(files) == 1 and _is_volume(files[0]):  # a CT: reconstructed from its DRRs
        root.mkdir(parents=True, exist_ok=True)
        target = root / f"{case}{file_suffix(files[0])}"
        shutil.copyfile(files[0], target)
        return target
    named = {f: view_of_name(f) for f in files}
    if len(files) == 1:
        target_name = os.path.basename(files[0]) if named[files[0]] else f"frontal{file_suffix(files[0])}"
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(files[0], folder / target_name)
        return root
    if any(named.values()) or not all(is_dicom_file(f) for f in files):
        unnamed = [os.path.basename(f) for f, view in named.items() if view is None]
        if unnamed:
            raise MissingViewError(
                f"{', '.join(unnamed)}: a request of several radiographs needs each file named frontal* or "
                "lateral* (as in a case folder), to tell the views apart"
            )
    folder.mkdir(parents=True, exist_ok=True)  # named views, or the slices of one DICOM series
    for f in files:
        shutil.copyfile(f, folder / os.path.basename(f))
    return root


class Reconstructor:
    """One model of the bundle, loaded once, reconstructing one staged case per call.

    Args:
        bundle_root: the bundle's folder (holding ``configs/`` and ``models/``).
        config_files: inference configs relative to ``bundle_root``, merged in order
            (``["configs/inference.yaml"]`` is the shipped double-view model;
            ``+ "configs/inference_single_view.yaml"`` the single-view one).
        overrides: config keys set after the files (``{"device": "cpu"}``, ``{"xray_contrast": ...}``).

    Each call is serialised (one lock per model): the evaluator and its output folder belong to
    one request at a time.
    """

    def __init__(
        self,
        bundle_root: str | os.PathLike,
        config_files: Sequence[str] = ("configs/inference.yaml",),
        overrides: Mapping[str, Any] | None = None,
    ) -> None:
        from monai.bundle import ConfigParser

        self.bundle_root = os.path.abspath(bundle_root)
        parser = ConfigParser()
        parser.read_config([os.path.join(self.bundle_root, f) for f in config_files])
        parser["bundle_root"] = self.bundle_root
        for key, value in (overrides or {}).items():
            parser[key] = value
        self.config = copy.deepcopy(parser.get())
        self.views = int(parser.get_parsed_content("views"))
        self.ckpt_path = parser.get_parsed_content("ckpt_path")
        self.device = parser.get_parsed_content("device")
        self.network = parser.get_parsed_content("network")  # the weights are read once, here
        self.geometry = {
            "size": int(parser.get_parsed_content("size")),
            "voxel_mm": float(parser.get_parsed_content("protocol").ct.voxel_mm),
            "units": "HU",
        }
        self._lock = threading.Lock()

    def __call__(
        self, source: str | os.PathLike, output_dir: str | os.PathLike, settings: Mapping[str, Any] | None = None
    ) -> tuple[Path, dict]:
        """Reconstruct the one case at ``source`` (from :func:`stage_case`) into ``output_dir``,
        with ``settings`` (keys of :data:`REQUEST_SETTINGS`) for this case only.

        Returns:
            ``(recon_file, report)``: ``<output_dir>/<case>/recon_hu.nii.gz`` (HU, the bundle's
            RAS affine) and the case's row of ``summary.json`` (kind, projection consistency,
            quality warnings, the radiographs' pixel sizes and notes), its file names relative to
            the staged input.

        Raises:
            ValueError: a setting that is not in :data:`REQUEST_SETTINGS`.
            MissingViewError: a radiograph case without a view the model needs.
            UnsupportedInputError: nothing at ``source`` is a case the bundle reads.
            CaseFailedError: the bundle could not reconstruct the case (the reason is its message).
        """
        from monai.bundle import ConfigParser

        unknown = sorted(set(settings or {}) - set(REQUEST_SETTINGS))
        if unknown:
            raise ConfigError(f"a request may set {', '.join(REQUEST_SETTINGS)}; not {', '.join(unknown)}")
        staged = os.fspath(source if os.path.isdir(source) else os.path.dirname(source)) + os.sep

        def relative(text: str) -> str:  # the client's names, not the staging folder's
            return text.replace(staged, "")

        try:
            found = discover_cases(source, xray_cases=True, views=self.views)
        except NoCaseFoundError as err:
            raise UnsupportedInputError(relative(str(err))) from err
        for case in found.cases:
            if case.error:
                raise MissingViewError(relative(case.error))
        with self._lock:
            parser = ConfigParser(copy.deepcopy(self.config))
            parser["input_dir"] = os.fspath(source)
            parser["output_dir"] = os.fspath(output_dir)
            parser["progress"] = False
            parser["save_figure"] = False
            for key, value in (settings or {}).items():
                parser[key] = value
            parser["network"] = self.network  # an object, not an expression: taken as it is
            evaluator = parser.get_parsed_content("evaluator")
            evaluator.run()
        failed = dict(evaluator.failed_cases)
        if failed:
            raise CaseFailedError(relative("; ".join(f"{case}: {reason}" for case, reason in failed.items())))
        rows = read_json(os.path.join(output_dir, "summary.json"))["cases"]
        row = rows[0]
        recon = Path(output_dir) / str(row["case"]) / RECON_FILE
        report = json.loads(relative(json.dumps({k: v for k, v in row.items() if k != "files"})))
        return recon, report
