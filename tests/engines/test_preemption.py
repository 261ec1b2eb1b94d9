"""Preemption: a SIGTERM / SIGINT becomes a full checkpoint at a safe iteration boundary and exit
code 128 + signal; resuming from it reproduces the uninterrupted run bitwise.

In-process runs of the real trainer (a 32^3 generator at 1/16 width with dropout, so the random
state matters) on 5 shuffled batches per epoch with 2-batch gradient accumulation; the signal is
sent by the process to itself at a chosen iteration. The end-to-end run through ``train.yaml``
(a real SIGTERM from outside) is in ``test_training.py``.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
import torch
from duolift_bundle.engines import DuoLiftTrainer, EpochSeedHandler, Preemption, ResumableSampler
from duolift_bundle.errors import ConfigError
from duolift_bundle.losses import DuoLiftGeneratorLoss
from duolift_bundle.networks import DuoLiftGenerator, WithAuxiliaryOutputs
from ignite.engine import Events
from monai.handlers import CheckpointLoader
from torch.utils.data import DataLoader

EPOCH = 5  # batches per epoch
WINDOW = 2  # accumulation_steps


class _Cases(torch.utils.data.Dataset):
    def __init__(self, n: int = EPOCH, size: int = 32) -> None:
        g = torch.Generator().manual_seed(3)
        self.items = [
            {"xray": torch.rand(2, size, size, generator=g), "ct": torch.rand(1, size, size, size, generator=g),
             "lung_mask": (torch.rand(1, size, size, size, generator=g) > 0.5).to(torch.uint8)}  # fmt: skip
            for _ in range(n)
        ]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> dict:
        return self.items[i]


def _train(
    folder: Path, max_epochs: int, resume: Path | None = None, send: tuple[int, int] | None = None, times: int = 1
):
    """One run; ``send = (iteration, signal)`` makes the process signal itself (``times`` times)
    after that iteration. Returns the generator's weights, the trainer and the Preemption handler."""
    torch.manual_seed(0)
    net = DuoLiftGenerator(image_size=32, volume_size=32, width=1 / 16, encoder_blocks=(1, 1, 1, 1), dropout=0.25)
    dataset = _Cases()
    loader = DataLoader(dataset, batch_size=1, sampler=ResumableSampler(dataset, num_replicas=1, rank=0, seed=0))
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    trainer = DuoLiftTrainer(
        "cpu", max_epochs, loader, WithAuxiliaryOutputs(net), opt, DuoLiftGeneratorLoss(), accumulation_steps=WINDOW,
        train_handlers=[EpochSeedHandler(seed=0)],
    )  # fmt: skip
    to_save = {"generator": net, "g_optimizer": opt, "trainer": trainer}
    if send is not None:
        iteration, signum = send
        for _ in range(times):
            trainer.add_event_handler(
                Events.ITERATION_COMPLETED(once=iteration), lambda e: os.kill(os.getpid(), signum)
            )
    if resume is not None:
        CheckpointLoader(str(resume), to_save).attach(trainer)
    preemption = Preemption(to_save, str(folder), accumulation_steps=WINDOW)
    preemption.attach(trainer)
    trainer.run()
    return {k: v.clone() for k, v in net.state_dict().items()}, trainer, preemption


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    return _train(tmp_path_factory.mktemp("full"), max_epochs=2)[0]


@pytest.mark.parametrize(
    "send, stops_at, epoch, code",
    [
        # mid-epoch, inside an accumulation window: waits for the window to close (iteration 8);
        # at a window boundary it stops at once (test_a_repeated_sigterm_is_absorbed, iteration 4)
        ((7, signal.SIGTERM), 8, 2, 143),
        # the epoch's last batch: after the epoch's handlers, at its end
        ((5, signal.SIGINT), 5, 1, 130),
    ],
)
def test_a_signal_checkpoints_and_the_resumed_run_is_the_uninterrupted_one(
    uninterrupted, tmp_path, send, stops_at, epoch, code
):
    previous = signal.getsignal(send[1])
    _, trainer, preemption = _train(tmp_path, max_epochs=2, send=send)
    assert trainer.state.iteration == stops_at
    written = tmp_path / f"checkpoint_epoch={epoch:04d}_iteration={stops_at:08d}.pt"
    assert preemption.checkpoint == str(written) and written.is_file()
    assert [p.name for p in tmp_path.iterdir()] == [written.name]  # written atomically: no temporary left
    assert signal.getsignal(send[1]) is previous  # the run gave the signal back
    with pytest.raises(SystemExit) as stop:
        preemption.exit()
    assert stop.value.code == code

    resumed, trainer, preemption = _train(tmp_path, max_epochs=2, resume=written)
    assert trainer.state.iteration == 2 * EPOCH and preemption.exit() is None
    for name, tensor in uninterrupted.items():
        assert torch.equal(tensor, resumed[name]), f"{name} differs after the resume"


def test_a_repeated_sigterm_is_absorbed(tmp_path):
    """torchrun's agent sends its workers SIGTERM twice in a row: the second must not kill the run
    before its checkpoint."""
    _, trainer, preemption = _train(tmp_path, max_epochs=2, send=(4, signal.SIGTERM), times=2)
    assert trainer.state.iteration == 4 and preemption.checkpoint and Path(preemption.checkpoint).is_file()
    with pytest.raises(SystemExit) as stop:
        preemption.exit()
    assert stop.value.code == 143


def test_a_signal_in_the_last_epoch_lets_the_run_finish(uninterrupted, tmp_path):
    weights, trainer, preemption = _train(tmp_path, max_epochs=2, send=(2 * EPOCH, signal.SIGTERM))
    assert trainer.state.iteration == 2 * EPOCH and preemption.checkpoint is None
    assert preemption.exit() is None  # a finished run exits as usual
    assert all(torch.equal(weights[k], v) for k, v in uninterrupted.items())


def test_without_a_resumable_sampler_the_resumed_epoch_warns(tmp_path, caplog):
    """A plain sampler cannot skip the trained batches: the resume says so instead of pretending."""
    _, _, preemption = _train(tmp_path, max_epochs=2, send=(2, signal.SIGTERM))
    net = DuoLiftGenerator(image_size=32, volume_size=32, width=1 / 16, encoder_blocks=(1, 1, 1, 1))
    opt = torch.optim.Adam(net.parameters())
    trainer = DuoLiftTrainer("cpu", 2, DataLoader(_Cases(), batch_size=1), WithAuxiliaryOutputs(net), opt,
                             DuoLiftGeneratorLoss())  # fmt: skip
    CheckpointLoader(preemption.checkpoint, {"generator": net, "g_optimizer": opt, "trainer": trainer}).attach(trainer)
    trainer.run()
    assert "cannot skip the batches" in caplog.text and "SequentialSampler" in caplog.text


@pytest.mark.parametrize("kwargs, message", [({"signals": ["SIGNOPE"]}, "unknown signal"),
                                             ({"accumulation_steps": 0}, "accumulation_steps")])  # fmt: skip
def test_bad_settings_are_refused(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        Preemption({}, "unused", **kwargs)
