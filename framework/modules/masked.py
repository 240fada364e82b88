"""MaskedDiffusion: the LightningModule training a time-free bidirectional transformer with the
masked-diffusion ELBO (Zheng et al. 2024; MDLM).

The module owns training only: the ELBO (time or count form, stratified), EMA, the optimizer and the
validation NLL bound in bits per token. The tokenizer JSON and the config live in the hyper-parameters,
so `MaskedDiffusion.load_from_checkpoint(path)` rebuilds everything. Sampling and evaluation live in
framework.samplers.generate, framework.evaluation and framework.experiments.text.
"""

from __future__ import annotations

import math

import lightning as L
import torch

from ..config import to_dict, validate_config
from ..diffusion.masked_loss import elbo_estimate
from ..diffusion.masking import build_masking_schedule
from .ema import EMA, EMATraining
from .optim import build_optimizer


class MaskedDiffusion(EMATraining, L.LightningModule):
    """Masked diffusion LM: loss = negative ELBO per token (nats); val/nll and val/bpt on EMA weights."""

    def __init__(self, config: dict, tokenizer_json: str):
        super().__init__()
        config = to_dict(validate_config({**to_dict(config), "kind": "masked"}))  # every default filled in
        self.save_hyperparameters({"config": config, "tokenizer_json": tokenizer_json})
        from models.transformer import MaskedTransformer
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.vocab_size = self.tokenizer.get_vocab_size()
        self.mask_id = self.vocab_size
        self.seq_len = int(config["data"]["seq_len"])
        diff = config["diffusion"]
        self.schedule = build_masking_schedule(**diff["schedule"])
        self.loss_form, self.stratified = diff["loss"], bool(diff["stratified"])
        model_cfg = {k: v for k, v in config["model"].items() if k != "name"}
        self.net = MaskedTransformer(vocab_size=self.vocab_size, max_len=self.seq_len, **model_cfg)
        self.ema = EMA(self.net, decay=float(diff["ema_decay"]))
        self.seed = int(config["seed"])

    def _nll_per_token(self, tokens: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        est = elbo_estimate(self.net, tokens, self.mask_id, self.loss_form, self.schedule, g, self.stratified)
        return est.mean() / tokens.shape[1]

    def training_step(self, batch, batch_idx):
        loss = self._nll_per_token(batch[0], self._step_generator())
        self.log("train/loss", loss.float(), prog_bar=True, on_step=True, on_epoch=False)
        return loss.float()

    def validation_step(self, batch, batch_idx):
        with self.ema_weights():
            nll = self._nll_per_token(batch[0], self._validation_generator(batch_idx))
        n = batch[0].shape[0]
        self.log("val/nll", nll.float(), prog_bar=True, sync_dist=True, batch_size=n)
        self.log("val/bpt", (nll / math.log(2)).float(), sync_dist=True, batch_size=n)

    def configure_optimizers(self):
        return build_optimizer(self.net.parameters(), **self.hparams.config["optimizer"])
