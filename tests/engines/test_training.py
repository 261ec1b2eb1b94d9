"""Training workflow: the bundle configs run end to end, resume exactly, DDP on gloo, bad input.

The end-to-end runs use 4 phantoms at 32^3 and generators at 1/16 width through the real
configs (``python -m monai.bundle run training ...``), as a user would start them.
"""

from __future__ import annotations

import copy
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, make_small_prepared
from duolift_bundle.engines import DuoLiftTrainer, NonFiniteLossError
from duolift_bundle.losses import DuoLiftGeneratorLoss
from duolift_bundle.networks import DuoLiftGenerator, WithAuxiliaryOutputs
from duolift_bundle.shipped import file_sha256

SMALL = ["--width", "0.0625"]
GAN = ["configs/train.yaml"]
CNN = ["configs/train.yaml", "configs/train_cnn.yaml"]


def config_arg(files: list[str]) -> str:
    return "[" + ",".join(f"'{f}'" for f in files) + "]"


def run_training(
    configs: list[str], data: Path, out: Path, *extra: str, size: str = "32", timeout: int = 600
) -> subprocess.CompletedProcess:
    """``python -m monai.bundle run training`` with the default ``ckpt_dir`` (``<out>/models``)."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", config_arg(configs), "--dataset_dir",
           str(data), "--output_dir", str(out), "--size", size, *SMALL, *extra]  # fmt: skip
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def phantoms32(tmp_path_factory) -> Path:
    """Four phantoms prepared at 32^3 (DRRs at 32 px); three for training, one for validation."""
    return make_small_prepared(tmp_path_factory.mktemp("phantoms32"), n=4, seed=20, splits=(3, 1, 0))


def load_checkpoint(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


@pytest.mark.slow
@pytest.mark.parametrize(
    "name, configs, views, gan",
    [
        ("gan", GAN, 2, True),
        ("cnn", CNN, 2, False),
        ("gan_single_view", GAN + ["configs/train_single_view.yaml"], 1, True),
        ("cnn_single_view", CNN + ["configs/train_single_view.yaml"], 1, False),
    ],
)
def test_training_configs_end_to_end(phantoms32, tmp_path, name, configs, views, gan):
    out = tmp_path / name
    shipped = {p: file_sha256(p) for p in sorted((ROOT / "models").glob("*.pt"))}
    result = run_training(configs, phantoms32, out, "--max_epochs", "2")
    assert result.returncode == 0, result.stderr[-4000:]
    log = result.stderr + result.stdout
    assert "g_loss" in log and ("d_loss" in log) == gan
    # a CNN run steps no discriminator scheduler, so PyTorch has nothing to warn about
    assert "lr_scheduler.step()` before `optimizer.step()" not in log
    assert "val_psnr" in log and "val_ssim" in log
    # the run's weights are the run's: under its output folder, the bundle's models/ untouched
    assert {p: file_sha256(p) for p in sorted((ROOT / "models").glob("*.pt"))} == shipped
    assert f"this run's generator: {out / 'models' / 'model.pt'}" in log.strip().splitlines()[-1]
    # <output_dir>/models/model.pt: G alone, loadable into the generator the config describes
    state = torch.load(out / "models" / "model.pt", map_location="cpu")
    net = DuoLiftGenerator(views=views, image_size=32, volume_size=32, width=0.0625)
    net.load_state_dict(state)
    # the full checkpoint: everything a resume needs
    ckpt = load_checkpoint(out / "checkpoints" / "checkpoint_epoch=0002.pt")
    # "checkpointer": Ignite's Checkpoint saves its own file list, so a resumed run prunes too
    expected = {"generator", "g_optimizer", "g_scheduler", "best_model", "trainer", "checkpointer"}
    expected |= {"discriminator", "d_optimizer", "d_scheduler"} if gan else set()
    assert set(ckpt) == expected
    assert ckpt["trainer"]["iteration"] == 6 and ckpt["trainer"]["max_epochs"] == 2
    assert list(out.glob("events.out.tfevents.*")), "no TensorBoard events"


def _start_training(configs: list[str], data: Path, out: Path, *extra: str) -> subprocess.Popen:
    """``run_training`` in the background, its log (stderr and stdout) readable line by line."""
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", config_arg(configs), "--dataset_dir",
           str(data), "--output_dir", str(out), "--size", "32", *SMALL, *extra]  # fmt: skip
    return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


@pytest.mark.slow
def test_killed_and_preempted_runs_resume_to_the_uninterrupted_result(phantoms32, tmp_path):
    """One GAN run, stopped twice and continued each time by the same command (--resume auto):
    SIGKILL after its first full checkpoint; SIGTERM (what a scheduler sends) in epoch 3, which
    writes a full checkpoint and exits with 143. The finished run has the same iteration count and
    bitwise the same G, D and optimizer states as an uninterrupted run with the same seed."""
    full = tmp_path / "full"
    assert run_training(GAN, phantoms32, full, "--max_epochs", "4").returncode == 0
    run = tmp_path / "preempted"
    job = ("--max_epochs", "4", "--resume", "auto")  # one command for every start of the job
    proc = _start_training(GAN, phantoms32, run, *job)
    first = run / "checkpoints" / "checkpoint_epoch=0001.pt"
    deadline = time.time() + 300
    while not first.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert first.exists()
    assert not (run / "checkpoints" / "checkpoint_epoch=0004.pt").exists(), "the run finished before it was killed"

    proc = _start_training(GAN, phantoms32, run, *job)
    log = []
    for line in proc.stdout:  # SIGTERM once epoch 3 has trained on its first batch
        log.append(line)
        if "Epoch: 3/4, Iter: 1/3" in line:
            proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) == 128 + signal.SIGTERM, "".join(log[-30:])
    last = log[-1]
    assert "stopped by SIGTERM: full checkpoint" in last and "--resume auto continues" in last, last
    written = Path(last.split("full checkpoint ")[1].split(";")[0])
    assert written.is_file() and written.name.startswith("checkpoint_epoch=0003")

    resumed = run_training(GAN, phantoms32, run, *job)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    a = load_checkpoint(full / "checkpoints" / "checkpoint_epoch=0004.pt")
    b = load_checkpoint(run / "checkpoints" / "checkpoint_epoch=0004.pt")
    rng_a, rng_b = a["trainer"].pop("rng"), b["trainer"].pop("rng")
    assert a["trainer"] == b["trainer"] and b["trainer"]["iteration"] == 12
    assert torch.equal(rng_a["torch"], rng_b["torch"]) and rng_a["python"] == rng_b["python"]
    for key in ("generator", "discriminator"):
        for name, tensor in a[key].items():
            assert torch.equal(tensor, b[key][name]), f"{key}.{name} differs after resume"
    assert a["best_model"] == b["best_model"]
    # the resumed runs went on pruning: the newest n_saved = 2 epoch files remain, the
    # interrupted one went once an epoch checkpoint held more
    assert sorted(p.name for p in (run / "checkpoints").glob("*.pt")) == [
        "checkpoint_epoch=0003.pt",
        "checkpoint_epoch=0004.pt",
    ]


@pytest.mark.parametrize("full_checkpoint", [False, True])
def test_init_ckpt_starts_the_generator_from_weights(phantoms32, tmp_path, full_checkpoint):
    """--init_ckpt (fine-tuning): G starts from a model.pt or a full checkpoint's generator;
    weights of another configuration stop the run before training, naming the file."""
    from monai.bundle import ConfigParser

    torch.manual_seed(3)
    source = DuoLiftGenerator(image_size=32, volume_size=32, width=0.0625)
    path = tmp_path / "init.pt"
    torch.save({"generator": source.state_dict(), "trainer": {}} if full_checkpoint else source.state_dict(), path)

    def initialize(width: float):
        parser = ConfigParser()
        parser.read_config([str(ROOT / f) for f in CNN])
        parser.update({"bundle_root": str(ROOT), "dataset_dir": str(phantoms32), "size": 32, "width": width, "init_ckpt": str(path),
                       "output_dir": str(tmp_path / "out"), "ckpt_dir": str(tmp_path / "out" / "models")})  # fmt: skip
        parser.get_parsed_content("initialize")
        return parser.get_parsed_content("network")

    net = initialize(0.0625)
    for name, tensor in source.state_dict().items():
        assert torch.equal(net.state_dict()[name], tensor), name
    with pytest.raises(RuntimeError) as error:  # MONAI wraps the ValueError of the expression
        initialize(0.125)
    assert "init.pt: checkpoint does not fit this network configuration" in str(error.value.__cause__)


def test_resume_without_checkpoint_is_a_clear_error(phantoms32, tmp_path):
    result = run_training(CNN, phantoms32, tmp_path / "none", "--max_epochs", "1", "--resume", "True")
    assert result.returncode != 0
    assert "no full checkpoint" in result.stderr and str(tmp_path / "none") in result.stderr


def test_resume_auto_without_checkpoint_trains_from_scratch_with_a_warning(phantoms32, tmp_path):
    """--resume auto: the first start of a preemptible job (nothing to resume yet) trains from
    scratch, saying so; the same command later continues from its checkpoint."""
    out = tmp_path / "auto"
    first = run_training(CNN, phantoms32, out, "--max_epochs", "1", "--resume", "auto")
    assert first.returncode == 0, first.stderr[-3000:]
    log = first.stdout + first.stderr
    assert "--resume auto: no full checkpoint" in log and "training starts fresh" in log
    assert (out / "checkpoints" / "checkpoint_epoch=0001.pt").is_file()
    again = run_training(CNN, phantoms32, out, "--max_epochs", "2", "--resume", "auto")
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stdout + again.stderr
    assert "--resume auto: continuing from" in log and "checkpoint_epoch=0001.pt" in log
    per_epoch = load_checkpoint(out / "checkpoints" / "checkpoint_epoch=0001.pt")["trainer"]["iteration"]
    assert load_checkpoint(out / "checkpoints" / "checkpoint_epoch=0002.pt")["trainer"]["iteration"] == 2 * per_epoch


@pytest.mark.slow
def test_torchrun_gloo_two_ranks_keep_identical_weights_through_a_preemption(phantoms32, tmp_path):
    """The README's cluster job: torchrun with --resume auto, stopped by a SIGTERM to torchrun (what
    a scheduler sends; its agent passes it to the ranks), then started again by the same command:
    a full checkpoint was written, the second start finishes, both ranks hold the same weights."""
    out = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "monai.bundle", "run",
           "training", "--config_file", config_arg(GAN + ["configs/multi_gpu_train.yaml"]), "--dataset_dir", str(phantoms32),
           "--output_dir", str(out), "--ckpt_dir", str(out / "models"), "--size", "32", *SMALL, "--max_epochs", "3",
           "--resume", "auto"]  # fmt: skip
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    log = []
    for line in proc.stdout:
        log.append(line)
        if "Epoch: 2/3, Iter: 1/2" in line:
            proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=300) != 0
    stopped = [line for line in log if "stopped by SIGTERM: full checkpoint" in line]
    telling = [line for line in log if any(w in line for w in ("SIGTERM", "signal", "Epoch", "Error", "checkpoint"))]
    assert len(stopped) == 2, "".join(telling[-60:])  # each rank says where the run stopped
    assert not (out / "checkpoints" / "checkpoint_epoch=0003.pt").exists()
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    assert "--resume auto: continuing from" in result.stderr + result.stdout
    digests = [json.loads((out / f"rank{r}_weights.json").read_text())["sha256"] for r in (0, 1)]
    assert digests[0] == digests[1]
    # 3 training cases over 2 ranks: DistributedSampler pads to 2 per rank -> 2 iterations/epoch
    assert load_checkpoint(out / "checkpoints" / "checkpoint_epoch=0003.pt")["trainer"]["iteration"] == 6


@pytest.mark.parametrize(
    "extra, size, message",
    [
        (["--views", "3"], "32", "views = 3: views must be 1"),
        ([], "40", "size = 40: must be a positive multiple of 16"),
        (["--vews", "1"], "32", "unknown config key(s) --vews"),
        (["--accumulation_steps", "0"], "32", "accumulation_steps = 0"),
        ([], "64", "phantom_0020: 'ct' has shape (1, 32, 32, 32), expected (1, 64, 64, 64)"),
    ],
)
def test_bad_config_fails_before_training(phantoms32, tmp_path, extra, size, message):
    result = run_training(CNN, phantoms32, tmp_path / "bad", "--max_epochs", "1", *extra, size=size)
    assert result.returncode != 0
    assert message in result.stderr.strip().splitlines()[-1], result.stderr[-3000:]  # the last line a user sees
    assert "Iter: 1/" not in result.stderr  # failed before the first iteration
    assert not (tmp_path / "bad" / "models" / "model.pt").exists()


def test_a_run_with_nothing_to_train_stops_naming_the_datalist_and_the_fix(tmp_path):
    """The embedded sample (every case in `test`) as a training set: the run stops before the first
    iteration, its last line names the datalist, the counts of both splits and the commands that
    make data, and no weights file is announced or written."""
    from duolift_bundle.datasets.sample import sample_datalist

    sample = sample_datalist(64).parent
    result = run_training(CNN, sample, tmp_path / "empty", "--max_epochs", "1", size="64")
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert str(sample / "datalist.json") in last and "training split is empty (training 0, validation 0)" in last
    assert "make_phantoms.py" in last and "--dataset_dir" in last
    assert "this run's generator" not in result.stderr and not (tmp_path / "empty" / "models").exists()


def test_a_run_without_data_gives_the_commands_that_make_it(tmp_path):
    result = run_training(CNN, tmp_path / "no_data_here", tmp_path / "out", "--max_epochs", "1")
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "datalist not found" in last and "make_phantoms.py" in last and "--dataset_dir" in last


def test_the_promised_entry_point_without_data_points_to_the_cpu_section(tmp_path):
    """`python -m monai.bundle run training --config_file configs/train.yaml`, no other argument,
    in a bundle folder without data: the last line gives the commands and the README section."""
    for name in ("configs", "duolift_bundle", "models"):
        (tmp_path / name).symlink_to(ROOT / name)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", "configs/train.yaml"]
    result = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "data/phantoms/datalist.json: datalist not found" in last and "--dataset_dir" in last
    assert 'README, "Train a small model on a CPU in minutes"' in last and "Iter:" not in result.stderr


@pytest.mark.parametrize("replace", [False, True])
def test_shipped_weights_are_never_overwritten_by_accident(phantoms32, tmp_path, replace):
    """A --ckpt_dir holding a copy of a shipped model (its hash is recorded in docs/) stops the
    run before the first iteration, naming the file and the flag; --replace_shipped True trains
    and overwrites it."""
    ckpt_dir = tmp_path / "models"
    ckpt_dir.mkdir()
    target = ckpt_dir / "model.pt"
    target.write_bytes((ROOT / "models" / "phantom_cnn.pt").read_bytes())
    result = run_training(
        CNN,
        phantoms32,
        tmp_path / "out",
        "--max_epochs",
        "1",
        "--ckpt_dir",
        str(ckpt_dir),
        "--replace_shipped",
        str(replace),
    )
    if replace:
        assert result.returncode == 0, result.stderr[-3000:]
        assert file_sha256(target) != file_sha256(ROOT / "models" / "phantom_cnn.pt")
    else:
        assert result.returncode != 0
        last = result.stderr.strip().splitlines()[-1]
        assert (
            last.startswith("error: ShippedFileError: ")
            and f"{target}: this is a shipped file" in last
            and "--replace_shipped True" in last
        )
        assert "Iter: 1/" not in result.stderr
        assert file_sha256(target) == file_sha256(ROOT / "models" / "phantom_cnn.pt")


def test_missing_case_file_names_the_file(phantoms32, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    datalist = json.loads((phantoms32 / "datalist.json").read_text())
    for split in ("training", "validation"):
        for case in datalist[split]:
            for key in case:
                if key != "case":
                    case[key] = str(phantoms32 / case[key])
    datalist["training"][1]["lung_mask"] = str(broken / "nowhere.nii.gz")
    (broken / "datalist.json").write_text(json.dumps(datalist))
    result = run_training(CNN, broken, tmp_path / "out", "--max_epochs", "1")
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "nowhere.nii.gz" in last and "does not exist" in last


def _batches(n: int, views: int = 2, size: int = 32, seed: int = 0) -> list[dict]:
    g = torch.Generator().manual_seed(seed)
    return [
        {"xray": torch.rand(1, views, size, size, generator=g), "ct": torch.rand(1, 1, size, size, size, generator=g),
         "lung_mask": (torch.rand(1, 1, size, size, size, generator=g) > 0.5).to(torch.uint8)}  # fmt: skip
        for _ in range(n)
    ]


def _small_generator(seed: int = 0) -> DuoLiftGenerator:
    torch.manual_seed(seed)
    return DuoLiftGenerator(image_size=32, volume_size=32, width=1 / 16, encoder_blocks=(1, 1, 1, 1), dropout=0.0)


def test_gradient_accumulation_equals_one_step_on_the_mean_gradient():
    """accumulation_steps = 2 over two batches of 1 == one SGD step on the mean loss of both."""
    batches = _batches(2)
    net = _small_generator()
    reference = copy.deepcopy(net)
    loss_fn = DuoLiftGeneratorLoss(masked=True, deep_supervision_weight=0.5)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    trainer = DuoLiftTrainer("cpu", 1, batches, WithAuxiliaryOutputs(net), opt, loss_fn, accumulation_steps=2)
    trainer.run()
    ref_opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    wrapped = WithAuxiliaryOutputs(reference).train()
    for b in batches:
        pred, aux = wrapped(b["xray"])
        (loss_fn(pred, b["ct"], b["lung_mask"].float(), None, aux)["loss"] / 2).backward()
    ref_opt.step()
    for (name, p), q in zip(net.named_parameters(), reference.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=name)
    assert trainer.state.iteration == 2 and all(p.grad is None for p in net.parameters())


def test_nan_loss_stops_the_run_naming_the_iteration():
    batches = _batches(3)
    batches[1]["ct"][0, 0, 0, 0, 0] = float("nan")
    net = _small_generator()
    trainer = DuoLiftTrainer(
        "cpu",
        1,
        batches,
        WithAuxiliaryOutputs(net),
        torch.optim.Adam(net.parameters()),
        DuoLiftGeneratorLoss(masked=False),
    )
    with pytest.raises(NonFiniteLossError, match=r"g_loss is nan at iteration 2 \(epoch 1\)"):
        trainer.run()


def test_trainer_rejects_half_a_gan():
    net = _small_generator()
    with pytest.raises(ValueError, match="together"):
        DuoLiftTrainer(
            "cpu",
            1,
            [],
            net,
            torch.optim.Adam(net.parameters()),
            DuoLiftGeneratorLoss(),
            d_network=torch.nn.Conv3d(1, 1, 1),
        )


@pytest.mark.slow
def test_mlflow_tracking_logs_g_and_d_loss(phantoms32, tmp_path):
    import mlflow
    from monai.utils import path_to_sqlite_uri

    out = tmp_path / "tracked"
    result = run_training(GAN, phantoms32, out, "--max_epochs", "1", "--tracking", "configs/mlflow_tracking.yaml")
    assert result.returncode == 0, result.stderr[-4000:]
    client = mlflow.tracking.MlflowClient(tracking_uri=path_to_sqlite_uri(str(out / "mlruns.db")))
    runs = client.search_runs([client.get_experiment_by_name("duolift").experiment_id])
    assert len(runs) == 1
    metrics = runs[0].data.metrics
    assert {"g_loss", "d_loss", "recon_mse", "inside_mse", "val_psnr", "val_ssim"} <= set(metrics)
    history = client.get_metric_history(runs[0].info.run_id, "g_loss")
    assert len(history) == 3  # one value per iteration (3 training cases, batch 1)
