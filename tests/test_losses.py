"""Losses (paper Eq. 1-8) against values computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
from duolift_bundle.losses import (
    DuoLiftDiscriminatorLoss,
    DuoLiftGeneratorLoss,
    adversarial_loss,
    bone_terms,
    reconstruction_terms,
)


def tiny_case():
    """A 1x1x1x2x2 volume pair; by hand: diff = [0.5, -0.25, 0, 1]; mask = [1, 1, 0, 0]."""
    target = torch.tensor([0.0, 0.5, 0.2, 0.0]).reshape(1, 1, 1, 2, 2)
    pred = torch.tensor([0.5, 0.25, 0.2, 1.0]).reshape(1, 1, 1, 2, 2)
    mask = torch.tensor([1, 1, 0, 0], dtype=torch.uint8).reshape(1, 1, 1, 2, 2)
    return pred, target, mask


def test_reconstruction_terms_by_hand():
    pred, target, mask = tiny_case()
    t = reconstruction_terms(pred, target, mask)
    assert t["recon_mse"].item() == pytest.approx((0.25 + 0.0625 + 0 + 1) / 4)  # Eq. 1
    assert t["recon_l1"].item() == pytest.approx((0.5 + 0.25 + 0 + 1) / 4)  # Eq. 2
    # Eq. 3-4: masked differences, still divided by |Omega| = 4 (not by the mask's 2 voxels)
    assert t["inside_mse"].item() == pytest.approx((0.25 + 0.0625) / 4)
    assert t["inside_l1"].item() == pytest.approx((0.5 + 0.25) / 4)
    assert set(reconstruction_terms(pred, target)) == {"recon_mse", "recon_l1"}


@pytest.mark.parametrize("logit", [-2.0, 0.0, 3.0])
def test_adversarial_bce_matches_eq5_eq6(logit):
    logits = torch.full((1, 1, 5, 5, 5), logit)
    d = 1 / (1 + math.exp(-logit))
    assert adversarial_loss(logits, True).item() == pytest.approx(-math.log(d), rel=1e-5)  # Eq. 5
    assert adversarial_loss(logits, False).item() == pytest.approx(-math.log(1 - d), rel=1e-5)
    assert adversarial_loss(logits, True, "lsgan").item() == pytest.approx((logit - 1) ** 2)
    assert adversarial_loss(logits, False, "lsgan").item() == pytest.approx(logit**2)


def test_generator_loss_eq7_totals():
    pred, target, mask = tiny_case()
    fake_logits = torch.zeros(1, 1, 5, 5, 5)  # D = 0.5 -> L_ag = log 2
    gan = DuoLiftGeneratorLoss(alpha=1.0, beta=0.01)(pred, target, mask, fake_logits)
    recon = (1.3125 + 1.75) / 4
    inside = (0.3125 + 0.75) / 4
    assert gan["adv_g"].item() == pytest.approx(math.log(2), rel=1e-6)
    assert gan["loss"].item() == pytest.approx(recon + inside + 0.01 * math.log(2), rel=1e-6)
    cnn = DuoLiftGeneratorLoss(masked=False)(pred, target)
    assert cnn["loss"].item() == pytest.approx(recon, rel=1e-6)
    assert "inside_mse" not in cnn and "adv_g" not in cnn
    weighted = DuoLiftGeneratorLoss(alpha=2.0, beta=0.5)(pred, target, mask, fake_logits)
    assert weighted["loss"].item() == pytest.approx(2 * (recon + inside) + 0.5 * math.log(2), rel=1e-6)


def test_deep_supervision_term():
    pred, target, mask = tiny_case()
    aux = [target.clone(), pred.clone()]  # heads: perfect one and one equal to pred
    out = DuoLiftGeneratorLoss(masked=False, deep_supervision_weight=0.5)(pred, target, aux=aux)
    recon = (1.3125 + 1.75) / 4
    assert out["deep_supervision"].item() == pytest.approx(recon / 2)
    assert out["loss"].item() == pytest.approx(recon + 0.5 * recon / 2)
    off = DuoLiftGeneratorLoss(masked=False, deep_supervision_weight=0.0)(pred, target, aux=aux)
    assert "deep_supervision" not in off


@pytest.mark.parametrize("bone_hu, bone", [(150.0, [0, 0, 1, 1]), (500.0, [0, 0, 0, 1]), (2000.0, [0, 0, 0, 0])])
def test_bone_terms_mask_the_target_from_bone_hu(bone_hu, bone):
    """Bone terms: Eq. 3-4 with the mask [target >= bone_hu] (on the HU window 0..2500 of
    HU + 1024), by hand; in the total with weight alpha * bone_weight, and absent at weight 0."""
    hu = torch.tensor([-1000.0, 100.0, 200.0, 700.0])
    target = ((hu + 1024) / 2500).reshape(1, 1, 1, 2, 2)
    pred = target + torch.tensor([0.1, -0.2, 0.3, -0.4]).reshape(1, 1, 1, 2, 2)
    diff = [0.1, -0.2, 0.3, -0.4]
    mse = sum(b * d * d for b, d in zip(bone, diff)) / 4
    l1 = sum(b * abs(d) for b, d in zip(bone, diff)) / 4
    t = bone_terms(pred, target, (bone_hu + 1024) / 2500)
    assert t["bone_mse"].item() == pytest.approx(mse, abs=1e-7)
    assert t["bone_l1"].item() == pytest.approx(l1, abs=1e-7)
    recon = sum(d * d for d in diff) / 4 + sum(abs(d) for d in diff) / 4
    out = DuoLiftGeneratorLoss(alpha=2.0, masked=False, bone_weight=5.0, bone_hu=bone_hu)(pred, target)
    assert out["loss"].item() == pytest.approx(2.0 * (recon + 5.0 * (mse + l1)), rel=1e-5)
    assert "bone_mse" not in DuoLiftGeneratorLoss(masked=False)(pred, target)
    with pytest.raises(ValueError, match="bone_weight=-1"):
        DuoLiftGeneratorLoss(bone_weight=-1.0)


def test_discriminator_loss_eq8():
    real = torch.full((2, 1, 5, 5, 5), 1.0)
    fake = torch.full((2, 1, 5, 5, 5), -1.0)
    out = DuoLiftDiscriminatorLoss(beta=0.01)(real, fake)
    expected = -math.log(1 / (1 + math.exp(-1.0))) * 2  # -log D(y) - log(1 - D(G(x))), symmetric here
    assert out["loss"].item() == pytest.approx(0.01 * expected, rel=1e-5)


def test_loss_errors():
    pred, target, mask = tiny_case()
    with pytest.raises(ValueError, match="needs the lung mask"):
        DuoLiftGeneratorLoss()(pred, target)
    with pytest.raises(ValueError, match="differs from target shape"):
        reconstruction_terms(pred, target[..., :1])
    with pytest.raises(ValueError, match="lung mask shape"):
        reconstruction_terms(pred, target, mask[..., :1])
    with pytest.raises(ValueError, match="adversarial must be one of"):
        DuoLiftGeneratorLoss(adversarial="wgan")
