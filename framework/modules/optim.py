"""AdamW with linear warm-up, shared by the image and the text modules."""

from __future__ import annotations

from typing import Iterable

import torch


def build_optimizer(params: Iterable, lr: float = 2e-4, weight_decay: float = 0.0, betas=(0.9, 0.999), warmup_steps: int = 0):
    """Return Lightning's configure_optimizers dict: AdamW, lr ramped linearly over `warmup_steps` then constant."""
    if lr <= 0:
        raise ValueError(f"optimizer.lr must be > 0, got {lr}")
    if warmup_steps < 0:
        raise ValueError(f"optimizer.warmup_steps must be >= 0, got {warmup_steps}")
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, betas=tuple(betas))
    warm = max(int(warmup_steps), 1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warm))
    return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}
