"""DEIS (Zhang & Chen, "Fast Sampling of Diffusion Models with Exponential Integrator", ICLR 2023) and iPNDM.

The probability-flow ODE of a VP model is semilinear; its exponential-integrator form is
x_t = (alpha_t / alpha_s) x_s - sigma_t int_{lambda_s}^{lambda_t} e^{lambda_t - l} eps(l) dl
(framework.samplers.exp_integrator). With rho = sigma / alpha and y = x / alpha it becomes
dy/drho = eps(alpha y, t(rho)) (DEIS sec. 4, the rho time-scaling). DEIS approximates eps:

- tAB-DEIS ('t_ab'): the Lagrange polynomial of eps in t through the last r + 1 grid points,
  integrated against the exponential kernel by quadrature (DEIS sec. 4, coefficients C_ij);
- rhoAB-DEIS ('rho_ab'): the same polynomial in rho, integrated exactly;
- rhoRK-DEIS ('rho_rk'): an explicit Runge-Kutta method on dy/drho = eps;
- iPNDM (registered as 'ipndm'): PNDM's linear multistep with equal-step Adams-Bashforth
  weights and a lower-order warm start instead of pseudo Runge-Kutta (DEIS appendix).

Names and defaults follow the official code (qsh-zh/deis, th_deis.get_sampler): `method`
('t_ab', 'rho_ab', 'rho_rk'), `ab_order` = r, the degree of the polynomial (r = 0 is DDIM,
the convergence order is r + 1; the first r steps use degrees 0..r-1), `rk_method` ('3kutta'
by default), and the README's time grid (ts_phase 't', ts_order 2 = 'time_quadratic').
"""

from __future__ import annotations

import functools
import math
from typing import Sequence

import numpy as np
import torch

from ..diffusion.denoiser import Denoiser
from .base import Option, Sampler, positive_int, report_step
from .exp_integrator import (
    adams_bashforth_weights,
    exp_step,
    lagrange_basis,
    lagrange_integral_weights,
    push_history,
    quadrature_exp_weights,
    schedule_coefs,
)
from .grids import GRID_KINDS
from .pndm import combine, transfer
from .registry import register

DEIS_METHODS = ("t_ab", "rho_ab", "rho_rk")
MAX_AB_ORDER = 3
#: Gauss-Legendre points for the tAB coefficients (the integrand is smooth in lambda)
QUADRATURE_POINTS = 64

#: Explicit Runge-Kutta tableaux (c, A rows, b) of the official code's rk.py, plus the explicit midpoint rule.
RK_TABLEAUX: dict[str, tuple[tuple[float, ...], tuple[tuple[float, ...], ...], tuple[float, ...]]] = {
    "1euler": ((0.0,), ((),), (1.0,)),
    "2midpoint": ((0.0, 0.5), ((), (0.5,)), (0.0, 1.0)),
    "2heun": ((0.0, 1.0), ((), (1.0,)), (0.5, 0.5)),
    "3kutta": ((0.0, 0.5, 1.0), ((), (0.5,), (-1.0, 2.0)), (1 / 6, 4 / 6, 1 / 6)),
    "3ral": ((0.0, 0.5, 0.75), ((), (0.5,), (0.0, 0.75)), (2 / 9, 1 / 3, 4 / 9)),
    "3heun": ((0.0, 1 / 3, 2 / 3), ((), (1 / 3,), (0.0, 2 / 3)), (0.25, 0.0, 0.75)),
    "3vdh": ((0.0, 8 / 15, 2 / 3), ((), (8 / 15,), (0.25, 5 / 12)), (0.25, 0.0, 0.75)),
    "3ssprk": ((0.0, 1.0, 0.5), ((), (1.0,), (0.25, 0.25)), (1 / 6, 1 / 6, 2 / 3)),
    "4rk": ((0.0, 0.5, 0.5, 1.0), ((), (0.5,), (0.0, 0.5), (0.0, 0.0, 1.0)), (1 / 6, 1 / 3, 1 / 3, 1 / 6)),
}


