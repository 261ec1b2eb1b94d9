"""Each setting has one home: every typed spec refuses a bad value with its own check (the one error
a user sees, whichever consumer the value reached), and the literals that used to be repeated
across the package are written once."""

from __future__ import annotations

import re

import pytest
from conftest import ROOT
from duolift_bundle.errors import ConfigError

SPEC_CHECKS = [
    (
        "CTProtocol",
        lambda: __import__("duolift_bundle.geometry").geometry.CTProtocol(hu_window=(100, -100)),
        "hu_window",
    ),
    ("DRRGeometry", lambda: __import__("duolift_bundle.geometry").geometry.DRRGeometry(sad=1000.0, sid=900.0), "sad"),
    (
        "DRRSettings",
        lambda: __import__("duolift_bundle.geometry").geometry.DRRSettings(normalize="zscore"),
        "normalize",
    ),
    (
        "TableRemoval",
        lambda: __import__("duolift_bundle.geometry").geometry.TableRemoval(opening_mm=-1.0),
        "opening_mm",
    ),
    (
        "TableRemoval",
        lambda: __import__("duolift_bundle.geometry").geometry.TableRemoval(min_enclosed=1.5),
        "min_enclosed",
    ),
]


def _radiograph(**kw):
    from duolift_bundle.inputs.radiograph import RadiographSettings

    return RadiographSettings(**kw)


SPEC_CHECKS += [
    ("RadiographSettings", lambda: _radiograph(magnification=0.5), "xray_magnification must be >= 1"),
    ("RadiographSettings", lambda: _radiograph(placement="stretch"), "xray_placement must be one of"),
    ("RadiographSettings", lambda: _radiograph(normalize="zscore"), "xray_normalize must be one of"),
]


@pytest.mark.parametrize("spec, make, words", SPEC_CHECKS, ids=[f"{s}-{w}" for s, _, w in SPEC_CHECKS])
def test_each_spec_refuses_a_bad_value_itself(spec, make, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        make()


def _views_consumers():
    """Every place a ``views`` setting arrives: each must raise the one check's error."""
    from duolift_bundle.datasets.augmentation import drr_augmentation
    from duolift_bundle.datasets.inference_case import LoadInferenceCase
    from duolift_bundle.datasets.raw_chain import raw_ct_chain
    from duolift_bundle.datasets.routes import xray_keys
    from duolift_bundle.inputs.x2ct_h5 import LoadX2CTH5d
    from duolift_bundle.networks import DuoLiftGenerator, X2CTGenerator
    from duolift_bundle.transforms.consistency import ProjectionConsistencyd

    return {
        "generator": lambda: DuoLiftGenerator(views=3, image_size=32, volume_size=32, width=0.0625),
        "x2ct generator": lambda: X2CTGenerator(views=3, image_size=32),
        "raw chain": lambda: raw_ct_chain(views=3),
        "prepared route": lambda: xray_keys(3),
        "augmentation": lambda: drr_augmentation(views=3),
        "hdf5 route": lambda: LoadX2CTH5d(views=3),
        "inference cases": lambda: LoadInferenceCase(views=3),
        "consistency": lambda: ProjectionConsistencyd(views=3),
    }


@pytest.mark.parametrize("consumer", list(_views_consumers()))
def test_a_bad_views_value_gets_the_one_check_everywhere(consumer):
    with pytest.raises(ConfigError, match=re.escape("views must be 1 (frontal) or 2 (frontal + lateral), got 3")):
        _views_consumers()[consumer]()


def _sources() -> dict[str, str]:
    files = [
        *(ROOT / "duolift_bundle").rglob("*.py"),
        *(ROOT / "scripts").glob("*.py"),
        *(ROOT / "configs").glob("*.yaml"),
    ]
    files += [*(ROOT / "monailabel_app").rglob("*.py")]
    return {str(p.relative_to(ROOT)): p.read_text() for p in files}


@pytest.mark.parametrize(
    "what, pattern, home",
    [
        ("the HU window's upper end", r"\b1476\b", "duolift_bundle/geometry.py"),
        ("the HU window as a pair", r"-1024(\.0)?\s*,\s*1476", "duolift_bundle/geometry.py"),
        (
            "the PA film's magnification",
            r"(?i)magnification\w*\s*(:\s*float\s*)?[:=]\s*1\.10?\b",
            "duolift_bundle/inputs/radiograph_placement.py",
        ),
        ("the views check", r"views must be 1", "duolift_bundle/constants.py"),
        ("the views test", r"views not in \(1, 2\)", "duolift_bundle/constants.py"),
        ("the adversarial modes", r"\(\"bce\", \"lsgan\"\)", "duolift_bundle/losses.py"),
        ("the request settings", r"\"xray_pixel_spacing\"", None),
        ("the served models", r"duolift_double_view", None),
    ],
)
def test_a_setting_that_was_repeated_has_one_home(what, pattern, home):
    """``grep`` of the literals that were kept in step by hand: found in one file (or none, where
    the value is now derived: the request settings from RadiographSettings, the task names from
    the registry)."""
    found = sorted(name for name, text in _sources().items() if re.search(pattern, text, flags=re.M))
    assert found == ([home] if home else []), what
