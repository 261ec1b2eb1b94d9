"""MONAI Label app serving the bundle's shipped models (README, "MONAI Label").

    monailabel start_server --app monailabel_app --studies <folder> --conf models all

``--conf`` keys: ``models`` (``all``, ``double_view``, ``single_view`` or a comma list; the
shipped models recorded in ``docs/shipped_models.json``), ``bundle_root`` (default: this folder's
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
from duolift_bundle.errors import ConfigError, MissingFileError
from duolift_bundle.serving import REQUEST_SETTINGS
from fastapi import HTTPException
from lib.infers import DuoLiftReconstruction
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask

__all__ = ["DuoLiftApp", "MODELS"]

logger = logging.getLogger(__name__)

#: infer task name -> (shipped model key in docs/shipped_models.json, description); the views
#: come from the model's configs
MODELS = {
    "duolift_double_view": ("double_view", "DuoLift double-view model"),
    "duolift_single_view": ("single_view", "DuoLift single-view model"),
}
#: --conf keys passed on to the bundle's inference config
CONF_KEYS = ("device",) + REQUEST_SETTINGS


def _value(text: str) -> Any:
    """A --conf value as JSON where it is (0.2, null, true), else the string."""
    try:
        return json.loads(text)
    except ValueError:
        return text


class DuoLiftApp(MONAILabelApp):
    """The bundle's shipped models as MONAI Label infer tasks."""

    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.bundle_root = os.path.realpath(conf.get("bundle_root", os.path.join(app_dir, "..")))
        record = os.path.join(self.bundle_root, "docs", "shipped_models.json")
        if not os.path.isfile(record):
            raise MissingFileError(f"{record}: not found; --conf bundle_root must be the DuoLift bundle's folder")
        with open(record) as f:
            self.shipped = json.load(f)["models"]
        wanted = conf.get("models", "all")
        keys = [m[0] for m in MODELS.values()] if wanted == "all" else [k.strip() for k in wanted.split(",")]
        unknown = sorted(set(keys) - {m[0] for m in MODELS.values()})
        if unknown:
            raise ConfigError(f"--conf models: unknown {unknown}; choose all, double_view, single_view")
        self.keys = keys
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
        for name, (key, description) in MODELS.items():
            if key in self.keys:
                configs = self.shipped[key]["inference_configs"]
                tasks[name] = DuoLiftReconstruction(self.bundle_root, configs, description, self.overrides)
                logger.info("%s: %s with %s", name, self.shipped[key]["file"], configs)
        return tasks
