"""The MONAI Label infer task of one shipped DuoLift model (type ``others``: a volume comes back).

The task is a thin adapter: :func:`duolift_bundle.serving.stage_case` lays the request's files
out as a case and :class:`duolift_bundle.serving.Reconstructor` runs ``configs/inference.yaml``'s
own evaluator on it, so the volume, its geometry and its report are those of
``python -m monai.bundle run inferring`` for the same files. The bundle's input errors become HTTP
errors with their message: 404 no input (an unknown or expired session), 415 a file type the
bundle does not read, 400 a view missing, 422 a file the bundle could not reconstruct from.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

from duolift_bundle.serving import REQUEST_SETTINGS, Reconstructor, ServingError, stage_case
from fastapi import HTTPException
from monailabel.interfaces.tasks.infer_v2 import InferTask, InferType

__all__ = ["DuoLiftReconstruction"]

logger = logging.getLogger(__name__)


class DuoLiftReconstruction(InferTask):
    """CT reconstruction (HU, 64^3 at 5 mm, the bundle's RAS affine) from a frontal radiograph, a
    frontal + lateral pair sent as one session (files named ``frontal*`` / ``lateral*``), or a CT
    (through its DRRs).

    Args:
        bundle_root: the bundle's folder.
        config_files: the model's inference configs (its entry of ``models/registry.json``); they
            say how many views it takes.
        description: shown in MONAI Label's ``/info/``.
        overrides: inference.yaml keys set for every request (the registry entry's weights and
            overrides, then ``--conf``).
    """

    def __init__(
        self,
        bundle_root: str,
        config_files: Sequence[str],
        description: str,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        self.reconstructor = Reconstructor(bundle_root, config_files, overrides)
        views = self.reconstructor.views
        accepts = "a frontal chest radiograph" if views == 1 else "a frontal + lateral pair (one session)"
        super().__init__(
            type=InferType.OTHERS,
            labels=None,
            dimension=3,
            description=f"{description}: {accepts}, or a CT (through its DRRs) -> CT in HU",
            config={"views": views, **self.reconstructor.geometry},
        )

    def is_valid(self) -> bool:
        return os.path.isfile(self.reconstructor.ckpt_path)

    def __call__(self, request: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """``request["image"]``: the uploaded file, the session's file or folder, or a datastore
        image; returns the path of the reconstruction (a temporary ``.nii.gz`` that MONAI Label
        removes after sending it) and the report."""
        settings = {k: request[k] for k in REQUEST_SETTINGS if k in request}
        work = tempfile.mkdtemp(prefix="duolift_request_")
        try:
            source = stage_case(request.get("image"), os.path.join(work, "in"))
            recon, report = self.reconstructor(source, os.path.join(work, "out"), settings)
            fd, result = tempfile.mkstemp(suffix=".nii.gz", prefix="duolift_recon_")
            os.close(fd)
            shutil.copyfile(recon, result)
        except ServingError as err:
            logger.warning("%s: %s", type(err).__name__, err)
            raise HTTPException(status_code=err.status, detail=f"{type(err).__name__}: {err}") from err
        finally:
            shutil.rmtree(work, ignore_errors=True)
        return result, {"model_views": self.reconstructor.views, **self.reconstructor.geometry, **report}
