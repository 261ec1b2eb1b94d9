"""The shipped-file guard: the registry's hashes, refusal by content, deliberate replace."""

from __future__ import annotations

import hashlib
import json

import pytest
from conftest import ROOT
from duolift_bundle.shipped import ShippedFileError, file_sha256, recorded_hashes, refuse_shipped


def _entry(file: str, digest: str, **more) -> dict:
    return {"title": file, "file": file, "sha256": digest, "views": 2, "size": 64,
            "configs": ["configs/inference.yaml"], **more}  # fmt: skip


def _bundle(tmp_path, shipped: bytes, baseline: bytes, phantom: bytes):
    """A bundle root whose models/registry.json lists three files: two models and a baseline."""
    (tmp_path / "models").mkdir()
    digest = {
        k: hashlib.sha256(v).hexdigest() for k, v in (("model", shipped), ("baseline", baseline), ("phantom", phantom))
    }
    net = {"width": 0.125, "lift": "repeat"}
    (tmp_path / "models" / "registry.json").write_text(json.dumps({
        "models": {"double_view": _entry("models/model.pt", digest["model"], **net),
                   "phantom_only": _entry("models/phantom_cnn.pt", digest["phantom"], **net)},
        "baselines": {"mean": _entry("models/baselines/mean.nii.gz", digest["baseline"])}}))  # fmt: skip
    return digest


def test_recorded_hashes_are_the_registry_s(tmp_path):
    digest = _bundle(tmp_path, b"weights", b"mean", b"phantom")
    assert recorded_hashes(tmp_path) == {
        digest["model"]: "models/registry.json: models/model.pt",
        digest["baseline"]: "models/registry.json: models/baselines/mean.nii.gz",
        digest["phantom"]: "models/registry.json: models/phantom_cnn.pt",
    }
    assert recorded_hashes(tmp_path / "nowhere") == {}


@pytest.mark.parametrize(
    "content, free", [(None, True), (b"a run's own weights", True), (b"weights", False), (b"phantom", False)]
)
def test_refuse_shipped_by_content_wherever_it_lies(tmp_path, content, free):
    _bundle(tmp_path, b"weights", b"mean", b"phantom")
    path = tmp_path / "runs" / "x" / "models" / "model.pt"  # not under models/: content decides
    if content is not None:
        path.parent.mkdir(parents=True)
        path.write_bytes(content)
    if free:
        assert refuse_shipped(path, tmp_path) is True
        return
    with pytest.raises(
        ShippedFileError, match="this is a shipped file .sha256 recorded in models/registry.json"
    ) as err:
        refuse_shipped(path, tmp_path)
    assert str(path) in str(err.value) and "--replace_shipped True" in str(err.value)
    assert refuse_shipped(path, tmp_path, replace=True) is False
    assert path.read_bytes() == content  # the guard only looks


def test_every_shipped_file_of_the_bundle_is_guarded():
    """Each weights / baseline file under models/ is recognised as shipped (hashlib on its bytes)."""
    recorded = recorded_hashes(ROOT)
    files = [p for p in (ROOT / "models").rglob("*") if p.is_file() and p.suffix in (".pt", ".gz")]
    files.append(ROOT / "models" / "xray_reference.json")
    assert files
    for path in files:
        assert hashlib.sha256(path.read_bytes()).hexdigest() in recorded, path
        assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
