"""UniPC (Zhao et al. 2023): the unified predictor UniP-p and the unified corrector UniC-p, orders 1-3.

With h = lambda_t - lambda_s, hh = -h (data prediction) or +h (noise prediction), previous outputs
m_k at r_k = (lambda_k - lambda_s)/h and D_k = (m_k - m_s)/r_k, one UniPC update is (paper sec. 3,
official uni_pc.py `multistep_uni_pc_bh_update`)

    x_t = linear_part x_s + output_scale [h phi_1 m_s + sign B(hh) sum_k rho_k D_k],

sign = +1 (noise) / -1 (data), with rho solving sum_k rho_k r_k^(i-1) = i! hh phi_(i+1)(hh) / B(hh),
i = 1..p (the order conditions of UniC, Theorem 3.1). UniP-p uses the p - 1 previous outputs; UniC-p
adds the output at the predicted x_t (r = 1), which the next step reuses, so the corrector costs no
evaluation and raises the order to p + 1. B(h) = h ('bh1') or e^h - 1 ('bh2'). As in the official
code, UniP-2 and UniC-1 take the simplified rho = 1/2 (the only places where B(h) matters).

Every update is one call of the shared exp_integrator.exp_step with weights on the outputs; a step is a
pure function of (x, history of (lambda, output) newest first, lambda_t, coefficients), so it can be
called with a modified history.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import numpy as np
import torch

from .base import BOOL, Option, Sampler, report_step
from .dpm_solver import History, multistep_orders
from .dynamic_compensation import MultistepState, compensate, run_multistep
from .exp_integrator import exp_step, kernel_sign, monomial_weights, phi, schedule_coefs
from .registry import register

VARIANTS = ("bh1", "bh2")


def b_of_h(hh: float, variant: str) -> float:
    """B(h) of the paper: B1(h) = h ('bh1') or B2(h) = e^h - 1 ('bh2'), at hh = -h (data) or h (noise)."""
    if variant == "bh1":
        return hh
    if variant == "bh2":
        return math.expm1(hh)
    raise ValueError(f"variant={variant!r} is not allowed; allowed: {', '.join(map(repr, VARIANTS))}")


def order_conditions(hh: float, count: int) -> list[float]:
    """g_i = i! hh phi_(i+1)(hh), i = 1..count: the right-hand sides of UniC/UniP's linear system times B(h)."""
    return [math.factorial(i) * hh * phi(i + 1, hh) for i in range(1, count + 1)]


def solve_rhos(rks: Sequence[float], hh: float, variant: str) -> list[float]:
    """rho solving sum_k rho_k r_k^(i-1) = g_i / B(hh), i = 1..len(rks) (UniPC order conditions).

    A single unknown (UniP-2's previous node, or UniC-1's current one) takes the official simplified
    value 1/2 instead (the limit of the solution as h -> 0).
    """
    if len(rks) == 0:
        return []
    if len(rks) == 1:
        return [0.5]
    vander = np.vander(np.asarray(rks, dtype=np.float64), len(rks), increasing=True).T  # rows: powers
    rhs = np.asarray(order_conditions(hh, len(rks))) / b_of_h(hh, variant)
    return [float(v) for v in np.linalg.solve(vander, rhs)]


def unipc_weights(lams: Sequence[float], lam_t: float, kind: str, variant: str, corrector: bool) -> list[float]:
    """Weights on the outputs at `lams` (newest first, lams[0] = lambda_s), then on m_t if `corrector`.

    UniP-p (p = len(lams)) when not `corrector`, UniC-p otherwise (sec. 3.1-3.2, official bh update).
    """
    lam_s = float(lams[0])
    h = lam_t - lam_s
    hh = kernel_sign(kind) * h
    rks = [(float(lam) - lam_s) / h for lam in lams[1:]] + ([1.0] if corrector else [])
    rhos = solve_rhos(rks, hh, variant)
    scale = kernel_sign(kind) * b_of_h(hh, variant) if rhos else 0.0
    coeffs = [scale * rho / rk for rho, rk in zip(rhos, rks)]  # on m_k, from D_k = (m_k - m_s) / r_k
    first = monomial_weights(h, 1, kind)[0]  # h phi_1
    return [first - sum(coeffs)] + coeffs


