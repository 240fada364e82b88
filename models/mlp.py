"""A residual MLP denoiser for vector data (the toy Gaussian mixtures with exact oracles).

Same contract as the UNet: forward(x [B, dim], t [B] in [0, 1], labels [B] | None)
returns a prediction of x's shape, and `null_label` is the classifier-free-guidance
unconditional label when the network is class-conditional.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .embeddings import ConditionedNetwork, Conditioning, time_vector


class MLPBlock(nn.Module):
    """h + W2 SiLU(W1 SiLU(LayerNorm(h) + emb)): a pre-norm residual block conditioned by addition."""

    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.net = nn.Sequential(nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU(), nn.Linear(hidden, hidden))

    def forward(self, h: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return h + self.net(self.norm(h) + emb)


class MLPDenoiser(ConditionedNetwork, nn.Module):
    """forward(x [B, dim], t, labels=None) -> [B, dim]; `depth` residual blocks of width `hidden`.

    The output layer starts at zero, so an untrained model predicts zero. With
    `num_classes=K`, labels in 0..K-1 condition it and `null_label` (= K) or
    labels=None mean unconditional. Cast with `.double()` to run in float64.
    """

    def __init__(self, dim: int, hidden: int = 128, depth: int = 3, num_classes: Optional[int] = None,
                 time_scale: float = 1000.0):
        super().__init__()
        if dim < 1 or hidden < 2 or hidden % 2 or depth < 1:
            raise ValueError(f"MLPDenoiser needs dim >= 1, an even hidden >= 2 and depth >= 1, "
                             f"got dim={dim}, hidden={hidden}, depth={depth}")
        self.dim = dim
        self.cond = Conditioning(hidden, hidden, num_classes, time_scale)
        self.inp = nn.Linear(dim, hidden)
        self.blocks = nn.ModuleList([MLPBlock(hidden) for _ in range(depth)])
        self.out = nn.Sequential(nn.LayerNorm(hidden), nn.SiLU(), nn.Linear(hidden, dim))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, t, labels: Optional[torch.Tensor] = None) -> torch.Tensor:
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"MLPDenoiser expects x of shape [B, {self.dim}] (dim), got {tuple(x.shape)}")
        emb = self.cond(time_vector(t, x.shape[0], x), labels, x.dtype)
        h = self.inp(x)
        for block in self.blocks:
            h = block(h, emb)
        return self.out(h)
