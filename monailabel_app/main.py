"""MONAI Label app serving the bundle's shipped models (docs/guide.md, "MONAI Label").

    monailabel start_server --app monailabel_app --studies <folder> --conf models all

``--conf`` keys: ``models`` (``all`` or a comma list of the served models of the bundle's model
registry, ``models/registry.json``: ``double_view``, ``single_view``), ``bundle_root`` (default: this folder's
parent, the repository), and any of ``device`` and inference.yaml's radiograph settings
(``xray_pixel_spacing``, ``xray_contrast`` ...) for every request; a request's ``params`` may set
the radiograph settings for itself.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any

import duolift_bundle
from duolift_bundle.errors import ConfigError
from duolift_bundle.registry import ModelSpec, load_registry
from duolift_bundle.serving import REQUEST_SETTINGS
from fastapi import HTTPException
from lib.infers import DuoLiftReconstruction
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask

__all__ = ["DuoLiftApp", "CONF_KEYS", "served_models"]

logger = logging.getLogger(__name__)

#: --conf keys passed on to the bundle's inference config
CONF_KEYS = ("device",) + REQUEST_SETTINGS


def _value(text: str) -> Any:
    """A --conf value as JSON where it is (0.2, null, true), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def served_models(bundle_root: str, wanted: str = "all") -> list[ModelSpec]:
    """The registry's served models (``models/registry.json``, ``serve: true``) that ``--conf
    models`` names: ``all``, or a comma list of their names."""
    served = {spec.name: spec for spec in load_registry(bundle_root).served()}
    keys = list(served) if wanted == "all" else [k.strip() for k in wanted.split(",")]
    unknown = sorted(set(keys) - set(served))
    if unknown:
        raise ConfigError(f"--conf models: unknown {unknown}; choose all or of {', '.join(served)}")
    return [served[k] for k in served if k in keys]


class DuoLiftApp(MONAILabelApp):
    """The bundle's shipped models as MONAI Label infer tasks."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.bundle_root = os.path.realpath(conf.get("bundle_root", os.path.join(app_dir, "..")))
        self.models = served_models(self.bundle_root, conf.get("models", "all"))
        self.overrides = {k: _value(conf[k]) for k in CONF_KEYS if k in conf}
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="DuoLift CT reconstruction",
            description="Chest CT (64^3, HU) from a frontal radiograph or a frontal + lateral pair",
            version=duolift_bundle.__version__,
        )

    def infer(self, request: dict[str, Any], datastore: Any = None) -> dict[str, Any]:
        """MONAI Label's infer, with a 404 for a model this server does not have (its own answer is a 500)."""
        model = request.get("model")
        if model not in self._infers:
            raise HTTPException(
                status_code=404, detail=f"no model {model!r} here; this server has {sorted(self._infers)}"
            )
        return super().infer(request, datastore)

    def init_infers(self) -> dict[str, InferTask]:
        tasks: dict[str, InferTask] = {}
        for spec in self.models:
            weights = {key: os.path.join(self.bundle_root, file) for key, file in spec.weights_override().items()}
            overrides = {**spec.overrides, **weights, **self.overrides}
            tasks[spec.task] = DuoLiftReconstruction(self.bundle_root, list(spec.configs), spec.description, overrides)
            logger.info("%s: %s with %s", spec.task, spec.file, list(spec.configs))
        return tasks
