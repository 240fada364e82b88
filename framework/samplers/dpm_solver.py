"""DPM-Solver (Lu et al. 2022a, noise prediction) and DPM-Solver++ (Lu et al. 2022b, data prediction), orders 1-3.

Every update here is one call of the shared exponential-integrator step
(exp_integrator.exp_step): x_t = linear_part x_s + output_scale * sum_j w_j m_j, where the
m_j are model outputs (noise for "dpmsolver", data for "dpmsolver++") at half log-SNRs
lambda_j. This file only picks the nodes lambda_j and the weights w_j:

* solver_type "taylor": w_j integrate the Lagrange interpolant of the outputs exactly against the
  exponential kernel (the Taylor forms of DPM-Solver eq. 3.6 / DPM-Solver++ eq. 9 with divided
  differences), computed by exp_integrator.lagrange_exp_weights;
* solver_type "dpmsolver" (the official default): the official code's formulas, which replace the
  derivative weight h^2 phi_2 by h phi_1 / 2 at second order (DPM-Solver Alg. 1,
  DPM-Solver++ Alg. 1 and 2) and, in the third-order multistep, weight the second divided difference
  by half of its exact integral (see `official_3m_weights`).

A multistep history is a tuple of (lambda, output) pairs, newest first. The step functions are pure
functions of (x, history, lambda_t, coefficients), so they can be called with a modified history.
"""

from __future__ import annotations

from typing import Optional, Sequence

import torch

from ..diffusion.denoiser import Denoiser
from .base import BOOL, Option, Sampler, report_step
from .dynamic_compensation import (DC_ORDERS, RATIO_SPEC_ALLOWED, MultistepState, compensate, is_ratio_spec,
                                   ratios_for_run, run_multistep)
from .exp_integrator import exp_step, lagrange_exp_weights, monomial_weights, schedule_coefs
from .registry import register

ALGORITHM_TYPES = ("dpmsolver++", "dpmsolver")
METHODS = ("multistep", "singlestep")
SOLVER_TYPES = ("dpmsolver", "taylor")

History = Sequence[tuple[float, torch.Tensor]]  # ((lambda, model output), ...), newest first


def prediction_kind(algorithm_type: str) -> str:
    """The kernel/prediction of an algorithm type: 'x0' for DPM-Solver++, 'eps' for DPM-Solver."""
    if algorithm_type not in ALGORITHM_TYPES:
        raise ValueError(f"algorithm_type={algorithm_type!r} is not allowed; allowed: {', '.join(map(repr, ALGORITHM_TYPES))}")
    return "x0" if algorithm_type == "dpmsolver++" else "eps"


# --- order bookkeeping ---------------------------------------------------------------------------


def multistep_orders(steps: int, order: int, lower_order_final: bool) -> list[int]:
    """The order of each step i = 1..steps of a multistep run (official DPM-Solver/UniPC `sample` loops).

    Step i uses min(order, i) (warm-up from a single evaluation) and, with `lower_order_final`,
    also at most steps + 1 - i, so the last step is first order. The official loops assert
    steps >= order; below that the same rule gives the natural warm-up.
    """
    if steps < 1:
        raise ValueError(f"a multistep run needs at least 1 step, got {steps}")
    return [min(order, i, steps + 1 - i) if lower_order_final else min(order, i) for i in range(1, steps + 1)]


