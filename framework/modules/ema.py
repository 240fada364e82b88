"""Exponential moving average of a network's weights, kept inside the LightningModule.

Kept in the module (not a callback) so that checkpoints hold it and resuming restores it
bit for bit; `swapped()` puts the EMA weights in place for sampling and validation (as mdlm does).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn


class EMA(nn.Module):
    """shadow <- decay * shadow + (1 - decay) * param, with decay warmed up as min(decay, (1 + n) / (10 + n))."""

    def __init__(self, model: nn.Module, decay: float = 0.999, warmup: bool = True):
        super().__init__()
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"ema decay must be in [0, 1), got {decay}")
        self.decay, self.warmup = float(decay), warmup
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self.shadow = nn.ParameterList([nn.Parameter(p.detach().clone(), requires_grad=False) for p in model.parameters()])

    def current_decay(self) -> float:
        n = int(self.num_updates)
        return min(self.decay, (1 + n) / (10 + n)) if self.warmup else self.decay

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        decay = self.current_decay()
        for s, p in zip(self.shadow, model.parameters()):
            s.lerp_(p.detach().to(s.dtype), 1.0 - decay)
        self.num_updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        for s, p in zip(self.shadow, model.parameters()):
            p.copy_(s)

    @contextmanager
    def swapped(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the EMA weights into `model`, restoring the trained ones afterwards."""
        backup = [p.detach().clone() for p in model.parameters()]
        self.copy_to(model)
        try:
            yield model
        finally:
            with torch.no_grad():
                for b, p in zip(backup, model.parameters()):
                    p.copy_(b)


class EMATraining:
    """Mixin for a LightningModule with `self.net`, `self.ema` and `self.seed`: the EMA and noise
    bookkeeping that the image and the text modules share."""

    def optimizer_step(self, *args, **kwargs):
        """Update the EMA right after the weights: a checkpoint saved at this step's end then holds both."""
        super().optimizer_step(*args, **kwargs)
        self.ema.update(self.net)

    @contextmanager
    def ema_weights(self):
        """The EMA weights in place of the trained ones (for validation and sampling)."""
        with self.ema.swapped(self.net):
            yield self.net

    def _step_generator(self) -> torch.Generator:
        """Training noise for this step from (seed, step, rank): ranks never share noise, and a resumed run replays it."""
        return torch.Generator().manual_seed(hash((self.seed, int(self.global_step), self.global_rank)) % (2**62))

    def _validation_generator(self, batch_idx: int) -> torch.Generator:
        """The same noise at every validation, so validation losses are comparable across epochs."""
        return torch.Generator().manual_seed(self.seed * 7919 + batch_idx)
