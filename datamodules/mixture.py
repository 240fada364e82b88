"""A mixture of Gaussians with full covariances, as data: parameters and exact draws.

The toy data module trains on draws from it; framework.oracles.GaussianMixture adds its exact
noised score and probability-flow ODE on top, so a model trained on these draws can be compared
with the exact answer.
"""

from __future__ import annotations

from typing import Optional

import torch


class MixtureOfGaussians:
    """A mixture of Gaussians with full covariances, as data: its parameters and exact draws."""

    def __init__(self, weights, means, covs):
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.covs = torch.as_tensor(covs, dtype=torch.float64)
        k, d = self.means.shape
        if self.weights.shape != (k,) or self.covs.shape != (k, d, d):
            raise ValueError("weights [K], means [K, D] and covs [K, D, D] must agree")
        self.weights = self.weights / self.weights.sum()
        self.dim = d

    @classmethod
    def random(cls, components: int = 4, dim: int = 2, seed: int = 0, scale: float = 2.0, spread=(0.05, 0.5)):
        """A random mixture with full (correlated) covariances, eigenvalues in `spread`."""
        g = torch.Generator().manual_seed(seed)
        means = scale * torch.randn(components, dim, generator=g, dtype=torch.float64)
        q, _ = torch.linalg.qr(torch.randn(components, dim, dim, generator=g, dtype=torch.float64))
        lo, hi = spread
        eig = lo + (hi - lo) * torch.rand(components, dim, generator=g, dtype=torch.float64)
        covs = q @ torch.diag_embed(eig) @ q.transpose(-1, -2)
        weights = 0.5 + torch.rand(components, generator=g, dtype=torch.float64)
        return cls(weights, means, covs)

    # --- sampling ----------------------------------------------------------------
    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        return self.sample_with_components(n, generator)[0]

    def sample_with_components(self, n: int, generator: Optional[torch.Generator] = None):
        """n float64 draws [n, D] and the index [n] of the component each came from."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=torch.float64)
        chol = torch.linalg.cholesky(self.covs)
        return self.means[comp] + (chol[comp] @ z.unsqueeze(-1)).squeeze(-1), comp
