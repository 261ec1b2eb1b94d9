"""Train / validation / test splits.

- ``"x2ct"``: LIDC-IDRI cases. The test set is X2CT-GAN's 102 cases (``x2ct_lists/test.txt``,
  matched by patient id); the other cases are X2CT's 916 training cases, of which DuoLift-GAN held
  out 100 for validation (816 / 100). The paper does not list those 100: we take the
  ``round(n * 100 / 916)`` cases with the smallest seeded hash, i.e. exactly 100 on the full set.
- ``"seeded"``: any other data. Each case goes to a split by a seeded hash of its id, so a case
  keeps its split when more cases are prepared later (no leakage across re-runs). A small set
  where no hash falls in the validation band (8 or 12 phantoms at 10 %) would leave training
  without validation: then the training case whose hash lies nearest the band moves to
  validation, with a warning naming it. It moves back to training once a later, larger set has a
  validation case of its own; test cases never move.
- ``"auto"``: ``"x2ct"`` when every case id carries a LIDC-IDRI patient id, else ``"seeded"``.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from functools import lru_cache
from importlib import resources

from duolift_bundle.errors import ConfigError
from duolift_bundle.inputs.discovery import lidc_patient_id

__all__ = ["SPLITS", "x2ct_test_patients", "assign_splits"]

logger = logging.getLogger(__name__)

SPLITS = ("training", "validation", "test")
X2CT_TRAIN_SIZE = 916
PAPER_VALIDATION_SIZE = 100


@lru_cache(maxsize=1)
def x2ct_test_patients() -> frozenset[str]:
    """Patient ids of X2CT-GAN's 102 LIDC-IDRI test cases."""
    text = resources.files("duolift_bundle.datasets").joinpath("x2ct_lists/test.txt").read_text()
    return frozenset(pid for line in text.split() if (pid := lidc_patient_id(line)))


def _unit_hash(case_id: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{case_id}".encode()).hexdigest()
    return int(digest[:12], 16) / float(16**12)


def assign_splits(
    case_ids: Iterable[str],
    scheme: str = "auto",
    fractions: Sequence[float] = (0.8, 0.1, 0.1),
    seed: int = 0,
) -> dict[str, str]:
    """Map each case id to ``"training"``, ``"validation"`` or ``"test"`` (see module docstring)."""
    ids = sorted(set(case_ids))
    if scheme == "auto":
        scheme = "x2ct" if ids and all(lidc_patient_id(c) for c in ids) else "seeded"
    if scheme == "x2ct":
        test = x2ct_test_patients()
        out = {c: "test" for c in ids if lidc_patient_id(c) in test}
        pool = sorted((c for c in ids if c not in out), key=lambda c: _unit_hash(c, seed))
        n_val = round(len(pool) * PAPER_VALIDATION_SIZE / X2CT_TRAIN_SIZE)
        out.update({c: ("validation" if i < n_val else "training") for i, c in enumerate(pool)})
        return out
    if scheme != "seeded":
        raise ConfigError(f"split scheme must be 'auto', 'x2ct' or 'seeded', got {scheme!r}")
    f_train, f_val, f_test = (float(f) for f in fractions)
    if min(f_train, f_val, f_test) < 0 or abs(f_train + f_val + f_test - 1.0) > 1e-6:
        raise ConfigError(f"split fractions must be >= 0 and sum to 1, got {tuple(fractions)}")
    unit = {c: _unit_hash(c, seed) for c in ids}
    out = {c: "training" if h < f_train else ("validation" if h < f_train + f_val else "test") for c, h in unit.items()}
    training = [c for c in ids if out[c] == "training"]
    if f_val > 0 and "validation" not in out.values() and len(training) >= 2:
        moved = max(training, key=unit.get)  # the nearest to the validation band
        out[moved] = "validation"
        logger.warning(
            "%d case(s), none in the validation split by its seeded hash (fraction %g): moved %s from "
            "training to validation so that training validates (a larger set gets its own validation cases)",
            len(ids),
            f_val,
            moved,
        )
    return out