def singlestep_orders(steps: int, order: int, lower_order_final: bool) -> list[int]:
    """Split `steps` grid intervals (= NFE) into singlestep solver orders.

    With `lower_order_final` this is the official 'singlestep' method (DPM-Solver-fast, DPM-Solver
    sec. 3.4 / get_orders_and_timesteps_for_singlestep_solver): order 3 uses 3,...,3 then [2, 1],
    [1] or [2] for steps = 0, 1, 2 mod 3; order 2 uses 2,...,2 then [1] for odd steps. Without it,
    the official 'singlestep_fixed': every step has `order`, and steps must be a multiple of it.
    """
    if steps < 1:
        raise ValueError(f"a singlestep run needs at least 1 grid interval, got {steps}")
    if not lower_order_final:
        if steps % order:
            raise ValueError(
                f"method='singlestep' with lower_order_final=False uses {order} evaluations per step: "
                f"the number of grid intervals (NFE) must be a multiple of order={order}, got {steps}"
            )
        return [order] * (steps // order)
    if order == 1:
        return [1] * steps
    if order == 2:
        return [2] * (steps // 2) + [1] * (steps % 2)
    tail = {0: [2, 1], 1: [1], 2: [2]}[steps % 3]
    return [3] * ((steps - sum(tail)) // 3) + tail


# --- weights ---------------------------------------------------------------------------------------


def first_order_weights(lam_s: float, lam_t: float, kind: str) -> list[float]:
    """[h phi_1(+-h)]: DPM-Solver-1 (eq. 3.7) / DPM-Solver++(1) (eq. 9 with k = 1), both equal to DDIM."""
    return monomial_weights(lam_t - lam_s, 1, kind)


def dpmsolver_2_weights(lam_s: float, lam_1: float, lam_t: float, kind: str) -> list[float]:
    """Weights on (m_s, m_1) of the official 'dpmsolver'-type second-order update.

    x_t = ... + output_scale [h phi_1 m_s + (h phi_1 / 2) (m_1 - m_s) / r], r = (lam_1 - lam_s) / h:
    DPM-Solver-2 (Alg. 1, general r1), DPM-Solver++(2S) (Alg. 1) when lam_1 lies inside the step, and
    DPM-Solver++(2M) (Alg. 2, r = -h_{i-1}/h_i) when lam_1 is the previous node.
    """
    h = lam_t - lam_s
    i0 = first_order_weights(lam_s, lam_t, kind)[0]
    c = 0.5 * i0 / ((lam_1 - lam_s) / h)
    return [i0 - c, c]


def official_3m_weights(lams: Sequence[float], lam_t: float, kind: str) -> list[float]:
    """Weights on (m_0, m_1, m_2), newest first, of the official third-order multistep update.

    The official multistep_dpm_solver_third_update uses I_0 m_0 + I_1 D1 + (I_2 / 2) D2, where
    I_k = int_0^1 e^{kernel} u^k h du and m_0 + u D1 + u^2 D2 is the quadratic through the three
    outputs (u = (lambda - lambda_0)/h). The exact integral of that quadratic weights D2 by I_2, so
    this update is only second order asymptotically (measured ~2.2 in tests); it is what the official
    code and diffusers run, for both solver types. solver_type 'taylor' uses the exact weights instead.
    """
    l0, l1, l2 = (float(v) for v in lams)
    h = lam_t - l0
    r0, r1 = (l0 - l1) / h, (l1 - l2) / h
    moments = monomial_weights(h, 3, kind)
    i0, i1, i2 = (moments[k] / h**k for k in range(3))
    d1_0 = (1 / r0, -1 / r0, 0.0)  # (m0 - m1) / r0
    d1_1 = (0.0, 1 / r1, -1 / r1)  # (m1 - m2) / r1
    d2 = tuple((a - b) / (r0 + r1) for a, b in zip(d1_0, d1_1))
    d1 = tuple(a + r0 * b for a, b in zip(d1_0, d2))
    return [(i0 if j == 0 else 0.0) + i1 * d1[j] + 0.5 * i2 * d2[j] for j in range(3)]


def multistep_weights(lams: Sequence[float], lam_t: float, kind: str, solver_type: str) -> list[float]:
    """Weights on the outputs at `lams` (newest first, lams[0] = lambda_s) of the multistep update to lam_t.

    Order = len(lams). 1: DPM-Solver(++)-1; 2: DPM-Solver++(2M) (Alg. 2) and its noise-prediction
    twin; 3: the official third-order multistep. 'taylor' integrates the Lagrange interpolant exactly.
    """
    order = len(lams)
    if order == 1:
        return first_order_weights(lams[0], lam_t, kind)
    if solver_type == "dpmsolver" and order == 2:
        return dpmsolver_2_weights(lams[0], lams[1], lam_t, kind)
    if solver_type == "dpmsolver" and order == 3:
        return official_3m_weights(lams, lam_t, kind)
    if solver_type not in SOLVER_TYPES:
        raise ValueError(f"solver_type={solver_type!r} is not allowed; allowed: {', '.join(map(repr, SOLVER_TYPES))}")
    return lagrange_exp_weights(lams, lams[0], lam_t, kind)


# --- steps (pure functions) -----------------------------------------------------------------------


def multistep_update(x: torch.Tensor, history: History, lam_t: float, coefs, kind: str, solver_type: str) -> torch.Tensor:
    """One multistep step from x_s to t with the outputs in `history` ((lambda, output) newest first).

    coefs = (alpha_s, sigma_s, alpha_t, sigma_t); the order is len(history).
    """
    lams = [float(lam) for lam, _ in history]
    weights = multistep_weights(lams, lam_t, kind, solver_type)
    return exp_step(x, [out for _, out in history], weights, coefs, kind)


def singlestep_update(
    denoiser: Denoiser,
    x: torch.Tensor,
    times: Sequence[torch.Tensor],
    kind: str,
    solver_type: str,
    model_s: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """One singlestep step of order len(times) - 1 from times[0] to times[-1] through the inner grid points.

    Order 1: DPM-Solver-1 / DPM-Solver++(1). Order 2: DPM-Solver-2 (Alg. 1) / DPM-Solver++(2S) (Alg. 1),
    intermediate point times[1]. Order 3: DPM-Solver-3 (Alg. 2) and its data-prediction form, intermediate
    points times[1], times[2]. Costs len(times) - 1 evaluations (model_s may be passed in, then one less).
    """
    sched = [schedule_coefs(denoiser.schedule, t) for t in times]
    lams = [c[2] for c in sched]
    m = [denoiser.predict(x, times[0], kind) if model_s is None else model_s]

    def to(j: int, nodes: list[int], weights: list[float]) -> torch.Tensor:
        coefs = (sched[0][0], sched[0][1], sched[j][0], sched[j][1])
        return exp_step(x, [m[n] for n in nodes], weights, coefs, kind)

    order = len(times) - 1
    last = order
    if order >= 2:
        x1 = to(1, [0], first_order_weights(lams[0], lams[1], kind))
        m.append(denoiser.predict(x1, times[1], kind))
    if order == 3:
        x2 = to(2, [0, 1], lagrange_exp_weights(lams[:2], lams[0], lams[2], kind))
        m.append(denoiser.predict(x2, times[2], kind))
    if order == 1:
        return to(last, [0], first_order_weights(lams[0], lams[last], kind))
    if solver_type == "taylor":
        return to(last, list(range(order)), lagrange_exp_weights(lams[:order], lams[0], lams[last], kind))
    if order == 2:
        return to(last, [0, 1], dpmsolver_2_weights(lams[0], lams[1], lams[last], kind))
    # 'dpmsolver' third order: the linear interpolant through (s, m_s) and (s2, m_s2)
    return to(last, [0, 2], lagrange_exp_weights([lams[0], lams[2]], lams[0], lams[last], kind))


def _as_x0(out: torch.Tensor, x: torch.Tensor, alpha: float, sigma: float, kind: str) -> torch.Tensor:
    return out if kind == "x0" else (x - sigma * out) / alpha


# --- the sampler ----------------------------------------------------------------------------------


@register("dpmsolver++")
class DPMSolverPP(Sampler):
    """DPM-Solver++ (data prediction, default) and DPM-Solver (algorithm_type='dpmsolver'), orders 1-3.

    method='multistep': 2M (DPM-Solver++ Alg. 2) / 3M, one evaluation per step, the first steps
    warm up from lower orders; lower_order_final lowers the last steps' orders at every step count
    (as UniPC's official code; the official DPM-Solver loop does it below 10 steps, diffusers below 15):
    the last time-uniform steps are the longest in log-SNR, and the ODE benchmark measured 2M at
    NFE 20 with 0.034 instead of 0.142 mean error (2-D mixture) this way. method='singlestep': 2S (Alg. 1) / 3S with the
    grid's inner points as intermediate times; lower_order_final=True splits any NFE into orders
    as the official 'singlestep' method, False is 'singlestep_fixed' (NFE a multiple of order).
    """

    OPTIONS = {
        "order": Option(2, choices=(1, 2, 3), doc="solver order"),
        "method": Option("multistep", choices=METHODS, doc="multistep (one NFE per step) or singlestep (order NFE per step)"),
        "algorithm_type": Option("dpmsolver++", choices=ALGORITHM_TYPES, doc="data prediction (DPM-Solver++) or noise prediction (DPM-Solver)"),
        "solver_type": Option("dpmsolver", choices=SOLVER_TYPES, doc="official 'dpmsolver' formulas or exact 'taylor' (Lagrange) weights"),
        "lower_order_final": Option(True, choices=BOOL, doc="lower orders in the final steps (see class doc)"),
        "dc_ratios": Option(None, check=is_ratio_spec, allowed=RATIO_SPEC_ALLOWED,
                            doc="dynamic-compensation ratios (DC-Solver), multistep only; None: none"),
        "dc_order": Option(2, choices=DC_ORDERS, doc="order of the dynamic-compensation interpolant"),
    }

    def check_options(self) -> None:
        if self.options["dc_ratios"] is not None and self.options["method"] != "multistep":
            raise ValueError(f"sampler {self.name!r}: option dc_ratios needs method='multistep', "
                             f"got method={self.options['method']!r}")

    def steps_for_nfe(self, nfe: int) -> int:
        steps = super().steps_for_nfe(nfe)
        if self.options["method"] == "singlestep" and not self.options["lower_order_final"]:
            order = self.options["order"]
            if steps % order:
                raise ValueError(
                    f"sampler {self.name!r}: nfe={nfe} is not allowed with method='singlestep', lower_order_final=False; "
                    f"allowed: multiples of order={order}{' plus 1 (final_denoise)' if self.options['final_denoise'] else ''}"
                )
        return steps

    def solve(self, denoiser, x, grid, generator=None, callback=None, steps=None):
        if self.options["method"] == "singlestep":
            return self._solve_singlestep(denoiser, x, grid, callback)
        return self._solve_multistep(denoiser, x, grid, callback, steps)

    def kind(self) -> str:
        return prediction_kind(self.options["algorithm_type"])

    def dc_order(self) -> int:
        return int(self.options["dc_order"])

    def history_size(self) -> int:
        return max(self.options["order"], self.dc_order() + 1)

    def run_ratios(self, denoiser, grid) -> list[float]:
        """The dynamic-compensation ratio of every step from `dc_ratios` (all 1 when None)."""
        n = len(grid) - 1
        return ratios_for_run(self.options["dc_ratios"], self.nfe_for_steps(n), n, self.dc_order(), "dc_ratios")

    def _solve_multistep(self, denoiser, x, grid, callback, steps):
        return run_multistep(self, denoiser, x, grid, self.run_ratios(denoiser, grid), callback, steps)

    def dc_step(self, denoiser, state: MultistepState, grid, ratio=1.0, evaluate: Optional[bool] = None,
                callback=None) -> MultistepState:
        """Multistep step state.i with the newest output compensated by `ratio` (dynamic_compensation.compensate;
        DC-Solver applied to a predictor-only solver); `evaluate` (default: unless it is the last step) evaluates
        the model at the new point for the next step."""
        kind, solver_type = self.kind(), self.options["solver_type"]
        i, n = state.i, len(grid) - 1
        evaluate = i + 1 < n if evaluate is None else evaluate
        step_order = multistep_orders(n, self.options["order"], self.options["lower_order_final"])[i]
        alpha_s, sigma_s, _ = schedule_coefs(denoiser.schedule, grid[i])
        alpha_t, sigma_t, lam_t = schedule_coefs(denoiser.schedule, grid[i + 1])
        x0 = _as_x0(state.history[0][1], state.x, alpha_s, sigma_s, kind)
        history = compensate(state.history, state.times, ratio, self.dc_order())
        x = multistep_update(state.x, history[:step_order], lam_t, (alpha_s, sigma_s, alpha_t, sigma_t), kind, solver_type)
        report_step(callback, i, grid[i], grid[i + 1], x, x0)
        new_history = history
        if evaluate:  # no evaluation after the final step
            x, out = denoiser.node(x, grid[i + 1], kind)
            new_history = ((lam_t, out), *history[: self.history_size() - 1])
        times = (float(grid[i + 1]), *state.times)[: self.history_size()]
        return MultistepState(i + 1, x, x, new_history, times)

    def _solve_singlestep(self, denoiser, x, grid, callback):
        kind, solver_type = prediction_kind(self.options["algorithm_type"]), self.options["solver_type"]
        orders = singlestep_orders(len(grid) - 1, self.options["order"], self.options["lower_order_final"])
        start = 0
        for i, k in enumerate(orders):
            times = [grid[start + j] for j in range(k + 1)]
            alpha_s, sigma_s, _ = schedule_coefs(denoiser.schedule, times[0])
            x, model_s = denoiser.node(x, times[0], kind)
            x0 = _as_x0(model_s, x, alpha_s, sigma_s, kind)
            x = singlestep_update(denoiser, x, times, kind, solver_type, model_s=model_s)
            report_step(callback, i, times[0], times[-1], x, x0)
            start += k
        return x
