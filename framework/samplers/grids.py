"""Time-step grids: the one explicit array every solver loop walks (diffusers#12633, #5310).

A grid is a float64 tensor t_0 = t_max > t_1 > ... > t_M = t_min; solvers read their
neighbours from it, never re-derive them with a stride.
"""

from __future__ import annotations

import torch

from ..diffusion.schedules import VPSchedule

GRID_KINDS = ("time_uniform", "time_quadratic", "logsnr", "karras")


def make_grid(kind: str, steps: int, schedule: VPSchedule, rho: float = 7.0, device=None) -> torch.Tensor:
    """A grid of `steps` intervals from t_max to t_min.

    'time_uniform': uniform in t (DDIM, DPM-Solver for discrete models);
    'time_quadratic': uniform in sqrt(t) (DDIM's quadratic skip, DPM-Solver);
    'logsnr': uniform in lambda (DPM-Solver's 'logSNR');
    'karras': uniform in sigma_ve^(1/rho), sigma_ve = sigma/alpha (EDM eq. 5; DEIS's rho schedule).
    """
    if steps < 1:
        raise ValueError(f"a grid needs at least 1 step, got {steps}")
    t_max, t_min = float(schedule.t_max), float(schedule.t_min)
    u = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    if kind == "time_uniform":
        t = t_max + (t_min - t_max) * u
    elif kind == "time_quadratic":
        t = (t_max**0.5 + (t_min**0.5 - t_max**0.5) * u) ** 2
    elif kind == "logsnr":
        lam_max, lam_min = schedule.log_snr(torch.tensor(t_min, dtype=torch.float64)), schedule.log_snr(torch.tensor(t_max, dtype=torch.float64))
        t = schedule.t_from_log_snr(lam_min + (lam_max - lam_min) * u)
    elif kind == "karras":
        ends = torch.tensor([t_max, t_min], dtype=torch.float64)
        s_max, s_min = torch.exp(-schedule.log_snr(ends)).unbind()
        s = (s_max ** (1 / rho) + u * (s_min ** (1 / rho) - s_max ** (1 / rho))) ** rho
        t = schedule.t_from_log_snr(-torch.log(s))
    else:
        raise ValueError(f"unknown grid {kind!r}; allowed: {', '.join(GRID_KINDS)}")
    t[0], t[-1] = t_max, t_min  # exact end points whatever the round trip did
    return t.to(device)


def validate_grid(timesteps, schedule: VPSchedule, device=None) -> torch.Tensor:
    """Check a user-given grid: 1-D, at least 2 points, strictly decreasing, inside [t_min, t_max]."""
    t = torch.as_tensor(timesteps, dtype=torch.float64).flatten()
    if len(t) < 2:
        raise ValueError("timesteps must hold at least 2 times (one step)")
    if not bool((t[1:] < t[:-1]).all()):
        raise ValueError("timesteps must be strictly decreasing (from t_max towards t_min)")
    eps = 1e-9
    if float(t.min()) < schedule.t_min - eps or float(t.max()) > schedule.t_max + eps:
        raise ValueError(f"timesteps must lie in [t_min, t_max] = [{schedule.t_min}, {schedule.t_max}]")
    return t.to(device)
