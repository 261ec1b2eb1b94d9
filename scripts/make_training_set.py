"""Compose a training set from prepared real CTs and phantoms, holding real cases out.

    python scripts/make_training_set.py --out data/loo64/normal001/datalist.json \
        --real data/real64/datalist.json --phantoms data/phantoms64/datalist.json \
        --holdout "[normal001]" --real_repeats 16

See duolift_bundle/datasets/training_sets.py for what goes where.
"""

from __future__ import annotations

import fire
from duolift_bundle.datasets.training_sets import compose_datalist
from duolift_bundle.errors import install_last_line_hook


def main(
    out: str,
    real: str,
    holdout: tuple[str, ...] = (),
    phantoms: str | None = None,
    real_repeats: int = 1,
    views: int = 2,
) -> None:
    """Write OUT from the REAL datalist (HOLDOUT cases validate) and the PHANTOMS datalist."""
    holdout = (holdout,) if isinstance(holdout, str) else tuple(holdout)
    doc = compose_datalist(out, real, holdout, phantoms, real_repeats, views)
    print(f"{out}: {len(doc['training'])} training items, validation {doc['composed_from']['holdout']}")


if __name__ == "__main__":
    install_last_line_hook()  # the bundle's message is the last line of a failure
    fire.Fire(main)
