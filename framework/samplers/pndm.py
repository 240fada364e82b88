"""PNDM (Liu et al., "Pseudo Numerical Methods for Diffusion Models on Manifolds", ICLR 2022).

A pseudo numerical method splits a step into a gradient part, which combines noise
predictions like a classical ODE method, and a transfer part, which moves x along the
data manifold with that combined noise: the deterministic DDIM step (PNDM sec. 3.2).
The two variants of the paper and of its official code (luping-liu/PNDM,
runner/method.py: gen_order_4, gen_order_2) are:

- 'F-PNDM' (fourth order): the pseudo linear multistep method (PLMS, Adams-Bashforth 4
  weights 55, -59, 37, -9 over 24) started by three pseudo Runge-Kutta steps (PRK, the
  classical RK4 weights, evaluated at the time midpoint), which cost 4 evaluations each.
- 'S-PNDM' (second order): the 2-step pseudo linear multistep method (3, -1 over 2)
  started by one pseudo improved Euler step (2 evaluations).

Every step is a pure function of (denoiser, x, grid, i, history); `history` is the
newest-first tuple of the noise predictions at the earlier grid points.
"""

from __future__ import annotations

from typing import Sequence

import torch

from ..diffusion.denoiser import Denoiser
from .base import Option, Sampler, report_step
from .ddim import ddim_step
from .exp_integrator import adams_bashforth_weights, push_history
from .registry import register

#: method -> (warm-up steps, evaluations per warm-up step, points of the linear multistep)
PNDM_METHODS: dict[str, tuple[int, int, int]] = {"F-PNDM": (3, 4, 4), "S-PNDM": (1, 2, 2)}


