"""Variance-preserving noise schedules over continuous time t in [0, 1].

A schedule gives alpha(t), sigma(t) = sqrt(1 - alpha(t)^2), the half log-SNR
lambda(t) = log(alpha / sigma) and its inverse t(lambda). Every sampler and the
training loss read the noise process only through this object, so a discrete-time
DDPM model and a continuous-time one are driven by the same solvers.

All arithmetic is done in float64 and the result cast back to the input's dtype,
so half-precision models never see a half-precision schedule (diffusers#3056).
"""

from __future__ import annotations

import math
from typing import Union

import torch

TimeLike = Union[float, torch.Tensor]

SCHEDULE_KINDS = ("discrete_linear", "linear", "cosine")


def _as_f64(t: TimeLike) -> tuple[torch.Tensor, torch.dtype]:
    if isinstance(t, torch.Tensor):
        dtype = t.dtype if t.is_floating_point() else torch.get_default_dtype()
        return t.to(torch.float64), dtype
    return torch.tensor(float(t), dtype=torch.float64), torch.get_default_dtype()


class VPSchedule:
    """Base class: subclasses define `log_alpha(t)` and `t_from_log_snr(lam)` in float64."""

    t_min: float = 1e-3
    t_max: float = 1.0

    # --- to implement -----------------------------------------------------
    def _log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _t_from_log_snr(self, lam: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def to_config(self) -> dict:
        raise NotImplementedError

    # --- public interface ----------------------------------------------------
    def log_alpha(self, t: TimeLike) -> torch.Tensor:
        t64, dtype = _as_f64(t)
        return self._log_alpha(t64).to(dtype)

    def alpha(self, t: TimeLike) -> torch.Tensor:
        t64, dtype = _as_f64(t)
        return self._log_alpha(t64).exp().to(dtype)

    def sigma(self, t: TimeLike) -> torch.Tensor:
        t64, dtype = _as_f64(t)
        return torch.sqrt(-torch.expm1(2.0 * self._log_alpha(t64))).to(dtype)

    def log_snr(self, t: TimeLike) -> torch.Tensor:
        """Half log-SNR lambda(t) = log(alpha_t / sigma_t) (DPM-Solver's lambda)."""
        t64, dtype = _as_f64(t)
        la = self._log_alpha(t64)
        log_sigma = 0.5 * torch.log(-torch.expm1(2.0 * la))
        return (la - log_sigma).to(dtype)

    def t_from_log_snr(self, lam: TimeLike) -> torch.Tensor:
        lam64, dtype = _as_f64(lam)
        return self._t_from_log_snr(lam64).to(dtype)

    @staticmethod
    def log_alpha_from_log_snr(lam: torch.Tensor) -> torch.Tensor:
        """log alpha as a function of lambda: alpha^2 = sigmoid(2 lambda)."""
        return -0.5 * torch.nn.functional.softplus(-2.0 * lam)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_config()})"


