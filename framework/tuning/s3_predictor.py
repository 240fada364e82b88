"""S3's performance predictor (Liu et al. 2024, sec. 4): a small network on a schedule's encoding, trained to rank.

Only the order of schedules matters to the search, so the network is trained with a pairwise ranking
loss (for every pair with err_i < err_j, softplus(score_i - score_j)) on the schedules evaluated so far,
from scratch at every stage, with its own seeded generator (deterministic on CPU). `kendall_tau`
measures its ranking quality on held-out schedules.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


class Predictor:
    """An MLP score (lower = better) on standardized encodings; `fit` retrains it from scratch."""

    def __init__(self, hidden: int = 64, steps: int = 300, lr: float = 3e-3, weight_decay: float = 1e-4):
        self.hidden, self.steps, self.lr, self.weight_decay = hidden, steps, lr, weight_decay
        self.net: nn.Module | None = None
        self.mean = self.std = None

    def _build(self, dim: int, seed: int) -> nn.Module:
        g = torch.Generator().manual_seed(seed)
        net = nn.Sequential(nn.Linear(dim, self.hidden), nn.SiLU(), nn.Linear(self.hidden, self.hidden), nn.SiLU(),
                            nn.Linear(self.hidden, 1)).to(torch.float64)
        with torch.no_grad():
            for p in net.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * (0.5 / max(p.shape[-1], 1) ** 0.5)
                        if p.dim() > 1 else torch.zeros_like(p))
        return net

    def fit(self, encodings: Sequence[Sequence[float]], errors: Sequence[float], seed: int = 0) -> "Predictor":
        """Train on (encoding, true error) pairs with the pairwise ranking loss."""
        x = torch.tensor(encodings, dtype=torch.float64)
        err = torch.tensor(errors, dtype=torch.float64)
        self.mean, self.std = x.mean(0), x.std(0).clamp_min(1e-6)
        x = (x - self.mean) / self.std
        better = err[:, None] < err[None, :]  # better[i, j]: schedule i beats j
        self.net = self._build(x.shape[1], seed)
        if not bool(better.any()):
            return self
        opt = torch.optim.Adam(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        for _ in range(self.steps):
            s = self.net(x).squeeze(-1)
            loss = nn.functional.softplus(s[:, None] - s[None, :])[better].mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        return self

    @torch.no_grad()
    def score(self, encodings: Sequence[Sequence[float]]) -> list[float]:
        """Predicted scores (lower = better)."""
        if self.net is None:
            raise ValueError("Predictor.score before fit")
        x = (torch.tensor(encodings, dtype=torch.float64) - self.mean) / self.std
        return self.net(x).squeeze(-1).tolist()


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-a between two rankings: (concordant - discordant pairs) / all pairs."""
    n = len(a)
    if n < 2 or len(b) != n:
        raise ValueError(f"kendall_tau needs two sequences of the same length >= 2, got {len(a)} and {len(b)}")
    total = 0.0
    for i in range(n):
        for j in range(i + 1, n):
            total += float(torch.sign(torch.tensor((a[i] - a[j]) * (b[i] - b[j]))))
    return total / (n * (n - 1) / 2)
