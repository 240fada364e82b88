"""Shared fixtures: exact Gaussian-mixture problems with their reference ODE solutions."""

from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch

from framework.diffusion import Denoiser, build_schedule
from framework.oracles import GaussianMixture

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Tests are small: one thread each avoids oversubscribing 2 cores (DDP tests run 2 processes).
torch.set_num_threads(1)


@dataclass
class OracleProblem:
    """A mixture, its schedule, starting noise x_T at t_max and the exact ODE solution at t_min."""

    mixture: GaussianMixture
    schedule: object
    x_T: torch.Tensor
    reference: torch.Tensor

    def denoiser(self, prediction: str = "eps") -> Denoiser:
        return Denoiser(self.mixture.eps_model(self.schedule), self.schedule)

    def errors(self, sampler, nfes, n: int | None = None) -> list[float]:
        """Mean distance to the exact solution at each NFE, on the first n samples (each has its own reference)."""
        from framework.oracles.convergence import mean_error

        model = self.mixture.eps_model(self.schedule)
        x_T, ref = self.x_T[:n], self.reference[:n]
        return [mean_error(sampler.sample(model, x_T, nfe, self.schedule), ref) for nfe in nfes]


_CACHE: dict = {}


def oracle_problem(schedule_kind: str = "linear", dim: int = 2, n: int = 128, seed: int = 0) -> OracleProblem:
    """Build (and cache for the session) an exact problem; the reference is solved to ~1e-10."""
    key = (schedule_kind, dim, n, seed)
    if key not in _CACHE:
        schedule = build_schedule(schedule_kind)
        mixture = GaussianMixture.random(components=4 if dim == 2 else 3, dim=dim, seed=seed)
        x_T = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
        _CACHE[key] = OracleProblem(mixture, schedule, x_T, mixture.ode_solution(x_T, schedule))
    return _CACHE[key]


@pytest.fixture(params=[("linear", 2), ("discrete_linear", 2), ("linear", 8)], ids=["linear-2d", "discrete-2d", "linear-8d"])
def problem(request) -> OracleProblem:
    """Exact problems on the continuous and the discrete DDPM schedule, in 2-D and 8-D (full covariances)."""
    kind, dim = request.param
    return oracle_problem(kind, dim)