class DiscreteVPSchedule(VPSchedule):
    """DDPM's discrete schedule, read as a function of continuous time.

    Step n = 0..N-1 sits at t_n = (n + 1) / N and reproduces alphas_cumprod[n]
    exactly; in between, lambda is interpolated linearly in t, so the map
    t <-> lambda is piecewise linear on the same knots and inverts exactly
    (the convention of DPM-Solver's discrete NoiseScheduleVP).
    """

    def __init__(self, betas: torch.Tensor):
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or len(betas) < 2 or not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("betas must be a 1-D tensor of values in (0, 1) with at least 2 entries")
        self.betas = betas
        self.num_steps = len(betas)
        self.alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        self.t_knots = torch.arange(1, self.num_steps + 1, dtype=torch.float64) / self.num_steps
        la = 0.5 * torch.log(self.alphas_cumprod)
        self.lam_knots = la - 0.5 * torch.log(-torch.expm1(2.0 * la))
        self.t_min = 1.0 / self.num_steps
        self.t_max = 1.0

    @classmethod
    def linear(cls, beta_start: float = 1e-4, beta_end: float = 0.02, num_steps: int = 1000) -> "DiscreteVPSchedule":
        schedule = cls(torch.linspace(beta_start, beta_end, num_steps, dtype=torch.float64))
        schedule._config = dict(kind="discrete_linear", beta_start=beta_start, beta_end=beta_end, num_steps=num_steps)
        return schedule

    def to_config(self) -> dict:
        return dict(getattr(self, "_config", {"kind": "discrete", "num_steps": self.num_steps}))

    def _lam(self, t: torch.Tensor) -> torch.Tensor:
        return _interp(t, self.t_knots, self.lam_knots)

    def _log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return self.log_alpha_from_log_snr(self._lam(t))

    def log_snr(self, t: TimeLike) -> torch.Tensor:
        t64, dtype = _as_f64(t)
        return self._lam(t64).to(dtype)

    def _t_from_log_snr(self, lam: torch.Tensor) -> torch.Tensor:
        return _interp(-lam, -self.lam_knots, self.t_knots)


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation with linear extrapolation at both ends (xp increasing)."""
    xp = xp.to(x.device)
    fp = fp.to(x.device)
    idx = torch.searchsorted(xp, x.contiguous()).clamp(1, len(xp) - 1)
    x0, x1 = xp[idx - 1], xp[idx]
    f0, f1 = fp[idx - 1], fp[idx]
    return f0 + (x - x0) * (f1 - f0) / (x1 - x0)


class LinearVPSchedule(VPSchedule):
    """Continuous linear VP-SDE (Song et al. 2021): beta(t) = beta_0 + t (beta_1 - beta_0).

    log alpha(t) = -beta_1 - beta_0 over 4 t^2 - beta_0 t / 2; the defaults 0.1 and 20
    are the continuous limit of DDPM's 1e-4..0.02 over 1000 steps.
    """

    def __init__(self, beta_0: float = 0.1, beta_1: float = 20.0, t_min: float = 1e-3):
        if not 0 < beta_0 < beta_1:
            raise ValueError(f"need 0 < beta_0 < beta_1, got beta_0={beta_0}, beta_1={beta_1}")
        self.beta_0, self.beta_1, self.t_min = float(beta_0), float(beta_1), float(t_min)

    def to_config(self) -> dict:
        return dict(kind="linear", beta_0=self.beta_0, beta_1=self.beta_1, t_min=self.t_min)

    def _log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return -0.25 * t**2 * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0

    def _t_from_log_snr(self, lam: torch.Tensor) -> torch.Tensor:
        # Solve (b1 - b0)/4 t^2 + b0/2 t + log_alpha = 0 for t >= 0, stably.
        log_alpha = self.log_alpha_from_log_snr(lam)
        a, b = 0.25 * (self.beta_1 - self.beta_0), 0.5 * self.beta_0
        return 2.0 * (-log_alpha) / (b + torch.sqrt(b * b - 4.0 * a * log_alpha))


class CosineVPSchedule(VPSchedule):
    """Cosine schedule (Nichol & Dhariwal 2021): alpha(t) = cos((t + s)/(1 + s) pi/2) / cos(s/(1 + s) pi/2).

    t_max stays below 1 (where alpha reaches 0) as in DPM-Solver's cosine schedule.
    """

    def __init__(self, s: float = 0.008, t_min: float = 1e-3, t_max: float = 0.9946):
        self.s, self.t_min, self.t_max = float(s), float(t_min), float(t_max)
        self._log_alpha_0 = math.log(math.cos(self.s / (1 + self.s) * math.pi / 2))

    def to_config(self) -> dict:
        return dict(kind="cosine", s=self.s, t_min=self.t_min, t_max=self.t_max)

    def _log_alpha(self, t: torch.Tensor) -> torch.Tensor:
        return torch.log(torch.cos((t + self.s) / (1 + self.s) * math.pi / 2)) - self._log_alpha_0

    def _t_from_log_snr(self, lam: torch.Tensor) -> torch.Tensor:
        log_alpha = self.log_alpha_from_log_snr(lam)
        angle = torch.arccos(torch.exp(log_alpha + self._log_alpha_0))
        return angle * 2 * (1 + self.s) / math.pi - self.s


def build_schedule(kind: str = "discrete_linear", **options) -> VPSchedule:
    """Build a schedule by name: 'discrete_linear' (DDPM), 'linear' (continuous VP) or 'cosine'."""
    if kind == "discrete_linear":
        return DiscreteVPSchedule.linear(**options)
    if kind == "linear":
        return LinearVPSchedule(**options)
    if kind == "cosine":
        return CosineVPSchedule(**options)
    raise ValueError(f"unknown schedule kind {kind!r}; allowed: {', '.join(SCHEDULE_KINDS)}")


def schedule_from_config(config: dict) -> VPSchedule:
    config = dict(config)
    return build_schedule(config.pop("kind", "discrete_linear"), **config)
