"""The sample data embedded in the package (``duolift_bundle/sample_data``; see its README)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from duolift_bundle.errors import ConfigError, MissingFileError

__all__ = ["SIZES", "REAL_RADIOGRAPH", "sample_dir", "sample_datalist", "real_radiograph"]


SIZES = (128, 64)


def sample_dir(size: int = 128) -> Path:
    """Folder of the embedded sample cases (a real chest CT and two phantoms) prepared at ``size``^3:
    128 (the paper's protocol) or 64 (the size of the shipped CPU models, ``models/registry.json``)."""
    if int(size) not in SIZES:
        raise ConfigError(f"the embedded sample is prepared at {SIZES[0]}^3 and {SIZES[1]}^3, not {size}^3")
    root = Path(str(resources.files("duolift_bundle") / "sample_data"))
    return root if int(size) == 128 else root / f"size{int(size)}"


def sample_datalist(size: int = 128) -> Path:
    """``datalist.json`` of the sample cases at ``size``^3 (all in the ``test`` split)."""
    return sample_dir(size) / "datalist.json"


#: the one real chest radiograph on PyPI: pydicom-data's PA film (CR, MONOCHROME1, 1955 x 1841,
#: PixelSpacing 0, no lateral view, no CT; MIT licence)
REAL_RADIOGRAPH = "RG1_UNCI.dcm"


def real_radiograph() -> Path:
    """Path of :data:`REAL_RADIOGRAPH` from the ``pydicom-data`` package (the ``test`` extra),
    never downloaded.

    Raises:
        FileNotFoundError: ``pydicom-data`` is not installed (``pip install pydicom-data==1.0.0``).
    """
    from pydicom.data import get_testdata_file

    path = get_testdata_file(REAL_RADIOGRAPH, download=False)
    if not path:
        raise MissingFileError(
            f"{REAL_RADIOGRAPH}: not found; install the pydicom-data package (pip install pydicom-data==1.0.0)"
        )
    return Path(path)
