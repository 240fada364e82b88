"""DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) and DDIM (Song et al. 2021, eq. 12)."""

from __future__ import annotations

import torch

from .base import BOOL, BASE_OPTIONS, Option, Sampler, report_step
from .noise import randn_like
from .registry import register


def ddim_step(x, eps, alpha_s, sigma_s, alpha_t, sigma_t, noise_std, noise=None):
    """Generalised DDIM update s -> t (DDIM eq. 12): x_t = alpha_t x0 + sqrt(sigma_t^2 - std^2) eps + std z."""
    x0 = (x - sigma_s * eps) / alpha_s
    direction = torch.sqrt(torch.clamp(sigma_t**2 - noise_std**2, min=0.0)) * eps
    out = alpha_t * x0 + direction
    if noise is not None:
        out = out + noise_std * noise
    return out, x0


def posterior_std(alpha_s, sigma_s, alpha_t, sigma_t, eta: float):
    """sigma_eta of DDIM eq. 16: eta sqrt((1 - abar_t)/(1 - abar_s)) sqrt(1 - abar_s/abar_t), s noisier than t."""
    return eta * (sigma_t / sigma_s) * torch.sqrt(torch.clamp(1.0 - (alpha_s / alpha_t) ** 2, min=0.0))


def _coefs(schedule, t, x):
    t = t.to(torch.float64)
    return schedule.alpha(t).to(x.dtype), schedule.sigma(t).to(x.dtype)


@register("ddim")
class DDIM(Sampler):
    """DDIM (Song et al. 2021): eta = 0 is the deterministic first-order ODE solver, eta = 1 is DDPM."""

    OPTIONS = {
        "eta": Option(0.0, check=lambda v: float(v) >= 0, allowed="a number >= 0", doc="stochasticity (DDIM eq. 16)"),
        "final_denoise": Option(True, choices=BOOL, doc=BASE_OPTIONS["final_denoise"].doc),
    }

    @property
    def stochastic(self) -> bool:
        return float(self.options["eta"]) > 0

    def solve(self, denoiser, x, grid, generator=None, callback=None, steps=None):
        eta = float(self.options["eta"])
        for i in steps if steps is not None else range(len(grid) - 1):
            s, t = grid[i], grid[i + 1]
            (alpha_s, sigma_s), (alpha_t, sigma_t) = _coefs(denoiser.schedule, s, x), _coefs(denoiser.schedule, t, x)
            x, eps = denoiser.node(x, s, "eps")
            std = posterior_std(alpha_s, sigma_s, alpha_t, sigma_t, eta)
            noise = randn_like(x, generator) if eta > 0 else None
            x, x0 = ddim_step(x, eps, alpha_s, sigma_s, alpha_t, sigma_t, std, noise)
            report_step(callback, i, s, t, x, x0)
        return x


@register("ddpm")
class DDPM(Sampler):
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2) on any grid.

    The mean is the posterior mean mu~ (eq. 7); the variance is beta~ ('posterior',
    eq. 7) or beta = 1 - abar_s / abar_t ('upper'), the two choices of section 3.2.
    """

    OPTIONS = {
        "variance": Option("posterior", choices=("posterior", "upper"), doc="sigma_t^2 = beta~ or beta (DDPM sec. 3.2)"),
        "final_denoise": Option(True, choices=BOOL, doc=BASE_OPTIONS["final_denoise"].doc),
    }
    stochastic = True

    def solve(self, denoiser, x, grid, generator=None, callback=None, steps=None):
        for i in steps if steps is not None else range(len(grid) - 1):
            s, t = grid[i], grid[i + 1]
            (alpha_s, sigma_s), (alpha_t, sigma_t) = _coefs(denoiser.schedule, s, x), _coefs(denoiser.schedule, t, x)
            x, eps = denoiser.node(x, s, "eps")
            tilde = posterior_std(alpha_s, sigma_s, alpha_t, sigma_t, 1.0)
            mean, x0 = ddim_step(x, eps, alpha_s, sigma_s, alpha_t, sigma_t, tilde)
            if self.options["variance"] == "posterior":
                std = tilde
            else:
                std = torch.sqrt(torch.clamp(1.0 - (alpha_s / alpha_t) ** 2, min=0.0))
            x = mean + std * randn_like(x, generator)
            report_step(callback, i, s, t, x, x0)
        return x
