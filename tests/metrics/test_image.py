"""Image metrics against independent implementations (scikit-image, MONAI) and by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from duolift_bundle.metrics import X2CT_PSNR_OFFSET_DB, mae, psnr_2d, psnr_3d, ssim_2d, ssim_3d
from skimage.metrics import peak_signal_noise_ratio, structural_similarity


def random_pair(seed: int, shape=(24, 20, 22)):
    rng = np.random.default_rng(seed)
    target = rng.random(shape)
    pred = np.clip(target + rng.normal(0, 0.1, shape), 0, 1)
    return pred, target


@pytest.fixture(scope="module")
def phantom_pair():
    from conftest import hu_to_unit
    from duolift_bundle.synthetic.phantoms import make_phantom

    target = np.clip(hu_to_unit(make_phantom(seed=1, size=32).hu), 0, 1).astype(np.float64)
    pred = np.clip(hu_to_unit(make_phantom(seed=2, size=32).hu), 0, 1).astype(np.float64)  # another patient
    # both scans end above the field's bottom (air, equal in both): a little noise keeps every
    # slice's error above zero, so scikit-image's slice PSNRs stay finite
    pred = np.clip(pred + np.random.default_rng(0).normal(0, 1e-3, pred.shape), 0, 1)
    return pred, target


def pairs(phantom_pair):
    return [random_pair(0), random_pair(1, (16, 16, 16)), phantom_pair]


def test_psnr_and_mae_against_scikit_image(phantom_pair):
    for pred, target in pairs(phantom_pair):
        assert psnr_3d(pred, target) == pytest.approx(peak_signal_noise_ratio(target, pred, data_range=1.0), abs=1e-4)
        for axis in range(3):
            ref = np.mean(
                [
                    peak_signal_noise_ratio(np.take(target, i, axis), np.take(pred, i, axis), data_range=1.0)
                    for i in range(target.shape[axis])
                ]
            )
            assert psnr_2d(pred, target, axes=(axis,)) == pytest.approx(ref, abs=1e-4)
        assert mae(pred, target) == pytest.approx(np.abs(pred - target).mean(), abs=1e-8)


def test_ssim_against_scikit_image(phantom_pair):
    for pred, target in pairs(phantom_pair):
        ref3 = structural_similarity(
            target, pred, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
        assert ssim_3d(pred, target) == pytest.approx(ref3, abs=1e-4)
        for axis in range(3):
            ref2 = np.mean(
                [
                    structural_similarity(
                        np.take(target, i, axis),
                        np.take(pred, i, axis),
                        data_range=1.0,
                        gaussian_weights=True,
                        sigma=1.5,
                        use_sample_covariance=False,
                    )
                    for i in range(target.shape[axis])
                ]
            )
            assert ssim_2d(pred, target, axes=(axis,)) == pytest.approx(ref2, abs=1e-4)


def test_x2ct_mode(phantom_pair):
    pred, target = phantom_pair
    assert X2CT_PSNR_OFFSET_DB == pytest.approx(4.29, abs=0.005)
    # X2CT-GAN's definition written out: 0..2500 scale, peak 4095
    mse_2500 = np.mean((pred * 2500 - target * 2500) ** 2)
    assert psnr_3d(pred, target, mode="x2ct") == pytest.approx(10 * math.log10(4095**2 / mse_2500), abs=1e-6)
    assert psnr_3d(pred, target, mode="x2ct") - psnr_3d(pred, target) == pytest.approx(4.286, abs=1e-3)
    ref = np.mean([
        np.mean([structural_similarity(np.take(target, i, a), np.take(pred, i, a), data_range=1.0) for i in range(target.shape[a])])
        for a in range(3)
    ])  # scikit-image's default: 7x7 uniform window, sample covariance  # fmt: skip
    assert ssim_2d(pred, target, mode="x2ct") == pytest.approx(ref, abs=1e-4)


def test_identical_volumes_and_errors():
    x = np.random.default_rng(3).random((16, 16, 16))
    assert ssim_3d(x, x) == pytest.approx(1.0)
    assert psnr_3d(x, x) == pytest.approx(100.0)  # MSE floored at 1e-10
    with pytest.raises(ValueError, match="differs from target shape"):
        psnr_3d(x, x[:8])
    with pytest.raises(ValueError, match="needs every edge >= 11"):
        ssim_3d(x[:8], x[:8])
    with pytest.raises(ValueError, match=r"expected a volume"):
        psnr_3d(x[0], x[0])


@pytest.fixture(scope="module")
def vgg_features_file(tmp_path_factory):
    """A randomly initialised torchvision VGG16, its ``features.*`` saved as the weights file."""
    import torchvision

    torch.manual_seed(0)
    vgg = torchvision.models.vgg16(weights=None)
    path = tmp_path_factory.mktemp("vgg") / "vgg16-397923af.pth"
    torch.save({k: v for k, v in vgg.state_dict().items() if k.startswith("features.")}, path)
    return path, vgg


def test_lpips_loads_vgg_weights_and_matches_per_slice_lpips(vgg_features_file):
    import lpips
    from duolift_bundle.metrics.perceptual import SliceLPIPS

    path, vgg = vgg_features_file
    metric = SliceLPIPS(vgg_weights=str(path), batch_size=5)
    torch.testing.assert_close(metric.model.net.slice3._modules["10"].weight, vgg.features[10].weight)
    # the package's shipped linear layers are loaded (not random)
    shipped = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
    torch.testing.assert_close(metric.model.lin0.model[1].weight, shipped.lin0.model[1].weight)
    pred, target = random_pair(4, (16, 24, 20))  # edges >= 16: VGG pools four times
    # reference: lpips called directly, one slice at a time
    ref = []
    for axis in range(3):
        vals = []
        for i in range(target.shape[axis]):
            a = torch.as_tensor(np.take(pred, i, axis), dtype=torch.float32)[None, None].repeat(1, 3, 1, 1) * 2 - 1
            b = torch.as_tensor(np.take(target, i, axis), dtype=torch.float32)[None, None].repeat(1, 3, 1, 1) * 2 - 1
            with torch.no_grad():
                vals.append(float(metric.model(a, b)))
        ref.append(np.mean(vals))
    assert metric(pred, target) == pytest.approx(float(np.mean(ref)), abs=1e-4)
    assert metric(target, target) == pytest.approx(0.0, abs=1e-6)


def test_lpips_missing_weights(tmp_path, monkeypatch):
    from duolift_bundle.metrics.perceptual import SliceLPIPS
    from duolift_bundle.metrics.weights import WeightsNotFoundError

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("DUOLIFT_VGG16_WEIGHTS", raising=False)
    with pytest.raises(WeightsNotFoundError, match="vgg16-397923af.pth.*download.pytorch.org"):
        SliceLPIPS()


def test_image_metrics_against_scikit_image():
    """The 2D metrics of the projection-consistency score (DRR of a reconstruction vs its input)."""
    from duolift_bundle.metrics import psnr_image, ssim_image

    pred, target = random_pair(5, (1, 32, 40))
    p, t = pred[0], target[0]
    assert psnr_image(p, t) == pytest.approx(peak_signal_noise_ratio(t, p, data_range=1.0), abs=1e-4)
    ref = structural_similarity(t, p, data_range=1.0, gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
    assert ssim_image(p, t) == pytest.approx(ref, abs=1e-4)
    with pytest.raises(ValueError, match="two 2D images"):
        psnr_image(p, t[:5])
