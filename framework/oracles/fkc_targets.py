"""Exact targets of the Feynman-Kac correctors on Gaussian mixtures, and distances between sample sets.

- The noised mixture q_t is a mixture (alpha mu_k, alpha^2 Sigma_k + sigma^2 I) (`noised`).
- A product of two mixtures is a mixture in closed form: N(m_i, C_i) N(m_j, C_j) = z_ij N(m, C) with
  C = (C_i^-1 + C_j^-1)^-1, m = C (C_i^-1 m_i + C_j^-1 m_j), z_ij = N(m_i; m_j, C_i + C_j) (`product`).
- An annealed 1-D mixture p^beta, or a geometric average q_u^(1-w) q_c^w, has no closed form; `GeometricGrid`
  tabulates it on a fine grid (its masses by quadrature, exact draws by the inverse CDF).
- `energy_distance` (Szekely & Rizzo 2013) compares sample sets; its value between two exact sets of
  the same sizes is the Monte Carlo floor.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..diffusion.denoiser import Denoiser
from ..diffusion.schedules import VPSchedule
from .gaussian_mixture import GaussianMixture


def noised(mixture: GaussianMixture, schedule: VPSchedule, t: float) -> GaussianMixture:
    """The marginal q_t of x_t = alpha_t x_0 + sigma_t eps with x_0 ~ mixture, as a GaussianMixture."""
    tt = torch.tensor(float(t), dtype=torch.float64)
    alpha, sigma = float(schedule.alpha(tt)), float(schedule.sigma(tt))
    eye = torch.eye(mixture.dim, dtype=torch.float64)
    return GaussianMixture(mixture.weights, alpha * mixture.means, alpha**2 * mixture.covs + sigma**2 * eye)


def product(a: GaussianMixture, b: GaussianMixture) -> GaussianMixture:
    """The normalised product a(x) b(x), a mixture of len(a) * len(b) components (closed form above)."""
    ci, cj = a.covs.unsqueeze(1), b.covs.unsqueeze(0)  # [I, 1, D, D], [1, J, D, D]
    mi, mj = a.means.unsqueeze(1), b.means.unsqueeze(0)
    pi, pj = torch.linalg.inv(ci), torch.linalg.inv(cj)
    cov = torch.linalg.inv(pi + pj)
    mean = (cov @ ((pi @ mi.unsqueeze(-1)) + (pj @ mj.unsqueeze(-1)))).squeeze(-1)
    s = ci + cj
    diff = (mi - mj).unsqueeze(-1)
    log_z = (-0.5 * (diff.transpose(-1, -2) @ torch.linalg.solve(s, diff)).squeeze(-1).squeeze(-1)
             - 0.5 * torch.logdet(s) - 0.5 * a.dim * math.log(2 * math.pi))
    log_w = torch.log(a.weights).unsqueeze(1) + torch.log(b.weights).unsqueeze(0) + log_z
    d = a.dim
    return GaussianMixture(torch.softmax(log_w.reshape(-1), 0), mean.reshape(-1, d), cov.reshape(-1, d, d))


def mass_above(mixture: GaussianMixture, coord: int = 0, threshold: float = 0.0) -> float:
    """P(x[coord] > threshold) under the mixture, exactly (a sum of normal tails)."""
    m, sd = mixture.means[:, coord], torch.sqrt(mixture.covs[:, coord, coord])
    tail = 0.5 * torch.erfc((threshold - m) / (sd * math.sqrt(2)))
    return float((mixture.weights * tail).sum())


class GeometricGrid:
    """prod_i p_i^e_i / Z of 1-D mixtures p_i (p^beta: [(p, beta)]; q_u^(1-w) q_c^w: [(q_u, 1 - w), (q_c, w)]),
    tabulated on `points` grid points over [lo, hi] (mass outside ~0): masses by quadrature, draws by inverse CDF."""

    def __init__(self, factors, lo: float = -10.0, hi: float = 10.0, points: int = 200_001):
        if any(m.dim != 1 for m, _ in factors):
            raise ValueError("GeometricGrid needs 1-D mixtures")
        self.x = torch.linspace(lo, hi, points, dtype=torch.float64)
        log_p = sum(e * torch.logsumexp(m._component_log_probs(self.x.unsqueeze(1), 1.0, 0.0), -1) for m, e in factors)
        p = torch.exp(log_p - log_p.max())
        self.cdf = torch.cumsum(p, 0) / p.sum()

    def mass_above(self, threshold: float = 0.0) -> float:
        return float(1.0 - self.cdf[torch.searchsorted(self.x, torch.tensor(threshold, dtype=torch.float64))])

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """n exact draws [n, 1] (inverse CDF, linear within a grid cell)."""
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        i = torch.searchsorted(self.cdf, u).clamp(1, len(self.x) - 1)
        c0, c1 = self.cdf[i - 1], self.cdf[i]
        frac = ((u - c0) / (c1 - c0).clamp_min(1e-300)).clamp(0, 1)
        return (self.x[i - 1] + frac * (self.x[i] - self.x[i - 1])).unsqueeze(1)


def energy_distance(a: torch.Tensor, b: torch.Tensor, b_self: Optional[float] = None) -> float:
    """2 E|X - Y| - E|X - X'| - E|Y - Y'| between the rows of a and b (V-statistic, 0 iff equal laws).

    `b_self`: E|Y - Y'| of b when already known (`self_distance(b)`), for many a against one b."""
    a, b = a.to(torch.float64).flatten(1), b.to(torch.float64).flatten(1)
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean()) - (self_distance(b) if b_self is None else b_self)


