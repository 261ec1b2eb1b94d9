"""The quality gate (duolift_bundle/transforms/quality.py): each check by hand, refusal or warning."""

from __future__ import annotations

import json

import pytest
from duolift_bundle.errors import ConfigError
from duolift_bundle.transforms.quality import QualityGate, QualityGated, QualityGateError

GOOD_INFO = {"film_fraction": 1.0, "histogram_distance": 0.1, "aspect": 1.06}


@pytest.mark.parametrize(
    "consistency, info, words",
    [
        ({"frontal_lung_dice": 0.9}, GOOD_INFO, None),
        ({"frontal_lung_dice": 0.6}, GOOD_INFO, None),  # the threshold itself passes
        ({"frontal_lung_dice": 0.59}, GOOD_INFO, "overlap the input's by 0.59 < 0.6"),
        ({"frontal_lung_dice": None, "frontal_lung_dice_reason": "no two lung fields found in the input"}, GOOD_INFO,
         "frontal: no two lung fields found in the input"),
        ({"frontal_lung_dice": 0.9}, {**GOOD_INFO, "film_fraction": 0.5}, "covers 50% of the detector field < 60%"),
        ({"frontal_lung_dice": 0.9}, {**GOOD_INFO, "histogram_distance": 0.31}, "0.31 from the training DRRs' > 0.3"),
        ({"frontal_lung_dice": 0.9}, {**GOOD_INFO, "aspect": 1.5}, "its sides are 1.50 : 1"),
        ({"frontal_lung_dice": 0.9}, {"film_fraction": 1.0}, None),  # no reference, no aspect: not checked
        ({"frontal_lung_dice": 0.9}, {**GOOD_INFO, "midline_contrast": -0.37}, "an inverted film?"),
        ({"frontal_lung_dice": 0.9}, {**GOOD_INFO, "midline_contrast": 0.1}, None),
    ],
)  # fmt: skip
def test_each_check(consistency, info, words):
    reasons = QualityGate().reasons(consistency, {"frontal": info})
    if words is None:
        assert reasons == []
    else:
        assert len(reasons) == 1 and words in reasons[0] and reasons[0].startswith("frontal: ")


def test_a_failing_case_is_refused_with_every_reason_or_warned_about():
    item = {
        "case": "c",
        "source": "in/c/frontal.png",
        "consistency": {"frontal_lung_dice": 0.2},
        "xray_info": json.dumps({"frontal": {"film_fraction": 0.3, "aspect": 2.0}}),
        "quality_warnings": ["frontal: an earlier note"],
    }
    with pytest.raises(QualityGateError, match="in/c/frontal.png: refused by the quality gate") as err:
        QualityGated()(item)
    assert str(err.value).count("frontal: ") == 3 and "--quality_gate False" in str(err.value)
    out = QualityGated(QualityGate(enabled=False))(item)
    assert out["quality_warnings"][0] == "frontal: an earlier note" and len(out["quality_warnings"]) == 4
    assert QualityGated()({"case": "ct", "consistency": {"frontal_lung_dice": 0.95}})["quality_warnings"] == []


@pytest.mark.parametrize(
    "settings, words",
    [
        ({"min_lung_dice": 1.5}, "min_lung_dice"),
        ({"max_aspect": 0.5}, "max_aspect"),
        ({"max_histogram_distance": 0}, "max_histogram_distance"),
    ],
)
def test_impossible_thresholds_are_refused(settings, words):
    with pytest.raises(ConfigError, match=words):
        QualityGate(**settings)


def test_a_lateral_view_without_lung_fields_passes_a_frontal_one_does_not():
    """The two-lung-field detector often finds none in a lateral DRR of a real chest (the lungs
    overlap there): that view's Dice is checked only where it was measured."""
    unmeasured = {"lung_dice": None, "lung_dice_reason": "no two lung fields found in the input"}
    lateral = {f"lateral_{k}": v for k, v in unmeasured.items()}
    assert QualityGate().reasons({"frontal_lung_dice": 0.9, **lateral}, {}) == []
    frontal = {f"frontal_{k}": v for k, v in unmeasured.items()}
    assert QualityGate().reasons({**frontal, "lateral_lung_dice": 0.9}, {}) == [
        "frontal: no two lung fields found in the input"
    ]
    assert QualityGate().reasons({"frontal_lung_dice": 0.9, "lateral_lung_dice": 0.4}, {})[0].startswith("lateral: ")


def test_the_polarity_of_films_and_drrs():
    """midline_contrast on the sample's frontal DRR and on its inverse (numpy's 1 - x)."""
    import nibabel as nib
    from duolift_bundle.datasets.sample import sample_dir
    from duolift_bundle.imaging.radiograph_fields import midline_contrast

    drr = nib.load(sample_dir(64) / "normal001" / "xray_frontal.nii.gz").get_fdata()
    assert midline_contrast(drr) > 0.2 and midline_contrast(1.0 - drr) == pytest.approx(-midline_contrast(drr))
    assert midline_contrast(drr * 0.0) == 0.0
