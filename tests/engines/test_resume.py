"""Finding the checkpoint a run continues from, superseded interrupted checkpoints, the sampler
that skips what a resumed epoch trained on, and the random state kept in the trainer's state."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from duolift_bundle.engines.resume import (
    ResumableSampler,
    capture_rng,
    interrupted_checkpoint_name,
    latest_checkpoint,
    remove_superseded,
    restore_rng,
    resume_checkpoint,
)
from duolift_bundle.errors import ConfigError, MissingFileError
from torch.utils.data import DistributedSampler


def test_a_checkpoint_cut_short_is_passed_over_for_the_one_before(tmp_path, caplog):
    """resume_checkpoint: False -> None; True / auto -> the newest complete full checkpoint; a newest
    file cut short (half its bytes, as a killed copy leaves it) is skipped with a warning; auto with
    nothing complete -> None with a warning, True -> the error naming the folder."""
    for epoch in (1, 2):
        torch.save(
            {"trainer": {"epoch": epoch}, "w": torch.arange(1000.0)}, tmp_path / f"checkpoint_epoch={epoch:04d}.pt"
        )
    whole = (tmp_path / "checkpoint_epoch=0002.pt").read_bytes()
    assert resume_checkpoint(False, str(tmp_path)) is None
    assert resume_checkpoint(True, str(tmp_path)).endswith("checkpoint_epoch=0002.pt")
    (tmp_path / "checkpoint_epoch=0003.pt").write_bytes(whole[: len(whole) // 2])
    with caplog.at_level("WARNING"):
        assert resume_checkpoint("auto", str(tmp_path)).endswith("checkpoint_epoch=0002.pt")
    assert "checkpoint_epoch=0003.pt: an incomplete checkpoint" in caplog.text
    assert torch.load(resume_checkpoint("True", str(tmp_path)), weights_only=True)["trainer"]["epoch"] == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "checkpoint_epoch=0001.pt").write_bytes(whole[:100])
    with caplog.at_level("WARNING"):
        assert resume_checkpoint("auto", str(empty)) is None
    assert "training starts fresh" in caplog.text
    with pytest.raises(MissingFileError, match=str(empty)):
        resume_checkpoint(True, str(empty))
    with pytest.raises(ConfigError, match="resume must be one of"):
        resume_checkpoint("sometimes", str(tmp_path))


def _write(folder, names):
    for name in names:
        torch.save({"name": name}, folder / name)


@pytest.mark.parametrize(
    "names, newest",
    [
        # an interrupted checkpoint of epoch 3 is newer than the epoch-2 one
        (["checkpoint_epoch=0002.pt", interrupted_checkpoint_name(3, 17)], interrupted_checkpoint_name(3, 17)),
        # the epoch-3 checkpoint holds all of epoch 3: newer than any interruption in it
        (["checkpoint_epoch=0003.pt", interrupted_checkpoint_name(3, 17)], "checkpoint_epoch=0003.pt"),
        # later in the same epoch is newer
        ([interrupted_checkpoint_name(3, 12), interrupted_checkpoint_name(3, 17)], interrupted_checkpoint_name(3, 17)),
        # numbers, not text: epoch 10 after epoch 9
        (["checkpoint_epoch=0009.pt", "checkpoint_epoch=0010.pt"], "checkpoint_epoch=0010.pt"),
    ],
)
def test_the_newest_checkpoint_wins(tmp_path, names, newest):
    _write(tmp_path, names)
    assert latest_checkpoint(str(tmp_path)).endswith(newest)


@pytest.mark.parametrize(
    "names, kept",
    [
        # an epoch checkpoint newer than the interruption: it goes
        (["checkpoint_epoch=0003.pt", interrupted_checkpoint_name(3, 17)], ["checkpoint_epoch=0003.pt"]),
        # the newest interruption stays; older ones go
        (
            ["checkpoint_epoch=0002.pt", interrupted_checkpoint_name(3, 12), interrupted_checkpoint_name(3, 17)],
            ["checkpoint_epoch=0002.pt", interrupted_checkpoint_name(3, 17)],
        ),
    ],
)
def test_superseded_interrupted_checkpoints_are_removed(tmp_path, names, kept):
    _write(tmp_path, names)
    remove_superseded(str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


def test_an_interrupted_checkpoint_cut_short_keeps_the_one_before(tmp_path):
    """A newest interrupted file that is not complete supersedes nothing."""
    _write(tmp_path, [interrupted_checkpoint_name(3, 12)])
    (tmp_path / interrupted_checkpoint_name(3, 17)).write_bytes(b"PK\x03\x04 cut short")
    remove_superseded(str(tmp_path))
    assert (tmp_path / interrupted_checkpoint_name(3, 12)).is_file()
    assert latest_checkpoint(str(tmp_path)).endswith(interrupted_checkpoint_name(3, 12))


@pytest.mark.parametrize("replicas, rank", [(1, 0), (2, 1)])
def test_the_sampler_skips_the_start_of_one_epoch_only(replicas, rank):
    """Against torch's own DistributedSampler with the same seed: the next epoch without its first
    n indices, then whole epochs again."""
    data = list(range(11))
    ours = ResumableSampler(data, num_replicas=replicas, rank=rank, seed=5)
    reference = DistributedSampler(data, num_replicas=replicas, rank=rank, seed=5)
    for sampler in (ours, reference):
        sampler.set_epoch(3)
    ours.skip_next(2)
    assert list(ours) == list(reference)[2:]
    assert list(ours) == list(reference)
    with pytest.raises(ConfigError):
        ours.skip_next(-1)


def test_the_random_state_comes_back_through_a_checkpoint_file(tmp_path):
    """capture -> torch.save -> torch.load(weights_only=True) -> restore: Python, NumPy and torch
    draw the same numbers again."""
    torch.manual_seed(1)
    np.random.seed(1)
    random.seed(1)
    np.random.normal()  # a cached Gaussian is part of NumPy's state
    torch.save({"rng": capture_rng()}, tmp_path / "state.pt")
    first = (torch.rand(4), np.random.rand(4), np.random.normal(), random.random())
    restore_rng(torch.load(tmp_path / "state.pt", weights_only=True)["rng"])
    again = (torch.rand(4), np.random.rand(4), np.random.normal(), random.random())
    assert torch.equal(first[0], again[0]) and np.array_equal(first[1], again[1]) and first[2:] == again[2:]
