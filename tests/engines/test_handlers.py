"""duolift_bundle.engines.handlers: TimeBudget cuts the epochs to the budget and moves the LR milestone with them."""

from __future__ import annotations

import pytest
import torch
from duolift_bundle.engines import TimeBudget
from duolift_bundle.errors import ConfigError
from ignite.engine import Engine, Events
from monai.handlers import LrScheduleHandler


def _run(epoch_times, max_epochs, milestone, budget):
    """Train a dummy engine whose epoch e takes epoch_times(e) fake seconds; return the LR of each epoch."""
    clock = {"t": 0.0}
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[milestone], gamma=0.1)
    engine = Engine(lambda e, b: clock.__setitem__("t", clock["t"] + epoch_times(e.state.epoch)))
    lrs = []
    engine.add_event_handler(Events.EPOCH_STARTED, lambda e: lrs.append(opt.param_groups[0]["lr"]))
    LrScheduleHandler(sched, print_lr=False).attach(engine)
    TimeBudget(budget, [sched, None], clock=lambda: clock["t"]).attach(engine)
    engine.run([0], max_epochs=max_epochs)
    return lrs, clock["t"]


@pytest.mark.parametrize(
    "budget, expected_epochs, expected_drop",
    [
        (None, 20, 15),  # no budget: as configured (drop after epoch 15)
        (1000.0, 20, 15),  # the configured run fits
        (100.0, 10, 8),  # 10 epochs of 10 s fit: milestone 15/20 -> round(0.75 * 10) = 8
        (35.0, 3, 2),  # 3 epochs: round(2.25) = 2
    ],
)
def test_budget_cuts_epochs_and_moves_milestone(budget, expected_epochs, expected_drop):
    lrs, _ = _run(lambda e: 10.0, max_epochs=20, milestone=15, budget=budget)
    assert len(lrs) == expected_epochs
    expected = [1.0] * expected_drop + [0.1] * (expected_epochs - expected_drop)
    assert lrs == pytest.approx(expected)


def test_slower_epochs_end_the_run_inside_the_budget():
    # epochs take 10 s, then 30 s from epoch 4 on: the plan shrinks again and the drop still comes
    lrs, used = _run(lambda e: 10.0 if e < 4 else 30.0, max_epochs=20, milestone=15, budget=150.0)
    assert used <= 150.0
    # after epoch 4 (60 s used, 30 s per epoch): 4 + 3 = 7 epochs; milestone round(0.75 * 7) = 5
    assert len(lrs) == 7
    assert lrs == pytest.approx([1.0] * 5 + [0.1] * 2)


def test_rejects_other_schedulers():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ConfigError, match="MultiStepLR"):
        TimeBudget(10.0, [torch.optim.lr_scheduler.StepLR(opt, 2)])


def test_the_last_line_names_the_generator_only_when_it_exists(tmp_path, caplog):
    import logging

    from duolift_bundle.engines.handlers import log_run_weights

    weights = tmp_path / "model.pt"
    with caplog.at_level(logging.INFO, logger="duolift_bundle.engines.handlers"):
        log_run_weights(str(weights))
        assert "wrote no generator" in caplog.text and "this run's generator" not in caplog.text
        weights.write_bytes(b"0")
        log_run_weights(str(weights))
        assert f"this run's generator: {weights}" in caplog.text


def test_the_validation_curve_grows_per_epoch_and_goes_on_after_a_resume(tmp_path):
    """One entry per validated epoch (metrics, learning rate, seconds trained); a resumed run (a
    new handler, its clock restarted) adds to the file, counting its seconds on from the last
    entry; an epoch validated again replaces its entry."""
    import json
    from types import SimpleNamespace

    from duolift_bundle.engines.handlers import ValidationCurve

    path = tmp_path / "validation_curve.json"
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    ticks = iter([100.0, 110.0, 130.0])
    first = ValidationCurve(str(path), optimizer, clock=lambda: next(ticks))
    for epoch, psnr in ((1, 15.0), (2, 16.0), (3, 16.5)):
        first(SimpleNamespace(state=SimpleNamespace(epoch=epoch, metrics={"val_psnr": psnr, "val_ssim": 0.5})))
    expected = {
        "1": {"val_psnr": 15.0, "val_ssim": 0.5, "lr": 0.5, "seconds": 0.0},
        "2": {"val_psnr": 16.0, "val_ssim": 0.5, "lr": 0.5, "seconds": 10.0},
        "3": {"val_psnr": 16.5, "val_ssim": 0.5, "lr": 0.5, "seconds": 30.0},
    }
    assert json.loads(path.read_text())["epochs"] == expected
    # killed during epoch 4 after the checkpoint of epoch 3, resumed in a new process
    resumed = ValidationCurve(str(path), clock=iter([5.0]).__next__)
    resumed(SimpleNamespace(state=SimpleNamespace(epoch=4, metrics={"val_psnr": 17.0})))
    curve = json.loads(path.read_text())["epochs"]
    assert list(curve) == ["1", "2", "3", "4"] and curve["4"] == {"val_psnr": 17.0, "seconds": 30.0}
    again = ValidationCurve(str(path), clock=iter([0.0]).__next__)  # epoch 3 validated again: replaced, 4 dropped
    again(SimpleNamespace(state=SimpleNamespace(epoch=3, metrics={"val_psnr": 16.6})))
    assert json.loads(path.read_text())["epochs"]["3"] == {"val_psnr": 16.6, "seconds": 10.0}
    assert list(json.loads(path.read_text())["epochs"]) == ["1", "2", "3"]
