"""Reading an inference case: radiograph files, or a CT whose X-rays are simulated.

A case (:func:`inference_items`, from :func:`~duolift_bundle.inputs.discovery.discover_cases`) is

- a folder holding ``frontal*`` and (double view) ``lateral*`` radiographs (PNG / JPEG, 2D NIfTI
  or DICOM; :mod:`duolift_bundle.inputs.radiograph_io`); its reconstruction gets the protocol's default
  placement, since a radiograph carries no 3D position; or
- a CT (a DICOM series folder, a 3D NIfTI / MHD / NRRD file): the raw chain
  (:func:`~duolift_bundle.datasets.raw_chain.raw_ct_chain`) brings it to the protocol and simulates
  its DRRs (the round trip used for evaluation); the protocol volume is kept as ``ct`` (a
  MetaTensor), so the reconstruction lies on top of the source CT in world space.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from duolift_bundle.constants import CT_KEY, XRAY_KEY, view_names
from duolift_bundle.datasets.raw_chain import raw_ct_chain
from duolift_bundle.geometry import Protocol
from duolift_bundle.inputs.discovery import discover_cases
from duolift_bundle.inputs.radiograph import RadiographSettings, load_radiograph
from duolift_bundle.inputs.radiograph_io import XRayInputError
from monai.transforms import Transform

__all__ = ["inference_items", "LoadInferenceCase"]

logger = logging.getLogger(__name__)


def inference_items(source: str | os.PathLike, views: int = 2) -> list[dict]:
    """The cases under ``source`` as dataset items ``{"case", "kind", "frontal"[, "lateral"]}``
    or ``{"case", "kind", "ct"[, "series"]}``, sorted by case id; folders that are no case are
    logged with their reason. A radiograph folder without the views the model needs is an item
    ``{"case", "kind", "error"}``: :class:`LoadInferenceCase` raises its error, so a batch reports
    it as a failed case and goes on.

    Raises:
        InputNotFoundError / NoCaseFoundError: ``source`` does not exist or holds no case.
    """
    found = discover_cases(source, xray_cases=True, views=views)
    items = []
    for case in found.cases:
        if case.error:
            items.append({"case": case.case_id, "kind": case.kind, "error": case.error})
        elif case.kind == "xray":
            items.append({"case": case.case_id, "kind": "xray", **case.views})
        else:
            items.append({"case": case.case_id, "kind": "ct", CT_KEY: case.path, "series": case.series})
    return items


class LoadInferenceCase(Transform):
    """An item of :func:`inference_items` -> ``{"case", "kind", "source", "xray" (V, S, S)}``, plus
    ``"ct"`` (the protocol volume, a MetaTensor in [0, 1]) for CT cases and ``"xray_info"``, the
    JSON text of ``{view: info}`` (pixel size and its source, flips, notes; text, so that it
    passes collation and decollation unchanged) for radiograph cases.

    Radiograph files go through :func:`~duolift_bundle.inputs.radiograph.load_radiograph` with
    ``settings``, the :class:`~duolift_bundle.inputs.radiograph.RadiographSettings` that
    ``inference.yaml`` builds from its ``xray_*`` keys (the defaults' when None)."""

    def __init__(
        self, views: int = 2, protocol: Protocol | None = None, settings: RadiographSettings | None = None
    ) -> None:
        self.views = views
        view_names(views)
        self.protocol = protocol or Protocol()
        self.settings = settings or RadiographSettings()
        if self.settings.contrast == "histogram":  # a missing or bad reference stops the run before the first case
            for view in view_names(views):
                self.settings.reference_quantiles(view)
        self._ct_chain = None

    def __call__(self, data: Mapping[str, Any]) -> dict:
        item = dict(data)
        if item.get("error"):
            raise XRayInputError(item["error"])
        if item.get("kind") == "ct":
            if self._ct_chain is None:
                self._ct_chain = raw_ct_chain(self.protocol, self.views)
            out = self._ct_chain({"case": item["case"], CT_KEY: item[CT_KEY], "series": item.get("series")})
            return {
                "case": item["case"],
                "kind": "ct",
                "source": str(item[CT_KEY]),
                XRAY_KEY: torch.as_tensor(np.asarray(out[XRAY_KEY]), dtype=torch.float32),
                CT_KEY: out[CT_KEY],
            }
        wanted = view_names(self.views)
        images, info = [], {}
        for view in wanted:
            image, info[view] = load_radiograph(item[view], view, self.protocol, self.settings)
            images.append(image)
        return {
            "case": item["case"],
            "kind": "xray",
            "source": ", ".join(str(item[v]) for v in wanted),
            XRAY_KEY: torch.as_tensor(np.stack(images)),
            "xray_info": json.dumps(info),
        }
