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
