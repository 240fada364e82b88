"""Time and class conditioning shared by the networks in this package.

Both the image UNet and the vector MLP read continuous time t in [0, 1] and an
optional class label through the same two pieces, so their conditioning behaves
alike and the classifier-free-guidance "null" label means the same thing in both.
"""

from __future__ import annotations

import math
from typing import Optional

import torch
from torch import nn


def sinusoidal_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Transformer-style sin/cos features of t [B] -> [B, dim] (dim even), computed in t's dtype."""
    if dim % 2:
        raise ValueError(f"time embedding dim must be even, got {dim}")
    half = dim // 2
    exponent = torch.arange(half, dtype=t.dtype, device=t.device) / half
    freqs = torch.exp(-math.log(max_period) * exponent)
    angles = t.unsqueeze(-1) * freqs
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def time_vector(t, batch: int, like: torch.Tensor) -> torch.Tensor:
    """Broadcast t (a number, a 0-d tensor or a [batch] tensor) to a float [batch] tensor on like's device.

    Raises ValueError when t has another shape, so a [B, 1] or mismatched time is not silently broadcast.
    """
    t = torch.as_tensor(t, device=like.device)
    if not t.is_floating_point():
        t = t.to(torch.float64)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"t must be a scalar or a tensor of shape [{batch}] (the batch size), got {tuple(t.shape)}")
    return t


class Conditioning(nn.Module):
    """Embed time (sinusoid of time_scale * t, then a 2-layer MLP) and add an optional class embedding.

    With num_classes=K the class table has K + 1 rows; row K (`null_label`) is the
    unconditional label used for classifier-free guidance and whenever labels is None.
    """

    def __init__(self, freq_dim: int, emb_dim: int, num_classes: Optional[int] = None, time_scale: float = 1000.0):
        super().__init__()
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise ValueError(f"num_classes must be None or a positive int, got {num_classes!r}")
        if not time_scale > 0:
            raise ValueError(f"time_scale must be positive, got {time_scale}")
        self.freq_dim, self.time_scale, self.num_classes = freq_dim, float(time_scale), num_classes
        self.time_mlp = nn.Sequential(nn.Linear(freq_dim, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.class_emb = nn.Embedding(num_classes + 1, emb_dim) if num_classes is not None else None

    @property
    def null_label(self) -> Optional[int]:
        """Index of the unconditional label (num_classes), or None for an unconditional network."""
        return self.num_classes

    def forward(self, t: torch.Tensor, labels: Optional[torch.Tensor], dtype: torch.dtype) -> torch.Tensor:
        """[B] times (and [B] long labels or None) -> [B, emb_dim] conditioning vectors in `dtype`."""
        freqs = sinusoidal_embedding(self.time_scale * t.to(torch.float64), self.freq_dim).to(dtype)
        emb = self.time_mlp(freqs)
        if self.class_emb is None:
            if labels is not None:
                raise ValueError("labels were given to a network built with num_classes=None; build it with num_classes=K")
            return emb
        return emb + self.class_emb(self._labels(labels, t.shape[0], t.device))

    def _labels(self, labels: Optional[torch.Tensor], batch: int, device) -> torch.Tensor:
        if labels is None:
            return torch.full((batch,), self.num_classes, dtype=torch.long, device=device)
        if labels.dtype != torch.long or labels.shape != (batch,):
            raise ValueError(f"labels must be a long tensor of shape [{batch}], got {labels.dtype} {tuple(labels.shape)}")
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) > self.num_classes):
            raise ValueError(f"labels must lie in 0..{self.num_classes} ({self.num_classes} = null label)")
        return labels


class ConditionedNetwork:
    """Mixin for a network with a `Conditioning` at `self.cond`: its class count and CFG null label."""

    @property
    def num_classes(self) -> Optional[int]:
        return self.cond.num_classes

    @property
    def null_label(self) -> Optional[int]:
        """The classifier-free-guidance unconditional label (num_classes), or None when unconditional."""
        return self.cond.null_label
