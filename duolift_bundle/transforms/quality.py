"""The quality gate of inference: inputs no chest radiograph could be are refused, not reconstructed
into a plausible-looking volume.

A case passes when every view of its input shows two lung fields, the reconstruction's
re-projection shows them where the input does (lung Dice of
:class:`~duolift_bundle.transforms.consistency.ProjectionConsistencyd`), the film covers enough
of the DRR detector's field, its intensities are near the training DRRs' and its shape is one a
chest film has. :class:`QualityGate` holds the thresholds (one home; ``inference.yaml``'s
``quality``, ``--quality_gate False`` turns the refusal off); their evidence, measured on the
shared chest CTs' DRRs and the one real film, is in the model card ("Real radiographs").

With the gate on, :class:`QualityGated` raises :class:`QualityGateError` naming every failed
check: the batch records the case as failed (``failed.json``, ``summary.json``, a non-zero exit;
the server answers 422) and writes nothing for it. With the gate off, the reasons join the case's
``quality_warnings`` and the result is written.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

from duolift_bundle.constants import VIEWS
from duolift_bundle.errors import ConfigError, DuoLiftError
from monai.transforms import Transform

__all__ = ["QualityGate", "QualityGated", "QualityGateError", "REQUEST_KEY"]

#: the config key (and server request parameter) that turns the refusal on or off
REQUEST_KEY = "quality_gate"


class QualityGateError(DuoLiftError, ValueError):
    """A case whose input fails the quality gate; the message lists every failed check."""


@dataclass(frozen=True)
class QualityGate:
    """The thresholds of the gate (see the module docstring; evidence in the model card).

    Args:
        enabled: refuse a failing case (True) or only warn (False).
        min_lung_dice: the least overlap (Dice) of the input's lung fields with the re-projection's.
        min_film_fraction: the least share of the detector field the film covers.
        max_histogram_distance: the largest 1-Wasserstein distance of the film's intensities to the
            training DRRs' reference (checked where the reference file is there).
        max_aspect: the largest ratio of a film's longer to its shorter side (in mm, or in pixels
            where the pixel size is unknown); chest films are 35 x 43 cm (1.23) to square.
        min_midline_contrast: the least brightness of a frontal film's midline over its lung
            bands (:func:`~duolift_bundle.imaging.radiograph_fields.midline_contrast`; an
            inverted film is negative).

    Lung fields must be found in the frontal view; a lateral view's lung Dice is checked where
    it can be measured (the lungs overlap there, and the detector of two lung fields often finds
    none in a lateral DRR of a real chest).
    """

    enabled: bool = True
    min_lung_dice: float = 0.6
    min_film_fraction: float = 0.6
    max_histogram_distance: float = 0.3
    max_aspect: float = 1.4
    min_midline_contrast: float = 0.1

    def __post_init__(self) -> None:
        for name in ("min_lung_dice", "min_film_fraction"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ConfigError(f"quality: {name} must be in [0, 1], got {getattr(self, name)}")
        if not self.max_histogram_distance > 0:
            raise ConfigError(f"quality: max_histogram_distance must be > 0, got {self.max_histogram_distance}")
        if not self.max_aspect >= 1.0:
            raise ConfigError(f"quality: max_aspect must be >= 1, got {self.max_aspect}")

    def reasons(self, consistency: Mapping[str, Any], inputs: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """The failed checks of one case: ``consistency`` is
        :class:`~duolift_bundle.transforms.consistency.ProjectionConsistencyd`'s scores, ``inputs``
        the radiograph reader's ``{view: info}`` (empty for a CT input)."""
        found = []
        for view in sorted({k.split("_")[0] for k in consistency if k.endswith("_lung_dice")}):
            dice = consistency.get(f"{view}_lung_dice")
            if dice is None:
                if view == VIEWS[0]:
                    found.append(f"{view}: {consistency.get(f'{view}_lung_dice_reason', 'no lung fields')}")
            elif dice < self.min_lung_dice:
                found.append(
                    f"{view}: the re-projection's lung fields overlap the input's by {dice:.2f} < {self.min_lung_dice}"
                )
        for view, info in inputs.items():
            fraction = info.get("film_fraction")
            if fraction is not None and fraction < self.min_film_fraction:
                found.append(
                    f"{view}: the film covers {fraction:.0%} of the detector field < {self.min_film_fraction:.0%}"
                )
            distance = info.get("histogram_distance")
            if distance is not None and distance > self.max_histogram_distance:
                found.append(
                    f"{view}: its intensities are {distance:.2f} from the training DRRs' > {self.max_histogram_distance}"
                )
            polarity = info.get("midline_contrast")
            if polarity is not None and polarity < self.min_midline_contrast:
                found.append(
                    f"{view}: its midline is not brighter than its lung fields ({polarity:.2f} < "
                    f"{self.min_midline_contrast}): an inverted film?"
                )
            aspect = info.get("aspect")
            if aspect is not None and aspect > self.max_aspect:
                found.append(f"{view}: its sides are {aspect:.2f} : 1, more than a chest film's {self.max_aspect} : 1")
        return found


class QualityGated(Transform):
    """Apply ``gate`` to a case after
    :class:`~duolift_bundle.transforms.consistency.ProjectionConsistencyd`: raise
    :class:`QualityGateError` (gate on) or add the reasons to ``quality_warnings`` (gate off)."""

    def __init__(self, gate: QualityGate | None = None, consistency_key: str = "consistency") -> None:
        self.gate = gate or QualityGate()
        self.consistency_key = consistency_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        inputs = json.loads(d["xray_info"]) if d.get("xray_info") else {}
        reasons = self.gate.reasons(d.get(self.consistency_key, {}), inputs)
        if reasons and self.gate.enabled:
            raise QualityGateError(
                f"{d.get('source', d.get('case'))}: refused by the quality gate ({'; '.join(reasons)}); "
                "--quality_gate False reconstructs it anyway"
            )
        known = list(d.get("quality_warnings", []))
        d["quality_warnings"] = known + [r for r in reasons if r not in known]
        return d
