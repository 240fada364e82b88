"""Denoising score-matching losses for continuous data (Ho et al. 2020, eq. 14; Salimans & Ho 2022 for v)."""

from __future__ import annotations

import torch

from .denoiser import PREDICTIONS, _expand
from .schedules import DiscreteVPSchedule, VPSchedule


def sample_time(schedule: VPSchedule, n: int, generator: torch.Generator, device="cpu") -> torch.Tensor:
    """Training times: DDPM's uniform discrete steps t = (k + 1) / N for a discrete schedule, else U(t_min, t_max)."""
    if isinstance(schedule, DiscreteVPSchedule):
        k = torch.randint(0, schedule.num_steps, (n,), generator=generator)
        return ((k + 1).double() / schedule.num_steps).to(device)
    u = torch.rand(n, generator=generator, dtype=torch.float64)
    return (schedule.t_min + (schedule.t_max - schedule.t_min) * u).to(device)


def diffusion_loss(network, schedule: VPSchedule, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor,
                   labels=None, prediction: str = "eps") -> torch.Tensor:
    """Mean squared error of the network's `prediction` target at x_t = alpha_t x0 + sigma_t noise (the 'simple' loss)."""
    if prediction not in PREDICTIONS:
        raise ValueError(f"diffusion.prediction {prediction!r} is not one of {', '.join(PREDICTIONS)}")
    alpha = _expand(schedule.alpha(t), x0).to(x0.dtype)
    sigma = _expand(schedule.sigma(t), x0).to(x0.dtype)
    x_t = alpha * x0 + sigma * noise
    target = {"eps": noise, "x0": x0, "v": alpha * noise - sigma * x0}[prediction]
    out = network(x_t, t.to(x0.dtype)) if labels is None else network(x_t, t.to(x0.dtype), labels)
    return torch.mean((out - target) ** 2)
