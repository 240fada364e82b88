"""Shared math of exponential integrators in half log-SNR time lambda (DPM-Solver, DEIS, UniPC).

With h = lambda_t - lambda_s > 0, the probability-flow ODE has the exact variation-of-constants forms
(DPM-Solver eq. 3.4, DPM-Solver++ eq. 8):

    noise prediction:  x_t = (alpha_t / alpha_s) x_s - sigma_t * int_{lambda_s}^{lambda_t} e^{(lambda_t - l)} eps(l) dl
    data prediction:   x_t = (sigma_t / sigma_s) x_s + alpha_t * int_{lambda_s}^{lambda_t} e^{-(lambda_t - l)} x0(l) dl

Every multistep / singlestep method replaces eps or x0 by an interpolating polynomial through
earlier evaluations, so each of them needs only the weights
    w_j = int_{lambda_s}^{lambda_t} e^{sign (lambda_t - l)} ell_j(l) dl
of the Lagrange basis ell_j. This module computes them in closed form (through phi functions)
and by Gauss-Legendre quadrature for bases that are polynomials in another variable (DEIS's t or rho).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch

KERNELS = ("eps", "x0")


def phi(k: int, h: float) -> float:
    """phi_k(h) = int_0^1 e^{(1 - s) h} s^{k-1} / (k-1)! ds; phi_0 = e^h, phi_{k+1}(h) = (phi_k(h) - 1/k!) / h.

    Uses the Taylor series sum_j h^j / (j + k)! for small |h|, where the recursion cancels.
    """
    h = float(h)
    if k == 0:
        return math.exp(h)
    if abs(h) < 0.5:
        return sum(h**j / math.factorial(j + k) for j in range(30))
    value = math.expm1(h) / h  # phi_1, stable
    for j in range(1, k):
        value = (value - 1.0 / math.factorial(j)) / h
    return value


def kernel_sign(kind: str) -> float:
    """e^{+(lambda_t - l)} for noise prediction, e^{-(lambda_t - l)} for data prediction."""
    if kind not in KERNELS:
        raise ValueError(f"kernel {kind!r} is not one of {', '.join(KERNELS)}")
    return 1.0 if kind == "eps" else -1.0


def monomial_weights(h: float, order: int, kind: str) -> list[float]:
    """m_k = int_{lambda_s}^{lambda_t} e^{sign (lambda_t - l)} (l - lambda_s)^k dl = h^{k+1} k! phi_{k+1}(sign h), k < order."""
    sign = kernel_sign(kind)
    return [h ** (k + 1) * math.factorial(k) * phi(k + 1, sign * h) for k in range(order)]


def lagrange_exp_weights(nodes: Sequence[float], lam_s: float, lam_t: float, kind: str) -> list[float]:
    """Closed-form w_j = int_{lam_s}^{lam_t} e^{sign (lam_t - l)} ell_j(l) dl for the Lagrange basis on `nodes` (in lambda)."""
    nodes = np.asarray(nodes, dtype=np.float64) - float(lam_s)
    n = len(nodes)
    vander = np.vander(nodes, n, increasing=True)  # rows: nodes, columns: powers
    moments = np.asarray(monomial_weights(float(lam_t) - float(lam_s), n, kind))
    # ell_j = sum_k a_{kj} u^k with V a = I, so w_j = sum_k a_{kj} m_k, i.e. w = V^{-T} m
    return list(np.linalg.solve(vander.T, moments))


def gauss_legendre(a: float, b: float, n: int = 64) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(n)
    half = 0.5 * (b - a)
    return a + half * (x + 1.0), half * w


def quadrature_exp_weights(
    basis: Sequence[Callable[[np.ndarray], np.ndarray]], lam_s: float, lam_t: float, kind: str, n: int = 64
) -> list[float]:
    """w_j = int_{lam_s}^{lam_t} e^{sign (lam_t - l)} basis_j(l) dl by Gauss-Legendre quadrature.

    For bases that are polynomials in another time variable (DEIS's tAB in t), where no closed form exists.
    """
    sign = kernel_sign(kind)
    lam, w = gauss_legendre(float(lam_s), float(lam_t), n)
    kernel = np.exp(sign * (float(lam_t) - lam)) * w
    return [float(np.sum(kernel * f(lam))) for f in basis]


def lagrange_basis(nodes: Sequence[float], j: int) -> Callable[[np.ndarray], np.ndarray]:
    """ell_j(u) = prod_{m != j} (u - u_m) / (u_j - u_m) as a vectorised function."""
    nodes = [float(v) for v in nodes]

    def ell(u):
        out = np.ones_like(np.asarray(u, dtype=np.float64))
        for m, um in enumerate(nodes):
            if m != j:
                out = out * (u - um) / (nodes[j] - um)
        return out

    return ell


def lagrange_integral_weights(nodes: Sequence[float], a: float, b: float) -> list[float]:
    """int_a^b ell_j(u) du for the Lagrange basis on `nodes` (plain Adams-Bashforth weights; exact)."""
    nodes = np.asarray(nodes, dtype=np.float64)
    n = len(nodes)
    vander = np.vander(nodes, n, increasing=True)
    moments = np.array([(b ** (k + 1) - a ** (k + 1)) / (k + 1) for k in range(n)])
    return list(np.linalg.solve(vander.T, moments))


def linear_part(alpha_s, sigma_s, alpha_t, sigma_t, kind: str):
    """The coefficient of x_s: alpha_t/alpha_s (noise prediction) or sigma_t/sigma_s (data prediction)."""
    return alpha_t / alpha_s if kernel_sign(kind) > 0 else sigma_t / sigma_s


def output_scale(alpha_t, sigma_t, kind: str):
    """The factor in front of the integral: -sigma_t (noise prediction) or alpha_t (data prediction)."""
    return -sigma_t if kernel_sign(kind) > 0 else alpha_t


def exp_step(x_s: torch.Tensor, preds: Sequence[torch.Tensor], weights: Sequence[float], coefs, kind: str) -> torch.Tensor:
    """x_t = linear_part x_s + output_scale * sum_j w_j pred_j, with coefs = (alpha_s, sigma_s, alpha_t, sigma_t)."""
    alpha_s, sigma_s, alpha_t, sigma_t = coefs
    acc = sum(float(w) * p for w, p in zip(weights, preds))
    return linear_part(alpha_s, sigma_s, alpha_t, sigma_t, kind) * x_s + output_scale(alpha_t, sigma_t, kind) * acc


def schedule_coefs(schedule, t, dtype=torch.float64) -> tuple[float, float, float]:
    """(alpha, sigma, lambda) at a scalar time t, as Python floats computed in float64."""
    t = torch.as_tensor(t, dtype=torch.float64)
    return float(schedule.alpha(t)), float(schedule.sigma(t)), float(schedule.log_snr(t))


# --- multistep bookkeeping (DEIS, iPNDM, PNDM) ---------------------------------------------------


def push_history(history: Sequence, item, size: int) -> tuple:
    """A new newest-first tuple (item, *history) truncated to `size` entries; the old one is left untouched.

    Multistep solvers pass this tuple from step to step instead of keeping state in an object
    (diffusers#8711), so a step stays a pure function of (denoiser, x, grid, i, history).
    """
    if size < 1:
        raise ValueError(f"history size must be >= 1, got {size}")
    return (item, *tuple(history))[:size]


def adams_bashforth_weights(order: int) -> list[float]:
    """Equal-step Adams-Bashforth weights b_0..b_{order-1}, newest first: y' ~ sum_j b_j f_{n-j} over [n, n+1].

    They are the integrals over [0, 1] of the Lagrange basis on the nodes 0, -1, ..., -(order-1)
    (so order 4 gives (55, -59, 37, -9) / 24, the linear multistep of PNDM and iPNDM).
    """
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"Adams-Bashforth order must be an integer >= 1, got {order!r}")
    return lagrange_integral_weights([-float(j) for j in range(order)], 0.0, 1.0)


# --- Taylor expansions in lambda with estimated derivatives (USF) -----------------------------------


def taylor_weights(h: float, order: int, kind: str) -> list[float]:
    """c_k = int_{lambda_s}^{lambda_t} e^{sign (lambda_t - l)} (l - lambda_s)^k / k! dl = h^{k+1} phi_{k+1}(sign h), k < order.

    The coefficient of the k-th lambda-derivative of the model output in the Taylor-expanded exponential
    integrator (USF sec. 3; DPM-Solver eq. 3.6 / DPM-Solver++ eq. 9 before the derivatives are replaced
    by differences).
    """
    sign = kernel_sign(kind)
    return [h ** (k + 1) * phi(k + 1, sign * h) for k in range(order)]


def finite_difference_weights(offsets: Sequence[float], derivative: int) -> list[float]:
    """a_j with f^(derivative)(lambda_s) ~ sum_j a_j (f(lambda_s + offsets_j) - f(lambda_s)) (USF sec. 3; official get_diff_derivative).

    Each point's difference is expanded to the order len(offsets): f_j - f_s = sum_i offsets_j^i / i! f^(i),
    and the system is solved for f^(derivative); exact when f is a polynomial of degree <= len(offsets).
    """
    n = len(offsets)
    if not 1 <= derivative <= n:
        raise ValueError(f"the derivative of order {derivative} needs at least {derivative} points besides "
                         f"the start point, got {n}")
    d = np.asarray(offsets, dtype=np.float64)
    if len(set(d.tolist())) != n or bool((d == 0).any()):
        raise ValueError(f"difference points must be distinct and differ from the start point, got offsets {list(d)}")
    taylor = np.stack([d**i / math.factorial(i) for i in range(1, n + 1)], axis=1)  # rows: points, cols: orders
    unit = np.zeros(n)
    unit[derivative - 1] = 1.0
    # f^(derivative) = e^T T^{-1} delta, so a = T^{-T} e
    return list(np.linalg.solve(taylor.T, unit))


def taylor_update_weights(lam_s: float, lam_t: float, kind: str,
                          estimators: Sequence[tuple[Sequence[float], float]]) -> tuple[float, list[list[float]]]:
    """Weights of one Taylor-expanded step from lambda_s to lambda_t on the outputs (USF sec. 3).

    estimators[k - 1] = (lambdas of the points the k-th derivative is estimated from, factor on that
    estimate); the step's Taylor order is len(estimators) + 1. Returns (weight on the start output,
    [weights on each estimator's points]), so that with exp_step the update is
    x_t = linear_part x_s + output_scale [c_0 m_s + sum_k factor_k c_k sum_j a_kj (m_j - m_s)].
    """
    h = float(lam_t) - float(lam_s)
    coefs = taylor_weights(h, len(estimators) + 1, kind)
    start, per_point = coefs[0], []
    for k, (lams, factor) in enumerate(estimators, start=1):
        a = finite_difference_weights([float(v) - float(lam_s) for v in lams], k)
        w = [coefs[k] * float(factor) * aj for aj in a]
        start -= sum(w)
        per_point.append(w)
    return start, per_point