def transfer(schedule, x: torch.Tensor, eps: torch.Tensor, s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """PNDM's transfer part phi(x_s, eps, s, t) (PNDM sec. 3.2): the deterministic DDIM step s -> t (DDIM eq. 12).

    The paper's closed form sqrt(abar_t / abar_s) x - (abar_t - abar_s) / (...) eps is
    algebraically the DDIM update, so it is ddim_step with zero noise.
    """
    s64, t64 = torch.as_tensor(s, dtype=torch.float64), torch.as_tensor(t, dtype=torch.float64)
    alpha_s, sigma_s = schedule.alpha(s64), schedule.sigma(s64)
    alpha_t, sigma_t = schedule.alpha(t64), schedule.sigma(t64)
    out, _ = ddim_step(x, eps, alpha_s, sigma_s, alpha_t, sigma_t, torch.zeros((), dtype=torch.float64))
    return out


def combine(weights: Sequence[float], preds: Sequence[torch.Tensor]) -> torch.Tensor:
    """sum_j w_j pred_j (the gradient part of a pseudo linear multistep step)."""
    return sum(float(w) * p for w, p in zip(weights, preds))


def pseudo_runge_kutta(denoiser: Denoiser, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor, e1: torch.Tensor):
    """Pseudo Runge-Kutta gradient part (PNDM sec. 3.3, PRK; official runge_kutta): 3 more evaluations.

    Stages at s (e1, the prediction at (x, s), given), the time midpoint (twice) and t, each transferred
    from x; the combined noise is (e1 + 2 e2 + 2 e3 + e4) / 6.
    """
    schedule, mid = denoiser.schedule, 0.5 * (s + t)
    e2 = denoiser.eps(transfer(schedule, x, e1, s, mid), mid)
    e3 = denoiser.eps(transfer(schedule, x, e2, s, mid), mid)
    e4 = denoiser.eps(transfer(schedule, x, e3, s, t), t)
    return (e1 + 2.0 * e2 + 2.0 * e3 + e4) / 6.0


def pseudo_improved_euler(denoiser: Denoiser, x: torch.Tensor, s: torch.Tensor, t: torch.Tensor, e1: torch.Tensor):
    """Pseudo improved Euler gradient part (PNDM sec. 3.3; official improved_eular): 1 more evaluation, (e1 + e2) / 2."""
    e2 = denoiser.eps(transfer(denoiser.schedule, x, e1, s, t), t)
    return 0.5 * (e1 + e2)


def pndm_step(denoiser: Denoiser, x: torch.Tensor, grid: torch.Tensor, i: int, history: tuple, method: str):
    """One PNDM step grid[i] -> grid[i+1] (PNDM sec. 3.3; official gen_order_4 / gen_order_2).

    While `history` holds fewer than (points - 1) earlier predictions, the gradient part is the
    pseudo Runge-Kutta (F-PNDM) or pseudo improved Euler (S-PNDM) warm start; afterwards it is
    the pseudo linear multistep combination of the newest predictions. Returns (x_next, history, x0).
    """
    if method not in PNDM_METHODS:
        raise ValueError(f"PNDM method {method!r} is not one of {', '.join(PNDM_METHODS)}")
    _, _, points = PNDM_METHODS[method]
    s, t = grid[i], grid[i + 1]
    x, e1 = denoiser.node(x, s, "eps")
    history = push_history(history, e1, points)
    if len(history) < points:
        warm = pseudo_runge_kutta if method == "F-PNDM" else pseudo_improved_euler
        eps_prime = warm(denoiser, x, s, t, e1)
    else:
        eps_prime = combine(adams_bashforth_weights(points), history)
    alpha_s, sigma_s = denoiser.schedule.alpha(s.to(torch.float64)), denoiser.schedule.sigma(s.to(torch.float64))
    x0 = (x - sigma_s * e1) / alpha_s
    return transfer(denoiser.schedule, x, eps_prime, s, t), history, x0


@register("pndm")
class PNDM(Sampler):
    """PNDM (Liu et al. 2022): 'F-PNDM' (PLMS + 3 pseudo Runge-Kutta steps) or 'S-PNDM' (2-step PLMS + pseudo improved Euler).

    NFE: F-PNDM spends 4 evaluations on each of its first 3 steps and 1 afterwards (4, 8, 12,
    13, 14, ...); S-PNDM 2 on its first step and 1 afterwards (2, 3, 4, ...); +1 with final_denoise.
    Default grid: uniform in t, as the official code's uniform skip over the DDPM steps.
    """

    OPTIONS = {
        "method": Option("F-PNDM", choices=tuple(PNDM_METHODS), doc="PNDM variant (the paper's names)"),
    }

    def _plan(self) -> tuple[int, int]:
        warm, cost, _ = PNDM_METHODS[self.options["method"]]
        return warm, cost

    def min_nfe(self) -> int:
        return self._plan()[1] + int(self.options["final_denoise"])

    def nfe_for_steps(self, steps: int) -> int:
        warm, cost = self._plan()
        first = min(steps, warm)
        return first * cost + (steps - first) + int(self.options["final_denoise"])

    def steps_for_nfe(self, nfe: int) -> int:
        warm, cost = self._plan()
        budget = nfe - int(self.options["final_denoise"])
        if budget >= warm * cost:
            return warm + budget - warm * cost
        if budget >= cost and budget % cost == 0:
            return budget // cost
        small = ", ".join(str(k * cost) for k in range(1, warm))
        raise ValueError(
            f"sampler {self.name!r}: nfe={nfe} is not allowed for method={self.options['method']!r}; allowed: "
            f"{small + ', ' if small else ''}any nfe >= {warm * cost} "
            f"({warm} warm-up step(s) of {cost} evaluations, then 1 per step)"
            f"{', each +1 with final_denoise' if self.options['final_denoise'] else ''}"
        )

    def solve(self, denoiser, x, grid, generator=None, callback=None, steps=None):
        history: tuple = ()
        for i in steps if steps is not None else range(len(grid) - 1):
            x, history, x0 = pndm_step(denoiser, x, grid, i, history, self.options["method"])
            report_step(callback, i, grid[i], grid[i + 1], x, x0)
        return x
