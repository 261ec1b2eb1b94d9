"""Training sets that mix prepared sources: real CTs held out one at a time, plus phantoms.

The shipped models train on the shared real CTs (``../shared/data/chest-ct-dicom``) and on
phantoms; the recipe is chosen by leave-one-out across the real CTs. :func:`compose_datalist`
writes the ``datalist.json`` of one such set from prepared datalists (``scripts/prepare_data.py``,
``scripts/make_phantoms.py``):

- ``training``: every real case not held out, listed ``real_repeats`` times (with the on-the-fly
  augmentation, ``train.yaml``'s ``augment: true``, each listing is a different augmented pair),
  plus the phantoms' training and validation cases;
- ``validation``: the held-out real case(s) (the leave-one-out fold's test case; the shipped
  models keep their final weights, so validation only reports);
- ``test``: empty.

File paths are written relative to the new datalist, so the folder tree moves as a whole; only
the entries every item has are kept (a batch of mixed sources must collate).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from duolift_bundle.datasets.routes import load_datalist
from duolift_bundle.datasets.splits import SPLITS
from duolift_bundle.errors import ConfigError, InputFileError
from duolift_bundle.io_utils import write_json

__all__ = ["compose_datalist"]


def _relative(item: dict, base: str) -> dict:
    return {k: (os.path.relpath(v, base) if isinstance(v, str) and os.path.isabs(v) else v) for k, v in item.items()}


def compose_datalist(
    out: str | os.PathLike,
    real: str | os.PathLike,
    holdout: Sequence[str] = (),
    phantoms: str | os.PathLike | None = None,
    real_repeats: int = 1,
    views: int = 2,
) -> dict:
    """Write ``out`` (a ``datalist.json``) and return its content.

    Args:
        out: the datalist to write.
        real: a prepared datalist of real CTs (every split is used).
        holdout: case ids (or unique parts of them, e.g. ``"normal001"``) to validate on.
        phantoms: a prepared phantom datalist (its training + validation cases train).
        real_repeats: how often each real training case is listed per epoch.
        views: views the files must cover (checked).

    Raises:
        ValueError: a holdout name matches no real case or several, or nothing is left to train on.
    """
    out = os.path.abspath(os.fspath(out))
    base = os.path.dirname(out)
    if real_repeats < 1:
        raise ConfigError(f"real_repeats must be >= 1, got {real_repeats}")
    real_items = [it for split in SPLITS for it in load_datalist(real, split, views=views)]
    held = []
    for name in holdout:
        hits = [it for it in real_items if name == it["case"] or name in it["case"]]
        if len(hits) != 1:
            found = ", ".join(it["case"] for it in real_items)
            raise InputFileError(f"{real}: holdout {name!r} matches {len(hits)} real cases (cases: {found})")
        held.append(hits[0])
    train_real = [it for it in real_items if it not in held]
    training = [
        dict(it, case=f"{it['case']}#{r}" if real_repeats > 1 else it["case"])
        for r in range(real_repeats)
        for it in train_real
    ]
    if phantoms is not None:
        training += [it for split in ("training", "validation") for it in load_datalist(phantoms, split, views=views)]
    if not training:
        raise InputFileError(f"{out}: nothing left to train on (every real case is held out and no phantoms given)")
    # sources carry different extra entries (phantoms: ground-truth labels); a batch collates only
    # entries every item has, so keep those
    common = set.intersection(*(set(it) for it in training + held))
    doc = {
        "training": [_relative({k: v for k, v in it.items() if k in common}, base) for it in training],
        "validation": [_relative({k: v for k, v in it.items() if k in common}, base) for it in held],
        "test": [],
        "composed_from": {
            "real": os.path.relpath(os.path.abspath(real), base),
            "phantoms": os.path.relpath(os.path.abspath(phantoms), base) if phantoms else None,
            "holdout": [it["case"] for it in held],
            "real_repeats": real_repeats,
        },
    }
    os.makedirs(base, exist_ok=True)
    write_json(out, doc)
    return doc
