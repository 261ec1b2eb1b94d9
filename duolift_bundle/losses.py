"""The losses of DuoLift-GAN / DuoLift-CNN (paper: "Loss", Eq. 1-8).

All terms are means over the whole volume grid Omega, as the equations write them: the masked
terms (Eq. 3-4) are ``sum over Omega of (M*I - M*I_hat)^2 / |Omega|``, *not* normalised by the
mask's volume, so a small lung contributes less than a large one, exactly as in the paper.

The adversarial terms take the discriminator's logits: ``"bce"`` is Eq. 5-6 (binary cross
entropy, computed with ``binary_cross_entropy_with_logits`` for numerical stability), ``"lsgan"``
the least-squares GAN loss X2CT-GAN used (Mao et al. 2017: targets 1 / 0 on the raw outputs).

Deep supervision (the U-Net++ heads of :meth:`DuoLiftGenerator.forward_with_aux`): the paper
does not give the weighting. Zhou et al. (2018) weigh all heads equally, so each auxiliary
volume gets the whole-volume reconstruction terms (Eq. 1-2), averaged over the heads and scaled by
``deep_supervision_weight`` (default 0.5, i.e. the heads together count half as much as the
final output, which keeps the final U-Net the main objective). Set it to 0 to switch them off.

Bone terms (not in the paper; ``bone_weight``, default 0 = the paper's Eq. 7): bone is about 0.5 %
of a 64^3 chest's voxels and only about 0.25 above soft tissue on the [0, 1] scale, so Eq. 1-2 can
be lowered further by sharpening the lung edges than by placing the spine, and a model trained on
them outputs soft tissue where the vertebrae are. ``bone_mse`` / ``bone_l1`` are Eq. 3-4 with the
target's bone mask ``B = [I >= hu_to_unit(bone_hu)]`` in place of the lung mask (averaged over
Omega as well), added with weight ``alpha * bone_weight``: each bone voxel then counts
``1 + bone_weight`` times.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from duolift_bundle.errors import ConfigError, ShapeError
from duolift_bundle.geometry import CTProtocol

__all__ = [
    "reconstruction_terms",
    "bone_terms",
    "adversarial_loss",
    "DuoLiftGeneratorLoss",
    "DuoLiftDiscriminatorLoss",
    "ADVERSARIAL_MODES",
    "BONE_HU",
]

#: the adversarial terms: Eq. 5-6's cross-entropy, or least squares
ADVERSARIAL_MODES = ("bce", "lsgan")
#: the HU from which a target voxel counts as bone (cortical and dense trabecular bone; soft
#: tissue and contrast-free vessels stay below)
BONE_HU = 150.0


def _difference(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    if pred.shape != target.shape:
        raise ShapeError(f"prediction shape {list(pred.shape)} differs from target shape {list(target.shape)}")
    return pred - target


def _mse_l1(diff: torch.Tensor, name: str) -> dict[str, torch.Tensor]:
    """``{name}_mse`` and ``{name}_l1``: the mean over |Omega| of ``diff^2`` and ``|diff|`` (Eq. 1-2;
    Eq. 3-4 when ``diff`` is masked)."""
    return {f"{name}_mse": diff.square().mean(), f"{name}_l1": diff.abs().mean()}


def reconstruction_terms(
    pred: torch.Tensor, target: torch.Tensor, mask: Optional[torch.Tensor] = None
) -> dict[str, torch.Tensor]:
    """Eq. 1-4: ``recon_mse``, ``recon_l1`` and, with a mask, ``inside_mse``, ``inside_l1``.

    Args:
        pred, target: ``(B, 1, D, H, W)`` volumes in [0, 1].
        mask: ``(B, 1, D, H, W)`` lung mask (0 / 1, any dtype) or None.

    Returns:
        Scalar tensors; every term is averaged over all voxels of the batch (|Omega|).
    """
    diff = _difference(pred, target)
    terms = _mse_l1(diff, "recon")
    if mask is not None:
        if mask.shape != pred.shape:
            raise ShapeError(f"lung mask shape {list(mask.shape)} differs from volume shape {list(pred.shape)}")
        terms.update(_mse_l1(diff * mask.to(diff.dtype), "inside"))  # M*I - M*I_hat
    return terms


def bone_terms(pred: torch.Tensor, target: torch.Tensor, bone_level: float) -> dict[str, torch.Tensor]:
    """``bone_mse`` and ``bone_l1``: Eq. 3-4 with the bone mask ``B = [target >= bone_level]``.

    Args:
        pred, target: ``(B, 1, D, H, W)`` volumes in [0, 1] (``CTProtocol.to_unit``).
        bone_level: the [0, 1] value from which a target voxel counts as bone
            (``protocol.to_unit(bone_hu)``).

    Returns:
        ``sum over Omega of (B*I - B*I_hat)^2 / |Omega|`` and the same with ``|.|``, scalar tensors.
    """
    return _mse_l1(_difference(pred, target) * (target >= bone_level).to(pred.dtype), "bone")


def _check_adversarial(mode: str) -> str:
    if mode not in ADVERSARIAL_MODES:
        raise ConfigError(f"adversarial must be one of {ADVERSARIAL_MODES}, got {mode!r}")
    return mode


def adversarial_loss(logits: torch.Tensor, real: bool, mode: str = "bce") -> torch.Tensor:
    """``-log D`` (``real=True``) or ``-log(1 - D)`` (``real=False``) of logits, averaged over the
    logit map; ``mode="lsgan"`` gives ``mean((D - 1)^2)`` / ``mean(D^2)`` instead."""
    target = torch.ones_like(logits) if real else torch.zeros_like(logits)
    if _check_adversarial(mode) == "bce":
        return F.binary_cross_entropy_with_logits(logits, target)
    return F.mse_loss(logits, target)


class DuoLiftGeneratorLoss(nn.Module):
    """Eq. 7: ``L_G = alpha * (L_recon^MSE + L_recon^L1 + L_inside^MSE + L_inside^L1) + beta * L_ag``,
    plus ``alpha * bone_weight * (L_bone^MSE + L_bone^L1)`` where ``bone_weight > 0`` (module docstring).

    Args:
        alpha, beta: the weights of Eq. 7 (paper: 1.0 and 0.01).
        masked: include the lung-masked terms (DuoLift-GAN: True; DuoLift-CNN: False).
        adversarial: "bce" (Eq. 5) or "lsgan".
        deep_supervision_weight: weight of the mean auxiliary-head reconstruction loss.
        bone_weight: weight of the bone terms (0: off, the paper's loss).
        bone_hu: the HU from which a target voxel is bone.
        protocol: the :class:`CTProtocol` whose HU window places ``bone_hu`` on the [0, 1] scale.

    ``forward(pred, target, mask=None, fake_logits=None, aux=())`` returns a dict with ``loss``
    (the total) and every term (``recon_mse``, ``recon_l1``, ``inside_mse``, ``inside_l1``,
    ``bone_mse``, ``bone_l1``, ``adv_g``, ``deep_supervision``) as scalar tensors that keep their graph.
    """

    def __init__(
        self,
        alpha: float = 1.0,
        beta: float = 0.01,
        masked: bool = True,
        adversarial: str = "bce",
        deep_supervision_weight: float = 0.5,
        bone_weight: float = 0.0,
        bone_hu: float = BONE_HU,
        protocol: CTProtocol | None = None,
    ) -> None:
        super().__init__()
        _check_adversarial(adversarial)
        if min(alpha, beta, deep_supervision_weight, bone_weight) < 0:
            raise ConfigError(
                f"loss weights must be >= 0, got alpha={alpha}, beta={beta}, "
                f"deep_supervision_weight={deep_supervision_weight}, bone_weight={bone_weight}"
            )
        self.alpha = alpha
        self.beta = beta
        self.masked = masked
        self.adversarial = adversarial
        self.deep_supervision_weight = deep_supervision_weight
        self.bone_weight = bone_weight
        self.bone_hu = bone_hu
        self.bone_level = float((protocol or CTProtocol()).to_unit(bone_hu))

    def forward(
        self,
        pred: torch.Tensor,
        target: torch.Tensor,
        mask: Optional[torch.Tensor] = None,
        fake_logits: Optional[torch.Tensor] = None,
        aux: Sequence[torch.Tensor] = (),
    ) -> dict[str, torch.Tensor]:
        if self.masked and mask is None:
            raise ConfigError("the masked loss (Eq. 3-4) needs the lung mask; set masked=False for DuoLift-CNN")
        terms = reconstruction_terms(pred, target, mask if self.masked else None)
        total = self.alpha * sum(terms.values())
        if self.bone_weight > 0:
            bone = bone_terms(pred, target, self.bone_level)
            terms.update(bone)
            total = total + self.alpha * self.bone_weight * sum(bone.values())
        if fake_logits is not None:
            terms["adv_g"] = adversarial_loss(fake_logits, True, self.adversarial)
            total = total + self.beta * terms["adv_g"]
        if len(aux) and self.deep_supervision_weight > 0:
            heads = [sum(reconstruction_terms(a, target).values()) for a in aux]
            terms["deep_supervision"] = torch.stack(heads).mean()
            total = total + self.deep_supervision_weight * terms["deep_supervision"]
        terms["loss"] = total
        return terms


class DuoLiftDiscriminatorLoss(nn.Module):
    """Eq. 8: ``L_D = beta * L_ad`` with Eq. 6 ``L_ad = -log D(y) - log(1 - D(G(x)))``.

    ``forward(real_logits, fake_logits)`` returns ``{"loss", "adv_d_real", "adv_d_fake"}``.
    """

    def __init__(self, beta: float = 0.01, adversarial: str = "bce") -> None:
        super().__init__()
        self.beta = beta
        self.adversarial = _check_adversarial(adversarial)

    def forward(self, real_logits: torch.Tensor, fake_logits: torch.Tensor) -> dict[str, torch.Tensor]:
        real = adversarial_loss(real_logits, True, self.adversarial)
        fake = adversarial_loss(fake_logits, False, self.adversarial)
        return {"loss": self.beta * (real + fake), "adv_d_real": real, "adv_d_fake": fake}
