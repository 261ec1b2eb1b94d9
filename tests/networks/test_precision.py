"""Inference precision: bfloat16 autocast returns float32 close to the float32 network, float32
is MONAI's SimpleInferer unchanged, and the setting is checked."""

from __future__ import annotations

import pytest
import torch
from duolift_bundle.errors import ConfigError
from duolift_bundle.networks import AutocastInferer, DuoLiftGenerator
from monai.inferers import SimpleInferer


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return DuoLiftGenerator(image_size=32, volume_size=32, width=1 / 16, encoder_blocks=(1, 1, 1, 1)).eval()


def test_float32_is_the_simple_inferer(small):
    x = torch.rand(1, 2, 32, 32)
    with torch.no_grad():
        assert torch.equal(AutocastInferer("float32")(x, small), SimpleInferer()(x, small))


def test_bfloat16_returns_float32_near_the_float32_network():
    """The shipped double-view model on the embedded sample's X-rays: bfloat16 autocast hands back
    float32 whose PSNR against the float32 volume is at least 40 dB (an untrained network
    amplifies rounding through its instance norms and says nothing about this)."""
    import nibabel as nib
    import numpy as np
    from conftest import ROOT
    from duolift_bundle.datasets.sample import sample_dir
    from duolift_bundle.networks import load_generator

    net = load_generator(DuoLiftGenerator(views=2, image_size=64, volume_size=64, width=0.125),
                         str(ROOT / "models" / "model.pt"), "cpu").eval()  # fmt: skip
    case = sample_dir(64) / "normal001"
    views = [np.asarray(nib.load(case / f"xray_{v}.nii.gz").dataobj, dtype=np.float32) for v in ("frontal", "lateral")]
    x = torch.from_numpy(np.stack(views))[None]
    with torch.no_grad():
        reference = SimpleInferer()(x, net)
        ours = AutocastInferer("bfloat16")(x, net)
    assert ours.dtype == torch.float32 and ours.shape == reference.shape == (1, 1, 64, 64, 64)
    psnr = float(10 * torch.log10(1.0 / ((ours - reference) ** 2).mean()))
    assert psnr >= 40.0
    assert not torch.equal(ours, reference)  # bfloat16 did run


def test_an_unknown_precision_is_refused():
    with pytest.raises(ConfigError, match="precision must be one of"):
        AutocastInferer("float16")
