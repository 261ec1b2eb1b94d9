"""The conditional-GAN trainer of DuoLift-GAN (and, with the discriminator off, of DuoLift-CNN).

MONAI's ``GanTrainer`` feeds latent noise to G and ``AdversarialTrainer`` treats its inputs as
the reals; neither fits a conditional X-ray -> CT GAN, so this is a ``monai.engines.Trainer``
subclass (an Ignite engine) with the paper's recipe ("Train", "Loss"): separate Adam optimizers
for G and D, gradient accumulation over N batches for both (paper: batch 1, N = 4), Eq. 7 / Eq. 8
losses, AMP where a GPU is present.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
import torch.nn as nn
from duolift_bundle.constants import LUNG_MASK_KEY
from duolift_bundle.engines.batches import plain, prepare_xray_batch
from duolift_bundle.engines.resume import capture_rng, restore_rng
from duolift_bundle.errors import ConfigError, DuoLiftError
from duolift_bundle.networks.loading import unwrap
from ignite.engine import Events
from monai.engines import Trainer
from monai.engines.utils import default_metric_cmp_fn
from monai.engines.workflow import Workflow
from monai.utils import CommonKeys, GanKeys
from torch.utils.data import DataLoader

__all__ = ["DuoLiftTrainer", "NonFiniteLossError"]

logger = logging.getLogger(__name__)


class NonFiniteLossError(DuoLiftError, RuntimeError):
    """A loss became NaN or Inf; raised before the optimizer could use it."""


class DuoLiftTrainer(Trainer):
    """Ignite/MONAI trainer for DuoLift-GAN (``d_network`` given) or DuoLift-CNN (``d_network=None``).

    One iteration on a batch ``{"xray": (B, V, H, W), "ct": (B, 1, D, H, W), "lung_mask": ...}``:

    1. ``pred = G(xray)`` (``G`` may return ``(pred, aux)``: the deep-supervision volumes of
       :class:`~duolift_bundle.networks.WithAuxiliaryOutputs`);
    2. GAN only: ``L_D = d_loss_function(D(ct), D(pred.detach()))`` (Eq. 8), backward;
    3. ``L_G = g_loss_function(pred, ct, mask, D(pred), aux)`` (Eq. 7; D evaluated with detached
       parameters so G's adversarial gradient does not leak into D's gradients), backward;
    4. every ``accumulation_steps`` iterations (and at the end of each epoch, so no partial
       window crosses an epoch boundary or a checkpoint) each optimizer steps and its gradients
       are cleared. Losses are divided by ``accumulation_steps`` before backward, so N batches of
       1 give the gradient of one batch of N.

    The trainer's state (what a full checkpoint keeps as ``trainer``) is Ignite's (iteration,
    epoch length, epoch budget) plus the random state of the moment it was taken and the AMP
    gradient scalers. A run resumed from the middle of an epoch (a checkpoint of
    :class:`~duolift_bundle.engines.preemption.Preemption`) skips the batches that epoch has
    trained on (its sampler must be a :class:`~duolift_bundle.engines.resume.ResumableSampler`)
    and takes that random state back before its first batch, so it repeats the uninterrupted run.

    A NaN / Inf loss raises :class:`NonFiniteLossError` naming the iteration and epoch before
    anything is updated with it; checkpoints on disk are not touched.

    ``engine.state.output`` is a dict of floats: ``g_loss`` (also as ``loss``), ``d_loss`` (GAN only) and every
    loss term (``recon_mse``, ``recon_l1``, ``inside_mse``, ``inside_l1``, ``adv_g``,
    ``adv_d_real``, ``adv_d_fake``, ``deep_supervision``), for StatsHandler / TensorBoard / MLflow.

    Args:
        device: training device.
        max_epochs: epochs to train.
        train_data_loader: yields batches in the data contract.
        g_network, g_optimizer, g_loss_function: generator, its optimizer and
            :class:`~duolift_bundle.losses.DuoLiftGeneratorLoss`.
        d_network, d_optimizer, d_loss_function: discriminator side; all None for DuoLift-CNN.
        accumulation_steps: N of the gradient accumulation (paper: 4).
        amp: mixed precision (only on CUDA devices; ignored with a log line on CPU).
        other arguments: as :class:`monai.engines.Trainer`.
    """

    def __init__(
        self,
        device: torch.device | str,
        max_epochs: int,
        train_data_loader: Iterable | DataLoader,
        g_network: nn.Module,
        g_optimizer: torch.optim.Optimizer,
        g_loss_function: Callable,
        d_network: Optional[nn.Module] = None,
        d_optimizer: Optional[torch.optim.Optimizer] = None,
        d_loss_function: Optional[Callable] = None,
        accumulation_steps: int = 1,
        epoch_length: Optional[int] = None,
        non_blocking: bool = False,
        prepare_batch: Callable = prepare_xray_batch,
        iteration_update: Optional[Callable] = None,
        postprocessing: Optional[Callable] = None,
        key_train_metric: Optional[dict] = None,
        additional_metrics: Optional[dict] = None,
        metric_cmp_fn: Callable = default_metric_cmp_fn,
        train_handlers: Optional[Sequence] = None,
        amp: bool = False,
    ) -> None:
        if accumulation_steps < 1:
            raise ConfigError(f"accumulation_steps must be >= 1, got {accumulation_steps}")
        gan_parts = [d_network is None, d_optimizer is None, d_loss_function is None]
        if any(gan_parts) and not all(gan_parts):
            raise ConfigError("give d_network, d_optimizer and d_loss_function together (GAN) or none of them (CNN)")
        device = torch.device(device)
        use_amp = bool(amp) and device.type == "cuda"
        if amp and not use_amp:
            logger.info("amp requested on %s: mixed precision runs on CUDA only, training in fp32", device)
        super().__init__(
            device=device,
            max_epochs=max_epochs,
            data_loader=train_data_loader,
            epoch_length=epoch_length,
            non_blocking=non_blocking,
            prepare_batch=prepare_batch,
            iteration_update=iteration_update,
            postprocessing=postprocessing,
            key_metric=key_train_metric,
            additional_metrics=additional_metrics,
            metric_cmp_fn=metric_cmp_fn,
            handlers=train_handlers,
            amp=use_amp,
            decollate=False,
        )
        self.g_network = g_network
        self.g_optimizer = g_optimizer
        self.g_loss_function = g_loss_function
        self.d_network = d_network
        self.d_optimizer = d_optimizer
        self.d_loss_function = d_loss_function
        self.accumulation_steps = accumulation_steps
        self.g_scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        self.d_scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
        d_core = unwrap(d_network) if d_network is not None else None
        self.d_condition = bool(getattr(d_core, "condition_views", 0))
        self.d_masked = bool(getattr(d_core, "masked_input", False))
        self._resume_rng: Optional[dict] = None  # random state to take back before the next batch
        self._resume_skip = 0  # batches of the resumed epoch already trained on
        # after the per-epoch reseeding and MONAI's sampler.set_epoch (both attached before)
        self.add_event_handler(Events.EPOCH_STARTED, self._skip_trained_batches)
        self.add_event_handler(Events.GET_BATCH_STARTED, self._take_back_rng)

    def state_dict(self) -> Any:
        state = super().state_dict()
        state["rng"] = capture_rng()
        state["scalers"] = {"g": self.g_scaler.state_dict(), "d": self.d_scaler.state_dict()}
        return state

    def load_state_dict(self, state_dict: Any) -> None:
        state = dict(state_dict)
        rng, scalers = state.pop("rng", None), state.pop("scalers", {})
        super().load_state_dict(state)
        for name, scaler in (("g", self.g_scaler), ("d", self.d_scaler)):
            if scaler.is_enabled() and scalers.get(name):  # a CPU checkpoint holds empty (disabled) ones
                scaler.load_state_dict(scalers[name])
        length = self.state.epoch_length
        within = int(self.state.iteration) % int(length) if length else 0
        if within:
            self._resume_skip, self._resume_rng = within, rng
            logger.info("resuming epoch %d after its batch %d of %d", self.state.epoch + 1, within, length)

    def _skip_trained_batches(self, engine: Any) -> None:
        if not self._resume_skip:
            return
        sampler = getattr(self.data_loader, "sampler", None)
        if hasattr(sampler, "skip_next"):
            sampler.skip_next(self._resume_skip * int(getattr(self.data_loader, "batch_size", None) or 1))
        else:
            logger.warning(
                "the data loader's sampler (%s) cannot skip the batches the resumed epoch trained on: the epoch "
                "trains on its first batches again instead of those it had not reached (use "
                "duolift_bundle.engines.ResumableSampler for an exact resume)",
                type(sampler).__name__,
            )
        self._resume_skip = 0

    def _take_back_rng(self, engine: Any) -> None:
        if self._resume_rng is not None:
            restore_rng(self._resume_rng)
            self._resume_rng = None

    def run(self) -> None:  # type: ignore[override]
        # MONAI's Trainer.run only adds one GradScaler before Workflow.run; this trainer made one
        # per optimizer in __init__, so it starts Workflow.run itself
        Workflow.run(self)

    def _check_finite(self, name: str, value: torch.Tensor, engine: Any) -> None:
        if not bool(torch.isfinite(value.detach()).all()):
            raise NonFiniteLossError(
                f"{name} is {float(value.detach())} at iteration {engine.state.iteration} (epoch {engine.state.epoch}); "
                "training stopped before any update with it. The last full checkpoint on disk is kept: "
                "lower the learning rate or check the data, then resume with --resume true."
            )

    def _backward(self, engine: Any, name: str, terms: dict, scaler, optimizer, n: int, step_now: bool) -> float:
        """Check the loss, backward ``loss / n`` (accumulation), step and clear at window ends."""
        self._check_finite(name, terms["loss"], engine)
        scaler.scale(terms["loss"] / n).backward()
        if step_now:
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        return float(terms["loss"].detach())

    def _discriminate(self, volume: torch.Tensor, xray: torch.Tensor, mask: Optional[torch.Tensor]) -> torch.Tensor:
        assert self.d_network is not None
        return self.d_network(volume, xray if self.d_condition else None, mask if self.d_masked else None)

    def _discriminate_frozen(
        self, volume: torch.Tensor, xray: torch.Tensor, mask: Optional[torch.Tensor]
    ) -> torch.Tensor:
        """D(volume) with D's parameters detached: G's adversarial gradient flows into ``volume``
        only, never into D's (possibly mid-accumulation) gradients. Calls the unwrapped module,
        so no DistributedDataParallel reduction is expected for this pass."""
        assert self.d_network is not None
        d_core = unwrap(self.d_network)
        state = {k: v.detach() for k, v in d_core.named_parameters()}
        state.update(dict(d_core.named_buffers()))
        args = (volume, xray if self.d_condition else None, mask if self.d_masked else None)
        return torch.func.functional_call(d_core, state, args)

    def _iteration(self, engine: Any, batchdata: dict) -> dict:
        if batchdata is None:
            raise ConfigError("must provide batch data for current iteration.")
        xray, ct = engine.prepare_batch(batchdata, engine.state.device, engine.non_blocking)[:2]
        mask = batchdata.get(LUNG_MASK_KEY)
        if mask is not None:
            mask = plain(mask).to(engine.state.device, non_blocking=engine.non_blocking).to(ct.dtype)
        n = self.accumulation_steps
        it = engine.state.iteration
        epoch_end = bool(engine.state.epoch_length) and it % engine.state.epoch_length == 0
        step_now = it % n == 0 or epoch_end
        autocast = torch.autocast("cuda", enabled=self.amp)
        output: dict[str, float] = {}

        self.g_network.train()
        with autocast:
            out = self.g_network(xray)
        pred, aux = (out[0], list(out[1])) if isinstance(out, (tuple, list)) else (out, [])

        if self.d_network is not None:
            assert self.d_optimizer is not None and self.d_loss_function is not None
            self.d_network.train()
            with autocast:
                d_terms = self.d_loss_function(
                    self._discriminate(ct, xray, mask), self._discriminate(pred.detach(), xray, mask)
                )
            output[GanKeys.DLOSS] = self._backward(
                engine, GanKeys.DLOSS, d_terms, self.d_scaler, self.d_optimizer, n, step_now
            )
            output.update({k: float(v.detach()) for k, v in d_terms.items() if k != "loss"})

        fake_logits = None
        with autocast:
            if self.d_network is not None:
                fake_logits = self._discriminate_frozen(pred, xray, mask)
            g_terms = self.g_loss_function(pred, ct, mask, fake_logits, aux)
        output[GanKeys.GLOSS] = self._backward(
            engine, GanKeys.GLOSS, g_terms, self.g_scaler, self.g_optimizer, n, step_now
        )
        # the key MONAI's default handler settings (e.g. --tracking mlflow) read
        output[CommonKeys.LOSS] = output[GanKeys.GLOSS]
        output.update({k: float(v.detach()) for k, v in g_terms.items() if k != "loss"})
        return output