def rk_order(rk_method: str) -> int:
    """The classical order of a tableau, the leading digit of its official name ('3kutta' -> 3)."""
    return int(rk_method[0])


# --- coefficients ---------------------------------------------------------------------------------


def _time_of_log_snr(schedule, lam: np.ndarray) -> np.ndarray:
    return schedule.t_from_log_snr(torch.from_numpy(np.asarray(lam, dtype=np.float64))).numpy()


def _time_of_rho(schedule, rho: float) -> torch.Tensor:
    return schedule.t_from_log_snr(torch.tensor(-math.log(rho), dtype=torch.float64))


def _rho(schedule, t) -> float:
    alpha, sigma, _ = schedule_coefs(schedule, t)
    return sigma / alpha


def tab_weights(schedule, nodes: Sequence[float], t_s, t_t, n: int = QUADRATURE_POINTS) -> list[float]:
    """tAB-DEIS coefficients (DEIS sec. 4, C_ij): int e^{lambda_t - l} ell_j(t(l)) dl over [lambda_s, lambda_t].

    ell_j is the Lagrange basis in t on `nodes` (newest first); the integral, taken in lambda
    rather than t, equals the paper's one after the change of variables, and has no closed form.
    """
    lam_s, lam_t = schedule_coefs(schedule, t_s)[2], schedule_coefs(schedule, t_t)[2]

    memo: list = [None, None]  # every basis function is evaluated on the same quadrature nodes: map them to t once

    def in_time(ell):
        def f(lam):
            if memo[0] is not lam:
                memo[0], memo[1] = lam, _time_of_log_snr(schedule, lam)
            return ell(memo[1])

        return f

    basis = [in_time(lagrange_basis(nodes, j)) for j in range(len(nodes))]
    return quadrature_exp_weights(basis, lam_s, lam_t, "eps", n=n)


@functools.lru_cache(maxsize=4096)
def _cached_tab_weights(schedule, nodes: tuple, t_s: float, t_t: float) -> tuple:
    """tab_weights computed once per (schedule, nodes, step): the quadrature otherwise costs ~20 ms a step,
    negligible next to a CPU forward but not next to a GPU one (the sampler-overhead benchmark)."""
    return tuple(tab_weights(schedule, list(nodes), t_s, t_t))


def rho_ab_weights(nodes: Sequence[float], rho_s: float, rho_t: float) -> list[float]:
    """rhoAB-DEIS coefficients (DEIS sec. 4, rhoAB): the exact int_{rho_s}^{rho_t} ell_j(rho) drho, as exp_step weights.

    alpha_t times that integral is -sigma_t times the exponential-kernel weight, so the
    returned weights are -(1 / rho_t) int ell_j; nodes are shifted by rho_s for conditioning.
    """
    shifted = [float(v) - rho_s for v in nodes]
    return [-w / rho_t for w in lagrange_integral_weights(shifted, 0.0, rho_t - rho_s)]


# --- steps ------------------------------------------------------------------------------------------


def deis_ab_step(
    denoiser: Denoiser, x: torch.Tensor, grid: torch.Tensor, i: int, history: tuple, ab_order: int, variable: str
):
    """One tAB-DEIS ('t') or rhoAB-DEIS ('rho') step grid[i] -> grid[i+1] (DEIS sec. 4; official get_sampler_t_ab/rho_ab).

    The polynomial goes through the noise predictions at grid[i], grid[i-1], ... (newest-first
    `history`), degree min(ab_order, i). Returns (x_next, history, x0).
    """
    if variable not in ("t", "rho"):
        raise ValueError(f"DEIS polynomial variable {variable!r} is not one of 't', 'rho'")
    schedule = denoiser.schedule
    s, t = grid[i], grid[i + 1]
    alpha_s, sigma_s, _ = schedule_coefs(schedule, s)
    alpha_t, sigma_t, _ = schedule_coefs(schedule, t)
    x, eps = denoiser.node(x, s, "eps")
    history = push_history(history, eps, ab_order + 1)
    if len(history) > i + 1:
        raise ValueError(f"history holds {len(history)} predictions but step {i} has only {i + 1} grid points behind it")
    nodes = [float(grid[i - j]) for j in range(len(history))]
    if variable == "t":
        weights = _cached_tab_weights(schedule, tuple(nodes), float(s), float(t))
    else:
        weights = rho_ab_weights([_rho(schedule, v) for v in nodes], sigma_s / alpha_s, sigma_t / alpha_t)
    x_next = exp_step(x, history, weights, (alpha_s, sigma_s, alpha_t, sigma_t), "eps")
    return x_next, history, (x - sigma_s * eps) / alpha_s


