"""The model registry: the one list of the bundle's shipped models and baselines (``models/registry.json``).

Each entry is a :class:`ModelSpec`: what the weights are (file and sha256), what network they fit
(views, size, width, lift) and how to run them (the inference configs and any config overrides,
in the order ``python -m monai.bundle run`` merges them). Everything that lists models reads this
file and nothing else: the quick start's methods, the MONAI Label app's infer tasks (the entries
with ``serve``), the zoo export's files, the record scripts and the shipped-file guard
(:mod:`duolift_bundle.shipped`). The measurements of each entry (training curves, sample
metrics, leave-one-out folds) live in its ``record`` under ``docs/``.

The checks of a model's settings live in :class:`ModelSpec` itself: a registry with a bad entry
fails to load with a message naming the entry and the setting.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from duolift_bundle.constants import view_names
from duolift_bundle.errors import ConfigError, MissingFileError
from duolift_bundle.io_utils import read_json

__all__ = ["REGISTRY", "KINDS", "LIFTS", "ModelSpec", "Registry", "load_registry"]

#: the registry file, relative to the bundle root
REGISTRY = "models/registry.json"
#: the registry's sections: trained networks, and volumes that see no X-ray
KINDS = ("models", "baselines")
#: the lifts a shipped network may use (``networks.blocks.LIFT_MODES``; repeated here so that
#: reading the registry does not import torch, and checked equal by the registry's tests)
LIFTS = ("repeat", "conv", "backproject")
#: the evaluation config, merged right after the first inference config (quick start, records)
EVALUATE_CONFIG = "configs/evaluate.yaml"


@dataclass(frozen=True)
class ModelSpec:
    """One shipped model or baseline.

    Args:
        name: the registry key (``double_view``); the quick start's output folder.
        kind: ``"models"`` (a network's weights, loaded by ``ckpt_path``) or ``"baselines"`` (a
            volume, loaded by ``baseline_volume``).
        title: the name of its row in tables (``"DuoLift-CNN double view"``).
        file: the weights (or volume) file, relative to the bundle root.
        sha256: the file's recorded hash (the shipped-file guard refuses to overwrite it).
        views: 1 (frontal) or 2 (frontal + lateral) X-ray inputs.
        size: the volume's side in voxels (the protocol's ``size``).
        configs: the inference configs, relative to the bundle root, in merge order.
        width: the generator's channel width factor (models only).
        lift: the generator's lift (models only).
        overrides: config keys set after the configs (``{"refine_steps": 0}``).
        description: a sentence for the MONAI Label app's task list.
        serve: offered as an infer task of the MONAI Label app.
        figure: its label in the quick start's figures (not drawn when empty).
        record: the docs file that holds its measurements.
    """

    name: str
    kind: str
    title: str
    file: str
    sha256: str
    views: int
    size: int
    configs: tuple[str, ...]
    width: float | None = None
    lift: str | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""
    serve: bool = False
    figure: str = ""
    record: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "configs", tuple(self.configs))
        object.__setattr__(self, "overrides", dict(self.overrides))
        where = f"{REGISTRY}: {self.kind}.{self.name}"
        if self.kind not in KINDS:
            raise ConfigError(f"{where}: kind must be one of {KINDS}, got {self.kind!r}")
        try:
            view_names(self.views)
        except ConfigError as err:
            raise ConfigError(f"{where}: {err}") from None
        if not isinstance(self.size, int) or self.size <= 0 or self.size % 16:
            raise ConfigError(f"{where}: size must be a positive multiple of 16, got {self.size!r}")
        if not self.configs or not all(c.startswith("configs/") for c in self.configs):
            raise ConfigError(f"{where}: configs must list the inference configs under configs/, got {self.configs}")
        if len(self.sha256) != 64:
            raise ConfigError(f"{where}: sha256 must be a 64-digit hex digest, got {self.sha256!r}")
        if self.kind == "models":
            if self.width is None or not self.width > 0:
                raise ConfigError(f"{where}: width must be > 0, got {self.width!r}")
            if self.lift not in LIFTS:
                raise ConfigError(f"{where}: lift must be one of {LIFTS}, got {self.lift!r}")
        elif self.serve:
            raise ConfigError(f"{where}: a baseline is not served (serve must be false)")

    @property
    def task(self) -> str:
        """The MONAI Label infer task's name."""
        return f"duolift_{self.name}"

    def weights_override(self) -> dict[str, str]:
        """The config key that loads the file: ``ckpt_path`` (models) or ``baseline_volume``."""
        return {"ckpt_path" if self.kind == "models" else "baseline_volume": self.file}

    def evaluation_configs(self) -> list[str]:
        """The configs of ``run evaluating``: ``evaluate.yaml`` right after the first inference config."""
        return [self.configs[0], EVALUATE_CONFIG, *self.configs[1:]]


@dataclass(frozen=True)
class Registry:
    """The registry's entries, in file order: ``models`` then ``baselines``; ``files``: other
    shipped files (``{name: {"file", "sha256", "record"}}``)."""

    models: dict[str, ModelSpec]
    baselines: dict[str, ModelSpec]
    files: dict[str, dict]

    def entries(self) -> list[ModelSpec]:
        return [*self.models.values(), *self.baselines.values()]

    def served(self) -> list[ModelSpec]:
        return [m for m in self.models.values() if m.serve]

    def shipped_files(self) -> dict[str, str]:
        """``{file: sha256}`` of every shipped file (weights, volumes, other files)."""
        found = {m.file: m.sha256 for m in self.entries()}
        found.update({f["file"]: f["sha256"] for f in self.files.values()})
        return found


def load_registry(bundle_root: str | os.PathLike) -> Registry:
    """The registry of the bundle at ``bundle_root`` (``models/registry.json``).

    Raises:
        MissingFileError: no registry there (``bundle_root`` is not the bundle's folder).
        ConfigError: an entry with a missing or bad setting (named with the entry).
    """
    path = Path(bundle_root) / REGISTRY
    if not path.is_file():
        raise MissingFileError(f"{path}: no model registry; bundle_root must be the DuoLift bundle's folder")
    doc = read_json(path)
    sections = {}
    for kind in KINDS:
        sections[kind] = {}
        for name, entry in (doc.get(kind) or {}).items():
            try:
                sections[kind][name] = ModelSpec(name=name, kind=kind, **entry)
            except TypeError as err:  # a missing or unknown key
                raise ConfigError(f"{path}: {kind}.{name}: {err}") from None
    return Registry(models=sections["models"], baselines=sections["baselines"], files=dict(doc.get("files") or {}))
