"""The model registry (duolift_bundle/registry.py, models/registry.json): each entry's checks, the
shipped files it lists, and the one list everything else reads."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import sys

import pytest
from conftest import ROOT
from duolift_bundle.errors import ConfigError
from duolift_bundle.registry import LIFTS, REGISTRY, ModelSpec, load_registry

GOOD = dict(
    name="m", kind="models", title="a model", file="models/m.pt", sha256="0" * 64, views=2, size=64,
    configs=["configs/inference.yaml"], width=0.125, lift="repeat",
)  # fmt: skip


@pytest.mark.parametrize(
    "change, message",
    [
        ({"views": 3}, "views must be 1 .frontal. or 2"),
        ({"size": 40}, "size must be a positive multiple of 16"),
        ({"width": 0.0}, "width must be > 0"),
        ({"lift": "teleport"}, "lift must be one of"),
        ({"kind": "weights"}, "kind must be one of"),
        ({"configs": ["inference.yaml"]}, "configs must list the inference configs under configs/"),
        ({"sha256": "abc"}, "sha256 must be a 64-digit hex digest"),
        ({"kind": "baselines", "serve": True}, "a baseline is not served"),
    ],
)
def test_a_bad_entry_is_refused_by_the_spec_naming_the_entry(change, message):
    with pytest.raises(ConfigError, match=message) as err:
        ModelSpec(**{**GOOD, **change})
    assert str(err.value).startswith(f"{REGISTRY}: ")


def test_the_registry_lifts_are_the_networks():
    from duolift_bundle.networks.blocks import LIFT_MODES

    assert tuple(LIFTS) == tuple(LIFT_MODES)


def test_every_registered_file_is_the_one_on_disk():
    """The registry's files exist and hash to their sha256 (hashlib on the bytes)."""
    registry = load_registry(ROOT)
    assert [m.name for m in registry.served()] == ["double_view", "single_view"]
    for file, digest in registry.shipped_files().items():
        assert hashlib.sha256((ROOT / file).read_bytes()).hexdigest() == digest, file


@pytest.mark.parametrize("key", ["double_view", "single_view", "phantom_only"])
def test_each_model_loads_into_its_configs(key):
    """A model's weights load into the network its configs build, with its views, size and width."""
    from duolift_bundle.networks import load_generator
    from monai.bundle import ConfigParser

    spec = load_registry(ROOT).models[key]
    parser = ConfigParser()
    parser.read_config([str(ROOT / c) for c in spec.configs])
    parser.update({"bundle_root": str(ROOT), **spec.overrides})
    assert (parser["views"], parser["size"], parser["width"], parser["lift"]) == (
        spec.views, spec.size, spec.width, spec.lift,
    )  # fmt: skip
    load_generator(parser.get_parsed_content("network_def"), ROOT / spec.file)


def _script(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def bundle_with_a_new_model(tmp_path):
    """The bundle (its folders linked) with a copy of the registry holding one more served model,
    ``extra``: the phantom-only weights under a new name."""
    root = tmp_path / "bundle"
    root.mkdir()
    for name in ("configs", "duolift_bundle", "docs", "LICENSE"):
        os.symlink(ROOT / name, root / name)
    shutil.copytree(ROOT / "models", root / "models", symlinks=True, ignore=shutil.ignore_patterns("*.ts"))
    shutil.copyfile(ROOT / "models" / "phantom_cnn.pt", root / "models" / "extra.pt")
    doc = json.loads((ROOT / REGISTRY).read_text())
    doc["models"]["extra"] = {
        **doc["models"]["phantom_only"],
        "title": "an extra model",
        "file": "models/extra.pt",
        "serve": True,
        "description": "an extra model",
    }
    (root / REGISTRY).write_text(json.dumps(doc))
    return root


def test_a_model_added_to_the_registry_appears_everywhere(bundle_with_a_new_model, tmp_path):
    """One new registry entry, no other edit: it is one of the quick start's methods, one of the
    MONAI Label app's tasks and part of the zoo export (with its weights)."""
    root = bundle_with_a_new_model
    methods = {
        folder: (name, configs, overrides) for name, folder, configs, overrides in _script("quickstart").methods(root)
    }
    assert methods["extra"] == (
        "an extra model",
        ["configs/inference.yaml", "configs/evaluate.yaml"],
        {"ckpt_path": "models/extra.pt", "refine_steps": 0},
    )
    assert list(methods)[:4] == ["double_view", "single_view", "phantom_only", "extra"]
    sys.path.insert(0, str(ROOT / "monailabel_app"))
    try:
        served_models = pytest.importorskip("main", reason="MONAI Label is not installed").served_models
    finally:
        sys.path.remove(str(ROOT / "monailabel_app"))
    assert [m.task for m in served_models(str(root))] == ["duolift_double_view", "duolift_single_view", "duolift_extra"]
    with pytest.raises(ConfigError, match="unknown \\['nope'\\]"):
        served_models(str(root), "double_view,nope")
    exported = _script("export_zoo_bundle").export(str(tmp_path / "zoo"), bundle_root=root)
    assert (exported / "models" / "extra.pt").read_bytes() == (ROOT / "models" / "phantom_cnn.pt").read_bytes()
    assert "extra" in json.loads((exported / REGISTRY).read_text())["models"]