def unipc_update(
    x: torch.Tensor, history: History, lam_t: float, coefs, kind: str, variant: str, model_t: Optional[torch.Tensor] = None
) -> torch.Tensor:
    """UniP-p from x_s (model_t None) or UniC-p (model_t = output at the predicted x_t), p = len(history).

    coefs = (alpha_s, sigma_s, alpha_t, sigma_t). UniC-p corrects the same x_s, not the predicted point.
    """
    lams = [float(lam) for lam, _ in history]
    outputs = [out for _, out in history] + ([model_t] if model_t is not None else [])
    weights = unipc_weights(lams, lam_t, kind, variant, corrector=model_t is not None)
    return exp_step(x, outputs, weights, coefs, kind)


@register("unipc")
class UniPC(Sampler):
    """UniPC multistep (Zhao et al. 2023): UniP-p predictor + UniC-p corrector, data or noise prediction.

    One evaluation per step: the output at each predicted point feeds both UniC and the next step;
    no corrector after the final step. Orders warm up from 1; with lower_order_final the last steps
    use lower orders (official uni_pc.py: whatever the number of steps).
    """

    OPTIONS = {
        "order": Option(2, choices=(1, 2, 3), doc="predictor order p (with the corrector, accuracy order p + 1)"),
        "variant": Option("bh1", choices=VARIANTS, doc="B(h) = h ('bh1') or e^h - 1 ('bh2')"),
        "predict_x0": Option(True, choices=BOOL, doc="data prediction (True) or noise prediction (False)"),
        "use_corrector": Option(True, choices=BOOL, doc="apply UniC after every step but the last"),
        "lower_order_final": Option(True, choices=BOOL, doc="lower orders in the final steps"),
    }

    def kind(self) -> str:
        return "x0" if self.options["predict_x0"] else "eps"

    def dc_order(self) -> int:
        """The interpolation order of dynamic compensation (dc_solver's option; plain UniPC never compensates)."""
        return int(self.options.get("dc_order", 1))

    def history_size(self) -> int:
        return max(self.options["order"], self.dc_order() + 1)

    def run_ratios(self, denoiser, grid) -> list[float]:
        """The dynamic-compensation ratio of every step: 1 for plain UniPC (see DCSolver)."""
        return [1.0] * (len(grid) - 1)

    def solve(self, denoiser, x, grid, generator=None, callback=None, steps=None):
        return run_multistep(self, denoiser, x, grid, self.run_ratios(denoiser, grid), callback, steps)

    def dc_step(self, denoiser, state: MultistepState, grid, ratio=1.0, evaluate: Optional[bool] = None,
                callback=None) -> MultistepState:
        """Step state.i: compensate the newest output with `ratio` (dynamic_compensation.compensate), UniP-p to
        grid[i + 1] and, with `evaluate` (default: unless it is the last step), the evaluation there that UniC-p
        and the next step share."""
        order, variant, kind = self.options["order"], self.options["variant"], self.kind()
        i, n = state.i, len(grid) - 1
        evaluate = i + 1 < n if evaluate is None else evaluate
        step_order = multistep_orders(n, order, self.options["lower_order_final"])[i]
        alpha_s, sigma_s, _ = schedule_coefs(denoiser.schedule, grid[i])
        alpha_t, sigma_t, lam_t = schedule_coefs(denoiser.schedule, grid[i + 1])
        coefs = (alpha_s, sigma_s, alpha_t, sigma_t)
        out = state.history[0][1]
        x0 = out if kind == "x0" else (state.x_eval - sigma_s * out) / alpha_s
        history = compensate(state.history, state.times, ratio, self.dc_order())
        x_pred = unipc_update(state.x, history[:step_order], lam_t, coefs, kind, variant)
        x_eval, new_history = state.x_eval, history
        if evaluate:  # the evaluation at the predicted point serves UniC and the next step
            x_eval, out = denoiser.node(x_pred, grid[i + 1], kind)
            moved = None if x_eval is x_pred else x_eval - x_pred  # a time policy's move of the state
            x_pred = x_eval
            if self.options["use_corrector"]:
                x_pred = unipc_update(state.x, history[:step_order], lam_t, coefs, kind, variant, model_t=out)
                x_pred = x_pred if moved is None else x_pred + moved
            new_history = ((lam_t, out), *history[: self.history_size() - 1])
        report_step(callback, i, grid[i], grid[i + 1], x_pred, x0)
        times = (float(grid[i + 1]), *state.times)[: self.history_size()]
        return MultistepState(i + 1, x_pred, x_eval, new_history, times)
