"""Sequential Monte Carlo over populations of weighted particles: ESS, resampling, adaptive thresholds.

Particles come in populations laid out as [populations, particles] (log-weights float64). Resampling
draws ancestor indices within each population, so populations never exchange particles:

- systematic (Kitagawa 1996; Douc, Cappe & Moulines 2005, sec. 2.3): one uniform u per population,
  positions (u + j) / K, j = 0..K-1, read through the inverse of the weights' CDF;
- multinomial: K independent uniforms per population through the same inverse CDF.

Both are unbiased: the expected number of copies of particle i is K w_i. The effective sample size is
ESS = (sum_i w_i)^2 / sum_i w_i^2 (Kong, Liu & Wong 1994), between 1 and K; a population is resampled
when ESS < threshold * K, so threshold 1.0 resamples at every step whose weights are not all equal (the
FKC paper's official code resamples at every step), and equal weights are never resampled.
The uniforms come from the caller (`uniforms`), so a population's draws can come from its own generator.
"""

from __future__ import annotations

from typing import Optional

import torch

from .noise import GeneratorLike, uniform

RESAMPLING = ("systematic", "multinomial")


def normalized_weights(log_w: torch.Tensor) -> torch.Tensor:
    """Weights [P, K] summing to 1 in each population, from log-weights [P, K] (any constant offset)."""
    return torch.softmax(log_w.to(torch.float64), dim=-1)


def effective_sample_size(log_w: torch.Tensor) -> torch.Tensor:
    """ESS [P] = (sum w)^2 / sum w^2 per population of log-weights [P, K], computed stably in log space."""
    log_w = log_w.to(torch.float64)
    return torch.exp(2 * torch.logsumexp(log_w, -1) - torch.logsumexp(2 * log_w, -1))


def uniforms_needed(method: str, particles: int) -> int:
    """How many U[0, 1) draws one population's resampling takes: 1 (systematic) or K (multinomial)."""
    check_method(method)
    return 1 if method == "systematic" else particles


def check_method(method: str) -> None:
    if method not in RESAMPLING:
        raise ValueError(f"resampling {method!r} is not allowed; allowed: {', '.join(RESAMPLING)}")


def resample_indices(log_w: torch.Tensor, method: str, u: torch.Tensor) -> torch.Tensor:
    """Ancestor indices [P, K] (within each population) for log-weights [P, K].

    `u`: uniforms in [0, 1), [P, 1] for systematic, [P, K] for multinomial (see uniforms_needed).
    """
    check_method(method)
    w = normalized_weights(log_w)
    p, k = w.shape
    u = u.to(torch.float64).reshape(p, -1)
    if u.shape[1] != uniforms_needed(method, k):
        raise ValueError(f"{method} resampling of {k} particles needs {uniforms_needed(method, k)} uniforms per population, "
                         f"got {u.shape[1]}")
    if method == "systematic":
        positions = (u + torch.arange(k, dtype=torch.float64, device=u.device)) / k
    else:
        positions = u
    cdf = torch.cumsum(w, -1)
    cdf[:, -1] = 1.0  # rounding must not leave a position past the last bin
    idx = torch.searchsorted(cdf.to(positions.device), positions.contiguous(), right=True)
    return idx.clamp_(max=k - 1).to(log_w.device)


def draw_uniforms(method: str, populations: int, particles: int, generator: GeneratorLike = None) -> torch.Tensor:
    """Uniforms [P, n] for one resampling of every population.

    `generator`: None or one torch.Generator (all populations draw from it in turn), or a list with one
    generator per population (population p draws from generator p alone).
    """
    n = uniforms_needed(method, particles)
    return uniform((populations, n), generator, dtype=torch.float64)


def resample(log_w: torch.Tensor, method: str, threshold: float, u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ancestor indices [P, K], mask [P] of the populations resampled): populations with ESS < threshold * K
    draw new ancestors, the others keep theirs (identity)."""
    p, k = log_w.shape
    which = effective_sample_size(log_w) < float(threshold) * k
    idx = torch.arange(k, device=log_w.device).expand(p, k).clone()
    if bool(which.any()):
        idx[which] = resample_indices(log_w[which], method, u[which])
    return idx, which


def gather_particles(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Rows of x [P * K, ...] picked by within-population ancestor indices idx [P, K]."""
    p, k = idx.shape
    flat = (idx + k * torch.arange(p, device=idx.device).unsqueeze(1)).reshape(-1)
    return x[flat.to(x.device)]


def distinct_count(ancestors: torch.Tensor) -> torch.Tensor:
    """Number of distinct values in each row of an integer tensor [P, K]."""
    s, _ = torch.sort(ancestors, dim=-1)
    return 1 + (s[:, 1:] != s[:, :-1]).sum(-1)


def check_threshold(threshold: Optional[float]) -> float:
    value = float(threshold)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"ess_threshold={threshold!r} is not allowed; allowed: a number in (0, 1]")
    return value
