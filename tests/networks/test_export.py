"""The generator through MONAI's bundle tools: verify_net_in_out and ckpt_export (TorchScript)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from monai.bundle import ConfigParser


def bundle_cmd(*args: str) -> subprocess.CompletedProcess:
    """A MONAI bundle command on inference.yaml and the metadata, with no override: their
    defaults describe the shipped double-view model (models/model.pt)."""
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        *args,
        "--meta_file",
        "configs/metadata.json",
        "--config_file",
        "configs/inference.yaml",
    ]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_verify_net_in_out_with_bundle_metadata():
    result = bundle_cmd("verify_net_in_out", "network_def")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data shape of network is verified with no error" in result.stdout + result.stderr


def test_the_paper_network_is_one_override(tmp_path):
    """configs/paper.yaml: the 128^3 full-width generator of train.yaml (built, not run)."""
    parser = ConfigParser()
    parser.read_config([str(ROOT / "configs" / "inference.yaml"), str(ROOT / "configs" / "paper.yaml")])
    parser["bundle_root"] = str(ROOT)
    net = parser.get_parsed_content("network_def")
    assert (net.views, net.image_size, net.volume_size) == (2, 128, 128)
    train = ConfigParser()
    train.read_config(str(ROOT / "configs" / "train.yaml"))
    train["bundle_root"] = str(ROOT)
    assert sum(p.numel() for p in net.parameters()) == sum(
        p.numel() for p in train.get_parsed_content("network_def").parameters()
    )


def test_verify_net_in_out_catches_a_wrong_view_count():
    """The metadata's two input channels are checked against the network: a single-view network
    fails with the generator's own shape message."""
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "verify_net_in_out", "network_def", "--meta_file", "configs/metadata.json",
         "--config_file", "configs/inference.yaml", "--width", "0.0625", "--views", "1"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert result.returncode != 0
    assert "expected 1 view(s)" in result.stderr


def test_ckpt_export_torchscript_equals_eager(tmp_path):
    """The shipped models/model.pt exported with the defaults (no size or width override)."""
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "inference.yaml"))
    parser["bundle_root"] = str(ROOT)
    net = parser.get_parsed_content("network").eval()  # loads models/model.pt
    ts_path = tmp_path / "model.ts"
    result = bundle_cmd(
        "ckpt_export", "network_def", "--filepath", str(ts_path), "--ckpt_file", str(ROOT / "models" / "model.pt")
    )
    assert result.returncode == 0, result.stderr[-3000:]
    extra = {"metadata.json": "", "inference.json": ""}
    scripted = torch.jit.load(str(ts_path), _extra_files=extra)
    assert json.loads(extra["metadata.json"])["network_data_format"]["inputs"]["image"]["num_channels"] == 2
    x = torch.rand(1, 2, 64, 64)
    with torch.no_grad():
        eager, exported = net(x), scripted(x)
    assert exported.shape == (1, 1, 64, 64, 64)
    torch.testing.assert_close(exported, eager, rtol=0, atol=1e-5)  # summation order, as below
    with pytest.raises(Exception, match="expected 2 view"):
        scripted(torch.rand(1, 1, 128, 128))


def test_backproject_lift_through_verify_net_in_out_and_torchscript(tmp_path):
    """``--lift backproject``: MONAI's verify_net_in_out passes and ckpt_export's TorchScript
    equals the eager network (the lift's matrices are derived buffers, not checkpoint entries)."""
    result = bundle_cmd("verify_net_in_out", "network_def", "--lift", "backproject")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "data shape of network is verified with no error" in result.stdout + result.stderr
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "inference.yaml"))
    parser.update({"bundle_root": str(ROOT), "lift": "backproject"})
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def").eval()
    ckpt = tmp_path / "backproject.pt"
    torch.save(net.state_dict(), ckpt)
    assert not any("rows" in k or "cols" in k for k in net.state_dict())
    ts_path = tmp_path / "model.ts"
    result = bundle_cmd(
        "ckpt_export", "network_def", "--filepath", str(ts_path), "--ckpt_file", str(ckpt), "--lift", "backproject"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    scripted = torch.jit.load(str(ts_path))
    x = torch.rand(1, 2, 64, 64)
    with torch.no_grad():
        # TorchScript runs the plain path; eager inference sums U-Net++'s split convolutions in
        # another order (float32 rounding, a few 1e-6)
        torch.testing.assert_close(scripted(x), net(x), rtol=0, atol=1e-5)