def rho_rk_step(denoiser: Denoiser, x: torch.Tensor, grid: torch.Tensor, i: int, rk_method: str):
    """One rhoRK-DEIS step grid[i] -> grid[i+1] (DEIS sec. 4; official get_sampler_rho_rk): explicit RK on dy/drho = eps.

    Stage j sits at rho_s + c_j (rho_t - rho_s), mapped back to t through the schedule. Returns (x_next, x0).
    """
    c, a, b = RK_TABLEAUX[rk_method]
    schedule = denoiser.schedule
    s, t = grid[i], grid[i + 1]
    alpha_s, sigma_s, _ = schedule_coefs(schedule, s)
    alpha_t, sigma_t, _ = schedule_coefs(schedule, t)
    rho_s, rho_t = sigma_s / alpha_s, sigma_t / alpha_t
    step = rho_t - rho_s
    x, first = denoiser.node(x, s, "eps")  # the explicit tableaux all start with c_0 = 0
    y = x / alpha_s
    slopes: list[torch.Tensor] = [first]
    for c_j, a_j in zip(c[1:], a[1:]):
        y_j = y + step * combine(a_j, slopes) if a_j else y
        t_j = s if c_j == 0.0 else t if c_j == 1.0 else _time_of_rho(schedule, rho_s + c_j * step)
        slopes.append(denoiser.eps(schedule_coefs(schedule, t_j)[0] * y_j, t_j))
    y_next = y + step * combine(b, slopes)
    return alpha_t * y_next, (x - sigma_s * slopes[0]) / alpha_s


def ipndm_step(denoiser: Denoiser, x: torch.Tensor, grid: torch.Tensor, i: int, history: tuple, order: int):
    """One iPNDM step (DEIS appendix, iPNDM; official get_sampler_ipndm): DDIM transfer of an Adams-Bashforth eps.

    The noise is the equal-step Adams-Bashforth combination of the last min(order, i + 1)
    predictions (lower-order warm start, no pseudo Runge-Kutta). Returns (x_next, history, x0).
    """
    s, t = grid[i], grid[i + 1]
    alpha_s, sigma_s, _ = schedule_coefs(denoiser.schedule, s)
    x, eps = denoiser.node(x, s, "eps")
    history = push_history(history, eps, order)
    eps_prime = combine(adams_bashforth_weights(len(history)), history)
    return transfer(denoiser.schedule, x, eps_prime, s, t), history, (x - sigma_s * eps) / alpha_s


# --- samplers ----------------------------------------------------------------------------------------


def ab_degree(options: dict, i: int, steps: int) -> int:
    """The polynomial degree cap of step i of a t_ab / rho_ab run: ab_order, and with lower_order_final also
    steps - 1 - i (the last step is DDIM); deis_ab_step further caps it by the points behind step i."""
    r = options["ab_order"]
    return min(r, steps - 1 - i) if options.get("lower_order_final") else r


def _ab_order_ok(v) -> bool:
    return v is None or (type(v) is int and 0 <= v <= MAX_AB_ORDER)


