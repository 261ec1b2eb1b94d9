"""Equal-budget comparison of training recipes on the leave-one-out folds (one command).

    python scripts/compare_recipes.py --spec configs/compare.yaml --out runs/compare

trains every recipe of the spec on every fold (``--stage train``), scores each with every
refinement next to the baselines (``--stage evaluate``) and writes ``<out>/results.json`` and
``<out>/table.md``; ``--stage all`` (default) runs data, train and evaluate. A stopped comparison
is continued by the same command (finished runs are kept, interrupted ones resume from their last
full checkpoint). Every field of the spec is a ``--key value`` override, e.g. ``--budget_s 300
--folds "[P002,cap002]" --recipes "{dv_repeat: {views: 2, width: 0.125}}"``. See
duolift_bundle/engines/comparison.py.
"""

from __future__ import annotations

import logging
import sys

import fire
from duolift_bundle.engines import comparison
from duolift_bundle.errors import ConfigError, install_last_line_hook

STAGES = ("all", "data", "train", "evaluate")


def main(spec: str = "configs/compare.yaml", out: str = "runs/compare", stage: str = "all", **overrides) -> int:
    """Run STAGE of the comparison SPEC into OUT; returns 1 when a training run failed."""
    if stage not in STAGES:
        raise ConfigError(f"--stage must be one of {STAGES}, got {stage!r}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cfg = comparison.ComparisonSpec.from_file(spec, **overrides)
    runs = comparison.plan_runs(cfg, out)
    failed = 0
    if stage in ("all", "data"):
        comparison.prepare_folds(cfg, out)
    if stage in ("all", "train"):
        codes = comparison.train_runs(cfg, out, runs)
        failed = sum(1 for c in codes.values() if c != 0)
    if stage in ("all", "evaluate"):
        results = comparison.evaluate_runs(cfg, out, runs)
        print(comparison.write_results(cfg, out, results, sys.argv))
    return 1 if failed else 0


if __name__ == "__main__":
    install_last_line_hook()  # the bundle's message is the last line of a failure
    sys.exit(fire.Fire(main))
