"""The sample data embedded in the package (``duolift_bundle/sample_data``; see its README)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

__all__ = ["sample_dir", "sample_datalist"]


def sample_dir() -> Path:
    """Folder of the embedded sample cases (a real chest CT and two phantoms, prepared)."""
    return Path(str(resources.files("duolift_bundle") / "sample_data"))


def sample_datalist() -> Path:
    """``datalist.json`` of the sample cases (all in the ``test`` split)."""
    return sample_dir() / "datalist.json"
