"""Batches that survive a bad case: inference and evaluation go on past a case that fails, write
every good one, list each failure with its reason and exit non-zero at the end (as
``scripts/prepare_data.py`` does).

Three pieces, wired in ``configs/inference.yaml`` (``evaluate.yaml`` inherits them):

- :class:`CaseGuard` wraps the dataset: a case whose loading raises becomes a *failed item*
  ``{"case", "failed": "<Type>: <message>", "traceback"}`` instead of ending the run (in the
  DataLoader's worker, where the exception happens);
- :func:`collate_cases` keeps failed items out of the collated batch, under ``"failed_cases"``;
- :class:`CaseTolerantEvaluator` (a MONAI ``SupervisedEvaluator``) records those, runs the rest,
  and also records a case whose network pass or post-processing (metrics, writing) raises. It
  holds ``failed_cases`` ``{case: reason}``; the report handlers write them into ``summary.json``
  and ``failed.json`` (:func:`duolift_bundle.io_utils.write_case_list`) and :func:`exit_if_failed` ends the run with a
  non-zero status and a last line that names each failed case and its reason.

Ignite stops a run at the first exception and MONAI's evaluators have no per-item error
handling, hence this module.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from collections.abc import Mapping, Sequence
from typing import Any

from duolift_bundle.constants import FAILED_NAME
from duolift_bundle.errors import failure_reason
from ignite.engine import Engine, Events
from monai.data import list_data_collate
from monai.engines import SupervisedEvaluator
from torch.utils.data import Dataset

__all__ = [
    "FAILED_KEY",
    "FAILED_CASES_KEY",
    "FAILED_NAME",
    "CaseGuard",
    "collate_cases",
    "CaseTolerantEvaluator",
    "exit_if_failed",
]

logger = logging.getLogger(__name__)

#: a failed item's reason
FAILED_KEY = "failed"
#: a collated batch's list of failed items
FAILED_CASES_KEY = "failed_cases"


class CaseGuard(Dataset):
    """A map-style dataset whose items never raise: a case that fails to load is returned as
    ``{"case", "failed", "traceback"}`` (the case id from the wrapped dataset's ``data[i]["case"]``
    when it has one, else ``"item <i>"``)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def _case_id(self, index: int) -> str:
        data = getattr(self.dataset, "data", None)
        try:
            item = data[index]  # type: ignore[index]
        except Exception:
            item = None
        if isinstance(item, Mapping) and "case" in item:
            return str(item["case"])
        return f"item {index}"

    def __getitem__(self, index: int) -> Any:
        try:
            return self.dataset[index]
        except Exception as exc:  # every failure of one case is that case's, reported with it
            return {"case": self._case_id(index), FAILED_KEY: failure_reason(exc), "traceback": traceback.format_exc()}


def _is_failed(item: Any) -> bool:
    return isinstance(item, Mapping) and FAILED_KEY in item


def collate_cases(batch: Sequence[Any]) -> dict:
    """MONAI's ``list_data_collate`` of the good items, with the failed ones as a list under
    ``"failed_cases"`` (a batch of only failed items is ``{"failed_cases": [...]}``)."""
    failed = [item for item in batch if _is_failed(item)]
    good = [item for item in batch if not _is_failed(item)]
    out = dict(list_data_collate(good)) if good else {}
    out[FAILED_CASES_KEY] = failed
    return out


class CaseTolerantEvaluator(SupervisedEvaluator):
    """MONAI's ``SupervisedEvaluator`` that goes on past a failed case.

    A batch's ``"failed_cases"`` (from :func:`collate_cases`) and any case whose network pass or
    post-processing raises are recorded in ``failed_cases`` ``{case: reason}`` (reset when a run
    starts) and logged with their reason; for such an iteration ``state.batch`` and
    ``state.output`` are empty lists, so per-case handlers see no item. The other arguments are
    ``SupervisedEvaluator``'s.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.failed_cases: dict[str, str] = {}
        self.failure_tracebacks: dict[str, str] = {}
        self.n_done = 0
        self.add_event_handler(Events.STARTED, self._reset)

    def _reset(self, engine: Engine) -> None:
        self.failed_cases, self.failure_tracebacks, self.n_done = {}, {}, 0

    def _record(self, case: str, reason: str, trace: str = "") -> None:
        self.failed_cases[case] = reason
        self.failure_tracebacks[case] = trace
        logger.error("%s: failed, %s", case, reason)
        if trace:
            logger.debug("%s", trace)

    def _iteration(self, engine: Engine, batchdata: dict) -> Any:
        batch = dict(batchdata)
        for item in batch.pop(FAILED_CASES_KEY, []):
            self._record(str(item.get("case")), str(item[FAILED_KEY]), str(item.get("traceback", "")))
        engine.state.batch = batch
        cases = [str(c) for c in batch.get("case", [])]
        if not batch:
            engine.state.batch, engine.state.output = [], []
            return []
        try:
            output = super()._iteration(engine, batch)
        except Exception as exc:  # the cases of this batch failed; the run goes on
            trace = traceback.format_exc()
            cases = cases or [f"iteration {engine.state.iteration}"]
            for case in cases:  # a batch fails as a whole: each case names the batch it was in
                shared = f" (in one batch with {', '.join(c for c in cases if c != case)})" if len(cases) > 1 else ""
                self._record(case, failure_reason(exc) + shared, trace)
            engine.state.batch, engine.state.output = [], []
            return []
        self.n_done += len(cases) or 1
        return output


def exit_if_failed(evaluator: Engine, output_dir: str | os.PathLike, shown: int = 3) -> None:
    """End the process with status 1 when ``evaluator`` recorded failed cases, its last line
    naming each (the first ``shown``) with its reason; do nothing otherwise."""
    failed = dict(getattr(evaluator, "failed_cases", {}) or {})
    if not failed:
        return
    total = len(failed) + int(getattr(evaluator, "n_done", 0))
    reasons = "; ".join(f"{case}: {reason}" for case, reason in list(failed.items())[:shown])
    more = f"; and {len(failed) - shown} more" if len(failed) > shown else ""
    others = "the others were written" if total > len(failed) else "nothing was written"
    sys.stderr.flush()
    sys.exit(
        f"error: {len(failed)} of {total} case(s) failed (listed in "
        f"{os.path.join(os.fspath(output_dir), FAILED_NAME)}; {others}): {reasons}{more}"
    )
