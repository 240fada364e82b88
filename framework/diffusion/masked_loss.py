"""The masked-diffusion ELBO in its two equivalent forms, with stratified sampling of t or n.

For x0 of length L and a time-free model p_theta(x0^l | x), the negative ELBO is
  time form  (Zheng et al. 2024 Eq. 4; MDLM Eq. 10):
      int_0^1 -alpha'(t) / (1 - alpha(t)) E_{x_t ~ q_t(.|x0)} [ sum_{l: x_t^l = m} -log p_theta(x0^l | x_t) ] dt,
      each token masked independently with probability 1 - alpha(t);
  count form (Zheng et al. Prop. 3.3, the "time-agnostic masked model" ELBO):
      sum_{n=1}^L (1/n) E_{x_n} [ sum_{l: x_n^l = m} -log p_theta(x0^l | x_n) ],
      x_n with exactly n masked positions chosen uniformly.
Substituting u = 1 - alpha(t) turns the time integral into the count sum (int C(L,n) u^(n-1)(1-u)^(L-n) du
= 1/n), so the two agree for every schedule with alpha(0) = 1, alpha(1) = 0. Single-sample estimators:
t ~ U(0, 1] with weight w(t); n ~ U{1..L} with weight L/n. Both are drawn stratified over the batch
(MDLM's antithetic/low-discrepancy sampler), which keeps them unbiased and lowers their variance.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F

from .masking import MaskingSchedule

LOSS_FORMS = ("time", "count")


def stratified_uniform(batch: int, generator: Optional[torch.Generator] = None, stratified: bool = True,
                       device=None) -> torch.Tensor:
    """batch draws of U(0, 1) (float64); stratified: (u0 + i / batch) mod 1, one shared offset u0."""
    if stratified:
        u0 = torch.rand((), generator=generator, dtype=torch.float64).to(device)
        return torch.remainder(u0 + torch.arange(batch, dtype=torch.float64, device=device) / batch, 1.0)
    return torch.rand(batch, generator=generator, dtype=torch.float64).to(device)


def sample_times(batch: int, generator=None, stratified: bool = True, t_min: float = 1e-5, device=None) -> torch.Tensor:
    """t in [t_min, 1] (float64): t = 0 has weight 1/(1 - alpha) = inf and nothing masked, so it is excluded."""
    return stratified_uniform(batch, generator, stratified, device).clamp_min(t_min)


def sample_counts(batch: int, length: int, generator=None, stratified: bool = True, device=None) -> torch.Tensor:
    """n in {1, ..., L} uniformly (long); stratified over the batch like the times."""
    u = stratified_uniform(batch, generator, stratified, device)
    return (u * length).floor().long().clamp(0, length - 1) + 1


def mask_at_times(shape, t: torch.Tensor, schedule: MaskingSchedule, generator=None) -> torch.Tensor:
    """Bernoulli(1 - alpha(t)) mask per token (bool [B, L])."""
    u = torch.rand(shape, generator=generator, dtype=torch.float64).to(t.device)
    return u < (1.0 - schedule.alpha(t))[:, None]


def mask_exactly(shape, n: torch.Tensor, generator=None) -> torch.Tensor:
    """A uniformly random set of exactly n[b] masked positions per row (bool [B, L])."""
    keys = torch.rand(shape, generator=generator, dtype=torch.float64).to(n.device)
    ranks = keys.argsort(dim=-1).argsort(dim=-1)
    return ranks < n[:, None]


def masked_token_nll(logits: torch.Tensor, x0: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """sum over masked positions of -log p_theta(x0^l | x) per sequence (float64 [B])."""
    nll = F.cross_entropy(logits.transpose(1, 2), x0, reduction="none")
    return (nll.to(torch.float64) * mask).sum(-1)


def time_weight(schedule: MaskingSchedule, t: torch.Tensor) -> torch.Tensor:
    """-alpha'(t) / (1 - alpha(t)), the time-form weight."""
    return schedule.weight(t)


def count_weight(n: torch.Tensor, length: int) -> torch.Tensor:
    """L / n: the count-form weight 1/n divided by the probability 1/L of drawing n."""
    return length / n.to(torch.float64)


def elbo_estimate(model: Callable[[torch.Tensor], torch.Tensor], x0: torch.Tensor, mask_id: int, form: str = "count",
                  schedule: Optional[MaskingSchedule] = None, generator=None, stratified: bool = True) -> torch.Tensor:
    """One-sample unbiased estimate of the negative ELBO per sequence (nats, float64 [B])."""
    batch, length = x0.shape
    if form == "time":
        if schedule is None:
            raise ValueError("loss form 'time' needs a masking schedule")
        t = sample_times(batch, generator, stratified, device=x0.device)
        mask, weight = mask_at_times(x0.shape, t, schedule, generator), time_weight(schedule, t)
    elif form == "count":
        n = sample_counts(batch, length, generator, stratified, device=x0.device)
        mask, weight = mask_exactly(x0.shape, n, generator), count_weight(n, length)
    else:
        raise ValueError(f"loss form {form!r} is not allowed; allowed: {', '.join(LOSS_FORMS)}")
    logits = model(torch.where(mask, torch.full_like(x0, mask_id), x0))
    return weight * masked_token_nll(logits, x0, mask)
