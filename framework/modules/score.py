"""ScoreDiffusion: the LightningModule that trains a noise-prediction network on a VP schedule.

It owns only training: the loss, EMA weights, the optimizer. Sampling and evaluation live
in framework.samplers.generate and framework.evaluation; a checkpoint holds the config, the schedule and the
EMA weights, so `ScoreDiffusion.load_from_checkpoint(path)` is all sample.py needs.
"""

from __future__ import annotations

from typing import Optional

import lightning as L
import torch

from ..config import call_with_section, to_dict, validate_config
from ..diffusion.denoiser import Denoiser
from ..diffusion.losses import diffusion_loss, sample_time
from ..diffusion.schedules import schedule_from_config
from .ema import EMA, EMATraining
from .optim import build_optimizer

NETWORKS = ("unet", "mlp")


def build_network(model_cfg: dict, data_shape, num_classes: Optional[int]):
    """The network named by model.name ('unet' for images, 'mlp' for vectors) with the remaining options."""
    model_cfg = dict(model_cfg)
    name = model_cfg.pop("name", "unet")
    conditional = model_cfg.pop("class_conditional", False)
    classes = num_classes if conditional else None
    if conditional and not num_classes:
        raise ValueError("model.class_conditional=true needs a data set with labels (num_classes)")
    if name == "unet":
        from models.unet import UNet

        return call_with_section(UNet, "model", model_cfg, in_channels=data_shape[0], image_size=data_shape[-1], num_classes=classes)
    if name == "mlp":
        from models.mlp import MLPDenoiser

        return call_with_section(MLPDenoiser, "model", model_cfg, dim=data_shape[0], num_classes=classes)
    raise ValueError(f"unknown model.name {name!r}; allowed: {', '.join(NETWORKS)}")


class ScoreDiffusion(EMATraining, L.LightningModule):
    """Noise-prediction training (Ho et al. 2020, Algorithm 1) with label dropout for classifier-free guidance."""

    def __init__(self, config: dict, data_shape: tuple, num_classes: Optional[int] = None):
        super().__init__()
        config = to_dict(validate_config(config))  # every default filled in from the schema
        self.save_hyperparameters({"config": config, "data_shape": list(data_shape), "num_classes": num_classes})
        diff = config["diffusion"]
        self.schedule = schedule_from_config(diff["schedule"])
        self.prediction = diff["prediction"]
        self.label_dropout = float(diff["label_dropout"])
        self.data_shape = tuple(data_shape)
        self.net = build_network(config["model"], self.data_shape, num_classes)
        self.conditional = getattr(self.net, "num_classes", None) is not None
        self.ema = EMA(self.net, decay=float(diff["ema_decay"]))
        self.seed = int(config["seed"])

    # --- training --------------------------------------------------------------
    def _labels(self, y: torch.Tensor, g: torch.Generator) -> Optional[torch.Tensor]:
        if not self.conditional:
            return None
        drop = torch.rand(y.shape, generator=g) < self.label_dropout
        return torch.where(drop.to(y.device), torch.full_like(y, self.net.null_label), y)

    def _loss(self, batch, g: torch.Generator) -> torch.Tensor:
        x0, y = batch
        t = sample_time(self.schedule, x0.shape[0], g, device=x0.device)
        noise = torch.randn(x0.shape, generator=g, dtype=x0.dtype).to(x0.device)
        return diffusion_loss(self.net, self.schedule, x0, t, noise, self._labels(y, g), self.prediction)

    def training_step(self, batch, batch_idx):
        loss = self._loss(batch, self._step_generator())
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=False)
        return loss

    def validation_step(self, batch, batch_idx):
        with self.ema_weights():
            loss = self._loss(batch, self._validation_generator(batch_idx))
        self.log("val/loss", loss, prog_bar=True, sync_dist=True, batch_size=batch[0].shape[0])

    def configure_optimizers(self):
        return build_optimizer(self.net.parameters(), **self.hparams.config["optimizer"])

    # --- sampling access -----------------------------------------------------------
    def denoiser(self, labels=None, guidance_scale: float = 1.0) -> Denoiser:
        """A Denoiser over the current network weights (use inside `ema_weights()` for the EMA ones)."""
        uncond = getattr(self.net, "null_label", None)
        return Denoiser(self.net, self.schedule, self.prediction, labels, guidance_scale, uncond)