@register("deis")
class DEIS(Sampler):
    """DEIS (Zhang & Chen 2023): tAB-DEIS, rhoAB-DEIS or rhoRK-DEIS, chosen by `method`.

    `ab_order` (t_ab, rho_ab; default 3) is the degree r of the polynomial, r = 0 being DDIM
    (`lower_order_final` lowers it in the last steps, which on the uniform time grid at NFE 5-6 is
    what makes diffusers' DEIS more accurate than full-order tAB; docs/benchmarks_ode.md);
    `rk_method` (rho_rk; default '3kutta') the tableau. The option that does not apply to the
    chosen method must stay None. NFE: 1 per step for t_ab/rho_ab, the tableau's stages per
    step for rho_rk; +1 with final_denoise.
    """

    OPTIONS = {
        "method": Option("t_ab", choices=DEIS_METHODS, doc="DEIS variant (official names)"),
        "ab_order": Option(
            None, check=_ab_order_ok, allowed=f"None or an integer 0..{MAX_AB_ORDER}",
            doc="degree r of the eps polynomial for t_ab / rho_ab (None: 3); r = 0 is DDIM",
        ),
        "rk_method": Option(None, choices=(None, *RK_TABLEAUX), doc="Runge-Kutta tableau for rho_rk (None: '3kutta')"),
        "grid": Option("time_quadratic", choices=GRID_KINDS, doc="time grid; official default ts_phase 't', ts_order 2"),
        "lower_order_final": Option(False, choices=(True, False),
                                    doc="t_ab / rho_ab: lower the degree in the last steps (min(r, steps left - 1)), as "
                                        "diffusers' DEIS below 15 steps; off in the official code"),
    }

    def check_options(self) -> None:
        method = self.options["method"]
        if method == "rho_rk" and self.options["lower_order_final"]:
            raise ValueError("sampler 'deis': option lower_order_final=True applies only to method 't_ab' or 'rho_ab'; "
                             "allowed with method='rho_rk': False")
        if method == "rho_rk":
            if self.options["ab_order"] is not None:
                raise ValueError(
                    f"sampler 'deis': option ab_order={self.options['ab_order']!r} applies only to method "
                    "'t_ab' or 'rho_ab'; allowed with method='rho_rk': None (choose the order with rk_method)"
                )
            if self.options["rk_method"] is None:
                self.options["rk_method"] = "3kutta"
        else:
            if self.options["rk_method"] is not None:
                raise ValueError(
                    f"sampler 'deis': option rk_method={self.options['rk_method']!r} applies only to method "
                    f"'rho_rk'; allowed with method={method!r}: None"
                )
            if self.options["ab_order"] is None:
                self.options["ab_order"] = MAX_AB_ORDER

    @property
    def evals_per_step(self) -> int:  # type: ignore[override]
        if self.options["method"] == "rho_rk":
            return len(RK_TABLEAUX[self.options["rk_method"]][2])
        return 1

    def solve(self, denoiser, x, grid, generator=None, callback=None, steps=None):
        method, history, n = self.options["method"], (), len(grid) - 1
        for i in steps if steps is not None else range(n):
            if method == "rho_rk":
                x_next, x0 = rho_rk_step(denoiser, x, grid, i, self.options["rk_method"])
            else:
                variable = "t" if method == "t_ab" else "rho"
                x_next, history, x0 = deis_ab_step(denoiser, x, grid, i, history, ab_degree(self.options, i, n), variable)
            x = x_next
            report_step(callback, i, grid[i], grid[i + 1], x, x0)
        return x


@register("ipndm")
class IPNDM(Sampler):
    """iPNDM (DEIS appendix; official method 'ipndm'): Adams-Bashforth of `order` (1..4, default 4) in rho with DDIM transfer.

    1 NFE per step (+1 with final_denoise). Default grid: uniform in t, as the official code.
    """

    OPTIONS = {
        "order": Option(4, check=positive_int(4), allowed="an integer 1..4", doc="Adams-Bashforth order (points used)"),
    }

    def solve(self, denoiser, x, grid, generator=None, callback=None, steps=None):
        history: tuple = ()
        for i in steps if steps is not None else range(len(grid) - 1):
            x, history, x0 = ipndm_step(denoiser, x, grid, i, history, self.options["order"])
            report_step(callback, i, grid[i], grid[i + 1], x, x0)
        return x
