"""Gaussian data x0 ~ N(mu, Sigma): every sampler quantity in closed form, written from the papers.

Under x_t = alpha_t x0 + sigma_t eps the marginal is N(alpha_t mu, C_t) with C_t = alpha_t^2 Sigma + sigma_t^2 I,
so the exact noise prediction is affine in x:

    eps*(x, t) = -sigma_t grad log p_t(x) = sigma_t C_t^{-1} (x - alpha_t mu) = A_t x + b_t.

Hence every DDPM / DDIM step is x_t = M x_s + c + std z with z ~ N(0, I) independent, and the law of the
sampler's output from x_T ~ N(0, I) is Gaussian with a mean and covariance obtained by pushing (mean, cov)
through the steps. The probability-flow ODE is linear too and, since all C_t share Sigma's eigenvectors,
its flow is x_t = alpha_t mu + C_t^{1/2} C_s^{-1/2} (x_s - alpha_s mu) (each eigen-coordinate keeps its
standard score). Nothing here calls framework.samplers: the reference is independent of the code under test.
Only alpha(t) comes from the schedule object, in float64.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from scipy.stats import chi2

F64 = torch.float64


@dataclass
class GaussianData:
    mu: torch.Tensor  # [d]
    cov: torch.Tensor  # [d, d], symmetric positive definite
    schedule: object
    _affine: dict = field(default_factory=dict, repr=False)  # time -> (A_t, b_t), so long chains stay cheap

    @classmethod
    def random(cls, schedule, dim: int = 3, seed: int = 0, eigenvalues=(0.05, 0.4, 2.0), scale: float = 1.5):
        """A full (rotated) covariance with the given eigenvalues and a random mean."""
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=F64))
        eig = torch.tensor(eigenvalues, dtype=F64)
        mu = scale * torch.randn(dim, generator=g, dtype=F64)
        return cls(mu, q @ torch.diag(eig) @ q.T, schedule)

    @property
    def dim(self) -> int:
        return len(self.mu)

    def abar(self, t) -> float:
        """alpha_t^2 (DDPM's alpha-bar) in float64."""
        return float(self.schedule.alpha(torch.as_tensor(float(t), dtype=F64))) ** 2

    def marginal_cov(self, t) -> torch.Tensor:
        a = self.abar(t)
        return a * self.cov + (1.0 - a) * torch.eye(self.dim, dtype=F64)

    def eps_affine(self, t) -> tuple[torch.Tensor, torch.Tensor]:
        """(A_t, b_t) with eps*(x, t) = A_t x + b_t."""
        key = float(t)
        if key not in self._affine:
            a = self.abar(key)
            A = math.sqrt(1.0 - a) * torch.linalg.inv(self.marginal_cov(key))
            self._affine[key] = (A, -math.sqrt(a) * (A @ self.mu))
        return self._affine[key]

    def eps_model(self):
        """The exact noise prediction as a network: model(x [N, d], t [N] or scalar) -> [N, d] (x's dtype)."""

        def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            t = torch.as_tensor(t, dtype=F64).flatten()
            A, b = self.eps_affine(t[0])
            return (x.to(F64) @ A.T + b).to(x.dtype)

        return model

    def flow(self, x: torch.Tensor, s, t) -> torch.Tensor:
        """The exact probability-flow ODE solution at time t from x [N, d] at time s."""
        lam, q = torch.linalg.eigh(self.cov)
        a_s, a_t = self.abar(s), self.abar(t)
        gain = torch.sqrt((a_t * lam + 1.0 - a_t) / (a_s * lam + 1.0 - a_s))
        transport = q @ torch.diag(gain) @ q.T
        return math.sqrt(a_t) * self.mu + (x.to(F64) - math.sqrt(a_s) * self.mu) @ transport.T


# --- one step = (M, c, noise variance): x_next = M x + c + sqrt(var) z ---------------------------------------


def _final_x0(data: GaussianData, t):
    """The x0 prediction at the last grid time (`final_denoise`): x0 = (x - sqrt(1 - abar) eps) / sqrt(abar)."""
    a = data.abar(t)
    A, b = data.eps_affine(t)
    eye = torch.eye(data.dim, dtype=F64)
    k = math.sqrt(1.0 - a)
    return (eye - k * A) / math.sqrt(a), -k * b / math.sqrt(a), 0.0


def ddpm_steps(data: GaussianData, grid, variance: str, final_denoise: bool = True) -> list:
    """DDPM ancestral sampling (Ho et al. 2020, Algorithm 2, eq. 6-7) on the sub-sequence `grid`.

    From grid time s to the next time t, with abar_s < abar_t, the step's own alpha = abar_s / abar_t and
    beta = 1 - alpha (the strided chain): x_t = (x_s - beta / sqrt(1 - abar_s) eps(x_s, s)) / sqrt(alpha) + sigma z,
    sigma^2 = beta~ = (1 - abar_t) / (1 - abar_s) beta ('posterior', eq. 7) or beta ('upper', sec. 3.2).
    """
    if variance not in ("posterior", "upper"):
        raise ValueError(variance)
    eye = torch.eye(data.dim, dtype=F64)
    steps = []
    for s, t in zip(grid[:-1], grid[1:]):
        ab_s, ab_t = data.abar(s), data.abar(t)
        alpha = ab_s / ab_t
        beta = 1.0 - alpha
        A, b = data.eps_affine(s)
        k = beta / math.sqrt(1.0 - ab_s)
        var = beta * (1.0 - ab_t) / (1.0 - ab_s) if variance == "posterior" else beta
        steps.append(((eye - k * A) / math.sqrt(alpha), -k * b / math.sqrt(alpha), var))
    if final_denoise:
        steps.append(_final_x0(data, grid[-1]))
    return steps


def ddim_steps(data: GaussianData, grid, eta: float, final_denoise: bool = True) -> list:
    """DDIM (Song et al. 2021) eq. 12 with sigma(eta) of eq. 16, from grid time s to the next time t:

    x_t = sqrt(abar_t) (x_s - sqrt(1 - abar_s) eps) / sqrt(abar_s) + sqrt(1 - abar_t - sigma^2) eps + sigma z,
    sigma = eta sqrt((1 - abar_t) / (1 - abar_s)) sqrt(1 - abar_s / abar_t).
    """
    eye = torch.eye(data.dim, dtype=F64)
    steps = []
    for s, t in zip(grid[:-1], grid[1:]):
        ab_s, ab_t = data.abar(s), data.abar(t)
        sig = eta * math.sqrt((1.0 - ab_t) / (1.0 - ab_s)) * math.sqrt(1.0 - ab_s / ab_t)
        A, b = data.eps_affine(s)
        on_eps = -math.sqrt(ab_t) * math.sqrt(1.0 - ab_s) / math.sqrt(ab_s) + math.sqrt(1.0 - ab_t - sig**2)
        steps.append((math.sqrt(ab_t / ab_s) * eye + on_eps * A, on_eps * b, sig**2))
    if final_denoise:
        steps.append(_final_x0(data, grid[-1]))
    return steps


def output_law(steps, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and covariance of the output when x_T ~ N(0, I): m <- M m + c, P <- M P M^T + var I."""
    m, P = torch.zeros(dim, dtype=F64), torch.eye(dim, dtype=F64)
    for M, c, var in steps:
        m = M @ m + c
        P = M @ P @ M.T + var * torch.eye(dim, dtype=F64)
    return m, P


def composed_map(steps, dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    """For noise-free steps: the affine map x_T -> output as (M, c)."""
    M, c = torch.eye(dim, dtype=F64), torch.zeros(dim, dtype=F64)
    for Mi, ci, var in steps:
        assert var == 0.0, "composed_map is for deterministic steps"
        M, c = Mi @ M, Mi @ c + ci
    return M, c


# --- Monte Carlo comparison of samples with a Gaussian law ---------------------------------------------------

#: per-check false-alarm probability of the Monte Carlo tolerances below
FALSE_ALARM = 1e-6


def law_statistics(x: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor) -> tuple[float, float]:
    """(mean statistic, covariance statistic) of samples x [N, d] against N(mean, cov).

    Whitening y = L^{-1} (x - mean), cov = L L^T, makes y ~ N(0, I) exactly when the law is right. Then
    N |ybar|^2 ~ chi2(d) exactly, and with S the sample covariance of y, (N - 1)/2 ||S - I||_F^2 is asymptotically
    chi2(d (d + 1) / 2) (entries of S have standard errors sqrt(2 / N) on the diagonal, sqrt(1 / N) off it).
    """
    x = x.to(F64)
    L = torch.linalg.cholesky(cov)
    y = torch.linalg.solve_triangular(L, (x - mean).T, upper=False).T
    n = len(y)
    ybar = y.mean(0)
    S = torch.cov(y.T)
    eye = torch.eye(y.shape[1], dtype=F64)
    return float(n * ybar @ ybar), float((n - 1) / 2 * ((S - eye) ** 2).sum())


def law_limits(dim: int) -> tuple[float, float]:
    """The chi2 quantiles at FALSE_ALARM for the two statistics of `law_statistics`."""
    return float(chi2.isf(FALSE_ALARM, dim)), float(chi2.isf(FALSE_ALARM, dim * (dim + 1) // 2))


def law_rejected(x, mean, cov) -> bool:
    stat_mean, stat_cov = law_statistics(x, mean, cov)
    lim_mean, lim_cov = law_limits(x.shape[1])
    return stat_mean > lim_mean or stat_cov > lim_cov


def gaussian_kl(mean0, cov0, mean1, cov1) -> float:
    """KL(N(mean0, cov0) || N(mean1, cov1))."""
    inv1 = torch.linalg.inv(cov1)
    diff = mean1 - mean0
    d = len(mean0)
    return 0.5 * float(torch.trace(inv1 @ cov0) - d + diff @ inv1 @ diff + torch.logdet(cov1) - torch.logdet(cov0))
