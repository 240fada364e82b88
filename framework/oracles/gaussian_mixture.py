"""A Gaussian mixture with full covariances: an exact denoiser and its exact probability-flow ODE.

Under x_t = alpha_t x_0 + sigma_t eps the marginal stays a mixture,
p_t = sum_k w_k N(alpha_t mu_k, alpha_t^2 Sigma_k + sigma_t^2 I), so the optimal noise
prediction eps*(x, t) = -sigma_t grad log p_t(x) is analytic. Solvers are tested
against the ODE it defines, solved to near machine precision.
"""

from __future__ import annotations

import math
from typing import Optional

import torch

from datamodules.mixture import MixtureOfGaussians

from ..diffusion.schedules import VPSchedule


class GaussianMixture(MixtureOfGaussians):
    """The mixture with its exact quantities under a VP schedule: noised score, noise prediction, ODE solution."""

    # --- exact quantities ----------------------------------------------------------
    def _component_log_probs(self, x, alpha, sigma):
        cov = alpha**2 * self.covs + sigma**2 * torch.eye(self.dim, dtype=torch.float64)
        chol = torch.linalg.cholesky(cov)
        diff = x.unsqueeze(1) - alpha * self.means  # [N, K, D]
        sol = torch.linalg.solve_triangular(chol, diff.unsqueeze(-1), upper=False).squeeze(-1)
        logdet = 2 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        return torch.log(self.weights) - 0.5 * (sol**2).sum(-1) - 0.5 * logdet - 0.5 * self.dim * math.log(2 * math.pi)

    def score(self, x: torch.Tensor, alpha, sigma) -> torch.Tensor:
        """grad_x log p_t(x), exactly."""
        x = x.to(torch.float64)
        cov = alpha**2 * self.covs + sigma**2 * torch.eye(self.dim, dtype=torch.float64)
        resp = torch.softmax(self._component_log_probs(x, alpha, sigma), dim=-1)  # [N, K]
        diff = x.unsqueeze(1) - alpha * self.means
        comp_score = -torch.linalg.solve(cov, diff.unsqueeze(-1)).squeeze(-1)  # [N, K, D]
        return (resp.unsqueeze(-1) * comp_score).sum(1)

    def eps_model(self, schedule: VPSchedule):
        """The exact noise-prediction model eps*(x, t) = -sigma_t score_t(x), for x [N, D] and t [N] or scalar."""

        def model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            t = torch.as_tensor(t, dtype=torch.float64).flatten()
            if len(t) > 1 and not bool((t == t[0]).all()):
                return torch.stack([model(x[i : i + 1], t[i]) [0] for i in range(len(x))])
            tt = t[0]
            alpha, sigma = float(schedule.alpha(tt)), float(schedule.sigma(tt))
            return (-sigma * self.score(x, alpha, sigma)).to(x.dtype)

        return model

    def ode_solution(self, x_T: torch.Tensor, schedule: VPSchedule, t_end: Optional[float] = None,
                     t_start: Optional[float] = None, rtol: float = 1e-11, atol: float = 1e-11) -> torch.Tensor:
        """Solve the probability-flow ODE from t_start (default t_max) to t_end (default t_min) to ~1e-10.

        Integrated in lambda on y = x / alpha, where dy/dlambda = -exp(-lambda) eps*(alpha y, t(lambda))
        (DPM-Solver eq. 3.4 written as an ODE), with scipy's DOP853.
        """
        from scipy.integrate import solve_ivp

        t_start = schedule.t_max if t_start is None else t_start
        t_end = schedule.t_min if t_end is None else t_end
        lam0 = float(schedule.log_snr(torch.tensor(t_start, dtype=torch.float64)))
        lam1 = float(schedule.log_snr(torch.tensor(t_end, dtype=torch.float64)))
        x_T = x_T.to(torch.float64)
        shape = x_T.shape
        model = self.eps_model(schedule)
        alpha0 = float(schedule.alpha(torch.tensor(t_start, dtype=torch.float64)))

        def rhs(lam, y):
            t = schedule.t_from_log_snr(torch.tensor(lam, dtype=torch.float64))
            alpha, sigma = float(schedule.alpha(t)), float(schedule.sigma(t))
            x = alpha * torch.from_numpy(y).reshape(shape)
            return (-(sigma / alpha) * model(x, t)).reshape(-1).numpy()

        sol = solve_ivp(rhs, (lam0, lam1), (x_T / alpha0).reshape(-1).numpy(), method="DOP853", rtol=rtol, atol=atol)
        if not sol.success:
            raise RuntimeError(f"reference ODE solve failed: {sol.message}")
        alpha1 = float(schedule.alpha(torch.tensor(t_end, dtype=torch.float64)))
        return alpha1 * torch.from_numpy(sol.y[:, -1]).reshape(shape)
