"""Histogram matching to the training DRRs (duolift_bundle/inputs/radiograph_contrast.py)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from duolift_bundle.inputs.radiograph_contrast import (
    XRayReferenceError,
    load_reference,
    match_to_reference,
    reference_quantiles,
    write_reference,
)


@pytest.fixture()
def reference():
    rng = np.random.default_rng(0)
    drrs = [rng.beta(5, 3, size=(64, 64)), rng.beta(4, 3, size=(64, 64))]
    return np.asarray(reference_quantiles(drrs)), np.concatenate([d.ravel() for d in drrs])


@pytest.mark.parametrize(
    "display", [lambda x: x, lambda x: x**0.5, lambda x: np.exp(3 * x), lambda x: 1 / (1 + np.exp(-10 * (x - 0.4)))]
)
def test_a_monotonic_display_mapping_is_undone(reference, display):
    """Matching depends on ranks only: any increasing look-up table gives the same output, and
    its distribution is the reference's (checked with numpy's quantiles)."""
    quantiles, pooled = reference
    rng = np.random.default_rng(1)
    film = rng.uniform(size=(48, 48))
    plain = match_to_reference(film, quantiles)
    np.testing.assert_allclose(match_to_reference(display(film), quantiles), plain, atol=1e-3)  # float32 ties
    probs = np.linspace(0.05, 0.95, 19)
    np.testing.assert_allclose(np.quantile(plain, probs), np.quantile(pooled, probs), atol=0.02)


def test_only_the_film_is_matched(reference):
    quantiles, _ = reference
    film = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    out = match_to_reference(film, quantiles, mask)
    np.testing.assert_array_equal(out[~mask], film[~mask].astype(np.float32))
    assert np.all(np.diff(out[mask]) >= 0)  # order kept


def test_reference_files(tmp_path, reference):
    quantiles, _ = reference
    path = tmp_path / "ref.json"
    write_reference(path, {"frontal": quantiles, "lateral": quantiles}, source="test", geometry="g")
    loaded = load_reference(path, ["frontal", "lateral"])
    np.testing.assert_allclose(loaded["frontal"], quantiles, atol=1e-6)
    with pytest.raises(XRayReferenceError, match="not found"):
        load_reference(tmp_path / "none.json", ["frontal"])
    path.write_text(json.dumps({"views": {"frontal": [0.3, 0.1]}}))
    with pytest.raises(XRayReferenceError, match="lateral"):
        load_reference(path, ["frontal", "lateral"])
    with pytest.raises(XRayReferenceError, match="not an increasing list"):
        load_reference(path, ["frontal"])


def test_histogram_distance_is_the_wasserstein_distance(reference):
    """Against scipy's 1-Wasserstein distance between the samples, and by hand."""
    from duolift_bundle.inputs.radiograph_contrast import histogram_distance
    from scipy.stats import wasserstein_distance

    quantiles, pooled = reference
    film = np.random.default_rng(2).beta(2, 5, size=(64, 64))
    assert histogram_distance(film, quantiles) == pytest.approx(wasserstein_distance(film.ravel(), pooled), abs=5e-3)
    assert histogram_distance(np.full((8, 8), 0.5), np.linspace(0, 1, 257)) == pytest.approx(0.25, abs=1e-3)
