"""The first-hitting sampler (FHS) of Zheng et al. (2024), Alg. 1, and its parallel variant.

With n tokens masked at time t, the next unmasking event happens at s with
1 - alpha_s = (1 - alpha_t) u^(1/n), u ~ U(0, 1) (Zheng et al. Eq. 8), one uniformly chosen masked
token is unmasked from p_theta(. | x_t), and nothing else happens in between: one network call per
token, exactly the law of the T-step sampler as T -> infinity. The parallel variant unmasks k tokens
per call (k uniformly chosen masked positions, each drawn from its own conditional); its event time
is the k-th largest of the n masked tokens' hitting times, 1 - alpha_s = (1 - alpha_t) prod_{i<k}
u_i^(1/(n-i)) (order statistics of uniforms). k = 1 is FHS. The model has no time input, so the
times only annotate the trajectory (callback); FHS's tokens do not depend on the schedule (unlike
the T-step sampler's, whose per-step reveal probabilities do).

NFE rules (`with_nfe`): fhs spends exactly L evaluations per sample (L - m with m prompt tokens), so
only nfe = L is allowed; fhs_parallel spends ceil(L / k), and an NFE budget sets k = ceil(L / nfe).
"""

from __future__ import annotations

import torch

from ..base import Option, positive_int, progress_bar
from ..registry import register
from .base import PRECISION_OPTION, MaskedDenoiser, MaskedSampler, ceil_div, split_generators
from ..noise import uniform
from .categorical import sample_categorical, sample_without_replacement


def next_event_log1m_alpha(log1m_alpha_t: torch.Tensor, n: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """log(1 - alpha_s) of the k-th next hitting time; u [R, k] uniforms, n [R] masked counts (entries i >= n unused)."""
    k = u.shape[1]
    remaining = n[:, None].to(torch.float64) - torch.arange(k, dtype=torch.float64, device=u.device)[None]
    terms = torch.where(remaining > 0, torch.log(u) / remaining.clamp_min(1.0), torch.zeros_like(u))
    return log1m_alpha_t + terms.sum(-1)


def first_hitting_solve(denoiser: MaskedDenoiser, x: torch.Tensor, schedule, k: int = 1, generator=None,
                        precision: str = "float64", callback=None, progress: bool = False) -> torch.Tensor:
    """Unmask k tokens per network call until no mask is left (Zheng et al. Alg. 1 for k = 1).

    `callback` gets dict(i, rows, t, s, positions, x) after every event: the batch rows that moved,
    their times before (t) and after (s) it, the positions chosen [R, k], and x.
    """
    mask = denoiser.mask_id
    log1m_alpha = torch.zeros(x.shape[0], dtype=torch.float64, device=x.device)  # t = 1: alpha = 0
    event = 0
    bar = progress_bar(ceil_div(int((x == mask).sum(-1).max()), k), progress, "fhs" if k == 1 else f"fhs_parallel(k={k})")
    while True:
        masked = x == mask
        n = masked.sum(-1)
        rows = (n > 0).nonzero().flatten()
        if len(rows) == 0:
            bar.close()
            return x
        gens = split_generators(generator, rows)
        probs = denoiser.probs(x[rows])
        kk = min(k, int(n[rows].max()))
        pos = sample_without_replacement(masked[rows].to(torch.float64), kk, gens, precision)  # [R, kk]
        chosen = masked[rows].gather(1, pos)  # False where a row had fewer than kk masks
        token_probs = probs.gather(1, pos[..., None].expand(-1, -1, probs.shape[-1]))
        tokens = sample_categorical(token_probs, gens, precision)
        current = x[rows].gather(1, pos)
        x[rows] = x[rows].scatter(1, pos, torch.where(chosen, tokens, current))
        u = uniform((len(rows), kk), gens, dtype=torch.float64, device=x.device)
        t = schedule.t_from_alpha(-torch.expm1(log1m_alpha[rows]))
        log1m_alpha[rows] = next_event_log1m_alpha(log1m_alpha[rows], n[rows], u)
        if callback is not None:
            s = schedule.t_from_alpha(-torch.expm1(log1m_alpha[rows]))
            callback({"i": event, "rows": rows, "t": t, "s": s, "positions": pos, "x": x})
        event += 1
        bar.update(1)


@register("fhs")
class FirstHittingSampler(MaskedSampler):
    """First-hitting sampler: one token per network call, exact for a perfect model."""

    OPTIONS = {"precision": PRECISION_OPTION}
    nfe_option = None
    nfe_rule = "nfe = L"

    def options_for_nfe(self, nfe, length):
        length = self.needs_length(length)
        if nfe != length:
            raise ValueError(f"sampler 'fhs' uses exactly L = {length} evaluations per sample; nfe={nfe} is not allowed; "
                             f"allowed: nfe={length} (fhs_parallel or mdlm_tstep spend fewer)")
        return {}

    def solve(self, denoiser, x, schedule, generator=None, callback=None, progress=False, timesteps=None):
        return first_hitting_solve(denoiser, x, schedule, 1, generator, self.options["precision"], callback, progress)


@register("fhs_parallel")
class ParallelFirstHittingSampler(MaskedSampler):
    """First-hitting sampler unmasking `k` tokens per network call (k = 1 is FHS)."""

    OPTIONS = {
        "k": Option(4, check=positive_int(), allowed="an integer >= 1", doc="tokens unmasked per network call"),
        "precision": PRECISION_OPTION,
    }
    nfe_option = "k"
    nfe_rule = "k = ceil(L / nfe)"

    def options_for_nfe(self, nfe, length):
        return {"k": ceil_div(self.needs_length(length), nfe)}

    def solve(self, denoiser, x, schedule, generator=None, callback=None, progress=False, timesteps=None):
        return first_hitting_solve(denoiser, x, schedule, self.options["k"], generator, self.options["precision"],
                                   callback, progress)