def self_distance(b: torch.Tensor) -> float:
    """E|Y - Y'| over the rows of b (the V-statistic, pairs with themselves included)."""
    b = b.to(torch.float64).flatten(1)
    return float(torch.cdist(b, b).mean())


# --- the FKC test problems: 1-D mixtures whose targets the unweighted SDE gets measurably wrong --------------------

#: modes of unequal width: p^beta moves mass between them (1-D mode masses ~ w^beta sd^(1 - beta))
ANNEAL_MIXTURE = ([0.5, 0.5], [[-2.0], [2.0]], [[[0.04]], [[0.36]]])
#: product experts: q1 q2 puts ~26% of the mass at x > 0, the unweighted product SDE ~44%
EXPERTS = (([0.3, 0.7], [[-2.0], [2.0]], [[[0.1]], [[0.8]]]), ([0.7, 0.3], [[-2.0], [2.0]], [[[0.1]], [[0.8]]]))
#: guidance: unconditional and "class 0" mixtures; q_u^(1 - w) q_c^w is proper when var_c < w / (w - 1) var_u in
#: each mode; at w = 3 it puts ~31% of the mass at x > 0, guided sampling without weights ~49%
UNCONDITIONAL = ([0.5, 0.5], [[-2.0], [2.0]], [[[0.25]], [[0.25]]])
CONDITIONAL = ([0.5, 0.5], [[-2.0], [2.0]], [[[0.06]], [[0.32]]])


@dataclass
class FKCProblem:
    """A target for FKC with its exact law at t_min: the model(s) to pass to `sample`, the sampler options,
    P(x > 0) exactly, and exact draws."""

    name: str
    options: dict
    mass_above_zero: float
    draws: Callable[[int, torch.Generator], torch.Tensor]
    models: Callable[[int], object]  # batch size -> the model(s) (a guided Denoiser needs the batch's labels)


def class_model(schedule: VPSchedule):
    """model(x, t, labels): label 0 -> the conditional mixture's exact eps, label 1 (the null label) -> the unconditional's."""
    cond, free = GaussianMixture(*CONDITIONAL).eps_model(schedule), GaussianMixture(*UNCONDITIONAL).eps_model(schedule)

    def model(x, t, labels):
        return torch.where((labels == 0).reshape(-1, 1), cond(x, t), free(x, t))

    return model


def fkc_problems(schedule: VPSchedule) -> dict[str, FKCProblem]:
    """anneal (beta 2 and 0.5), product and cfg (w = 3) on the mixtures above, exact at t_min of `schedule`."""
    t = schedule.t_min
    mix = GaussianMixture(*ANNEAL_MIXTURE)
    a, b = (GaussianMixture(*e) for e in EXPERTS)
    u, c = GaussianMixture(*UNCONDITIONAL), GaussianMixture(*CONDITIONAL)
    prod = product(noised(a, schedule, t), noised(b, schedule, t))
    problems = {}
    for beta in (2.0, 0.5):
        grid = GeometricGrid([(noised(mix, schedule, t), beta)])
        problems[f"anneal_beta{beta:g}"] = FKCProblem(f"anneal_beta{beta:g}", {"beta": beta}, grid.mass_above(),
                                                      grid.sample, lambda n: mix.eps_model(schedule))
    problems["product"] = FKCProblem("product", {"target": "product"}, mass_above(prod), prod.sample,
                                     lambda n: (a.eps_model(schedule), b.eps_model(schedule)))
    w = 3.0
    grid = GeometricGrid([(noised(u, schedule, t), 1 - w), (noised(c, schedule, t), w)])
    problems["cfg_w3"] = FKCProblem(
        "cfg_w3", {"target": "cfg"}, grid.mass_above(), grid.sample,
        lambda n: Denoiser(class_model(schedule), schedule, labels=torch.zeros(n, dtype=torch.long),
                           guidance_scale=w, uncond_label=1))
    return problems
