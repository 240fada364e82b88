"""The Time-Shift Sampler's time policy (Li et al., "Alleviating Exposure Bias in Diffusion Models through
Sampling with Shifted Time Steps", ICLR 2024), placed between any solver and the network.

Exposure bias: a sampled x_t does not have the statistics of the training inputs at time t, because the
network's earlier errors accumulated in it. The paper (sec. 4, Algorithm 1) measures, for each sample, the
variance of x_t over its dimensions and, among the DDPM time steps in a window around t, takes the one whose
noise level best matches it; the network is then evaluated at that shifted time. Below a cutoff time the
plain time is kept (there the image content, not the noise, dominates the variance).

What is compared (`reference`):
  * "noise" (the official code's rule, the default so that the paper's numbers are reproduced): the
    per-sample variance against 1 - abar_tau = sigma_tau^2, ignoring the data's own variance;
  * "data" (the paper's analysis, sec. 4.1): against abar_tau v + sigma_tau^2, v the data's per-sample
    variance (`data_var`, a dataset statistic), which is what var(x_t) is when x_t is exact.

Which quantities use the shifted time (`apply`):
  * "update" (default; the paper's Algorithm 1, "t = t_s"): the state is re-labelled as lying at tau, the
    network is evaluated there, and the step starts from tau. For a solver written on a fixed grid this is
    done by moving the state along the model's own first-order path from tau back to the grid time t
    (x <- alpha_t x0_tau + sigma_t eps_tau, no evaluation), after which a first-order step from t equals
    the step from tau exactly and a multistep solver keeps a consistent history;
  * "network" (the official DEIS integration): only the network input time is shifted; the prediction is
    read as a prediction at t and the update is unchanged.

Window and cutoff are in DDPM step units, as in the paper: DDPM step k sits at continuous time
(k + 1) / N (N = the schedule's `num_steps`, 1,000 for continuous schedules), so a window of w steps
lets tau move by up to w // 2 steps, (w // 2) / N in t, either way, and `cutoff` c shifts only at
t > (c + 1) / N. The first grid point (t = t_max, where x_T is exact noise) is never shifted, as in the
official loops.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

import torch

from .denoiser import Denoiser, convert
from .schedules import VPSchedule

REFERENCES = ("noise", "data")
APPLY = ("update", "network")
#: N for schedules without DDPM steps: window and cutoff are then read in units of 1/1000 of t
CONTINUOUS_STEPS = 1000


@dataclass(frozen=True)
class TimeShift:
    """The policy: `window` and `cutoff` in DDPM steps, `reference` in REFERENCES, `apply` in APPLY."""

    window: int = 30
    cutoff: float = 300
    reference: str = "noise"
    data_var: float = 0.0
    apply: str = "update"

    def __post_init__(self):
        if isinstance(self.window, bool) or not isinstance(self.window, int) or self.window < 0:
            raise ValueError(f"time shift: ts_window={self.window!r} is not allowed; allowed: an integer >= 0 (DDPM steps)")
        if self.reference not in REFERENCES:
            raise ValueError(f"time shift: ts_reference={self.reference!r} is not allowed; allowed: {', '.join(map(repr, REFERENCES))}")
        if self.apply not in APPLY:
            raise ValueError(f"time shift: ts_apply={self.apply!r} is not allowed; allowed: {', '.join(map(repr, APPLY))}")
        if self.reference == "data" and not float(self.data_var) > 0:
            raise ValueError(f"time shift: ts_reference='data' needs ts_data_var > 0 (the data's per-sample variance), "
                             f"got {self.data_var!r}")

    def choose(self, x: torch.Tensor, t: Any, schedule: VPSchedule) -> Optional[torch.Tensor]:
        """The shifted time of each sample (float64 [batch]), or None where no shift applies at t.

        tau = t + d / N with the integer d in [-window // 2, window // 2] minimising
        |var(x) - expected variance at tau| (paper Algorithm 1), restricted to [t_min, t_max].
        """
        t = float(t)
        steps = int(getattr(schedule, "num_steps", CONTINUOUS_STEPS))
        half = self.window // 2
        if half == 0 or t >= float(schedule.t_max) or t <= (float(self.cutoff) + 1.0) / steps:
            return None
        offsets = torch.arange(-half, half + 1, dtype=torch.float64, device=x.device)
        taus = t + offsets / steps
        taus = taus[(taus >= float(schedule.t_min)) & (taus <= float(schedule.t_max))]
        expected = schedule.sigma(taus) ** 2
        if self.reference == "data":
            expected = expected + float(self.data_var) * schedule.alpha(taus) ** 2
        var = x.detach().reshape(x.shape[0], -1).to(torch.float64).var(dim=1)
        best = torch.argmin((var[:, None] - expected[None, :]).abs(), dim=1)
        return taus[best]


class TimeShiftedDenoiser:
    """A Denoiser whose evaluations at grid nodes (`node`) use the policy's shifted times.

    Everything else (eps, x0, predict at intermediate stage times, the NFE count, the schedule) is the
    wrapped denoiser's own, so no evaluation is added. `last_shift` holds the per-sample times of the
    latest node evaluation, for the per-step callback.
    """

    def __init__(self, denoiser: Denoiser, policy: TimeShift):
        self._inner, self.policy = denoiser, policy
        self.last_shift: Optional[torch.Tensor] = None

    def __getattr__(self, name: str):
        return getattr(self._inner, name)

    def node(self, x: torch.Tensor, t, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(the state to continue from, the prediction as `kind`) at grid time t; see the module doc for `apply`."""
        inner = self._inner
        tau = self.policy.choose(x, t, inner.schedule)
        if tau is None:
            self.last_shift = torch.full((x.shape[0],), float(t), dtype=torch.float64, device=x.device)
            return x, inner.predict(x, t, kind)
        self.last_shift = tau
        out = inner.raw(x, tau)
        alpha_t, sigma_t = inner.coefficients(x, t)
        if self.policy.apply == "network":
            return x, convert(out, x, alpha_t, sigma_t, inner.prediction, kind)
        alpha_tau, sigma_tau = inner.coefficients(x, tau)
        x0 = convert(out, x, alpha_tau, sigma_tau, inner.prediction, "x0")
        eps = convert(out, x, alpha_tau, sigma_tau, inner.prediction, "eps")
        moved = (tau != float(t)).reshape(-1, *([1] * (x.ndim - 1)))
        x_new = torch.where(moved, alpha_t * x0 + sigma_t * eps, x)
        if kind == "x0":
            return x_new, torch.where(moved, x0, convert(out, x, alpha_t, sigma_t, inner.prediction, "x0"))
        pred = torch.where(moved, eps, convert(out, x, alpha_t, sigma_t, inner.prediction, "eps"))
        return x_new, pred if kind == "eps" else convert(pred, x_new, alpha_t, sigma_t, "eps", kind)
