"""Batches that survive a bad case (duolift_bundle/engines/case_failures.py), with a real MONAI
evaluator and DataLoader."""

from __future__ import annotations

import pytest
import torch
from duolift_bundle.engines.case_failures import (
    FAILED_CASES_KEY,
    CaseGuard,
    CaseTolerantEvaluator,
    collate_cases,
    exit_if_failed,
)
from duolift_bundle.inputs.radiograph_io import XRayInputError
from monai.data import DataLoader, Dataset
from monai.transforms import Lambda


def _load(item: dict) -> dict:
    if item["case"] == "bad_load":
        raise XRayInputError(f"{item['case']}/frontal.png: a RGB image")
    return {"case": item["case"], "image": torch.full((1, 4, 4), float(item["value"]))}


def _post(item: dict) -> dict:
    if item["case"] == "bad_write":
        raise OSError("disk full")
    return item


def _prepare(batch, device=None, non_blocking=False, **kwargs):
    return batch["image"], None


CASES = [
    {"case": "a", "value": 1},
    {"case": "bad_load", "value": 2},
    {"case": "b", "value": 3},
    {"case": "bad_write", "value": 4},
    {"case": "c", "value": 5},
]


def test_case_guard_turns_a_failed_load_into_a_failed_item():
    guard = CaseGuard(Dataset(CASES, transform=_load))
    assert len(guard) == 5 and guard[0]["case"] == "a"
    failed = guard[1]
    assert failed["case"] == "bad_load"
    # the bundle's message, not MONAI's "applying transform" wrapper around it
    assert failed["failed"] == "XRayInputError: bad_load/frontal.png: a RGB image"
    assert "Traceback" in failed["traceback"]


@pytest.mark.parametrize("order", [(0, 1, 2), (1, 0, 2), (1,)])
def test_collate_keeps_failed_items_apart(order):
    items = [
        {"case": "a", "image": torch.zeros(1, 2)},
        {"case": "x", "failed": "bad"},
        {"case": "b", "image": torch.ones(1, 2)},
    ]
    batch = collate_cases([items[i] for i in order])
    good = [items[i]["case"] for i in order if "image" in items[i]]
    assert [f["case"] for f in batch[FAILED_CASES_KEY]] == ["x"]
    assert list(batch.get("case", [])) == good
    if good:
        assert batch["image"].shape == (len(good), 1, 2)


@pytest.mark.parametrize("batch_size, num_workers", [(1, 0), (2, 0), (1, 2)])
def test_evaluator_goes_on_past_failed_cases(tmp_path, batch_size, num_workers):
    """A load failure (in the DataLoader, in workers too) and a post-processing failure are
    recorded with their reasons; every other case reaches the handlers; a second run starts clean."""
    loader = DataLoader(
        CaseGuard(Dataset(CASES, transform=_load)),
        batch_size=batch_size,
        num_workers=num_workers,
        collate_fn=collate_cases,
    )
    seen: list[str] = []
    evaluator = CaseTolerantEvaluator(
        device=torch.device("cpu"), val_data_loader=loader, network=torch.nn.Identity(), prepare_batch=_prepare,
        postprocessing=Lambda(_post), decollate=True,
    )  # fmt: skip

    @evaluator.on(__import__("ignite.engine", fromlist=["Events"]).Events.ITERATION_COMPLETED)
    def _collect(engine):
        seen.extend(str(b["case"]) for b in engine.state.batch)

    evaluator.run()
    assert evaluator.failed_cases["bad_load"] == "XRayInputError: bad_load/frontal.png: a RGB image"
    if batch_size == 1:
        assert (
            set(evaluator.failed_cases) == {"bad_load", "bad_write"}
            and evaluator.failed_cases["bad_write"] == "OSError: disk full"
        )
        assert seen == ["a", "b", "c"] and evaluator.n_done == 3
    else:  # the post-processing failure takes its batch-mate with it, and both are listed
        assert seen == ["a", "c"] and evaluator.n_done == 2
        assert evaluator.failed_cases["bad_write"] == "OSError: disk full (in one batch with b)"
        assert evaluator.failed_cases["b"] == "OSError: disk full (in one batch with bad_write)"
    seen.clear()
    evaluator.run()  # failures are per run
    assert "bad_load" in evaluator.failed_cases and len(seen) + len(evaluator.failed_cases) == 5


def test_exit_if_failed_ends_with_every_reason(tmp_path):
    class Done:
        failed_cases = {f"case{i}": f"ValueError: reason {i}" for i in range(4)}
        n_done = 6

    with pytest.raises(SystemExit) as exc:
        exit_if_failed(Done(), tmp_path, shown=3)
    message = str(exc.value.code)
    assert message.startswith(
        f"error: 4 of 10 case(s) failed (listed in {tmp_path / 'failed.json'}; the others were written)"
    )
    assert (
        "case0: ValueError: reason 0; case1" in message and "case3" not in message and message.endswith("; and 1 more")
    )
    Done.failed_cases = {}
    assert exit_if_failed(Done(), tmp_path) is None  # nothing failed: the run ends normally
