"""The T-step ancestral sampler of MDLM, with the cache of unchanged denoiser calls.

From t to s < t every masked token independently stays masked with probability
(1 - alpha_s)/(1 - alpha_t) or becomes token v with probability (alpha_s - alpha_t)/(1 - alpha_t)
p_theta(v | x_t) (MDLM, Sahoo et al. 2024, Eq. 7; Zheng et al. 2024, Eq. 5). The draw is one
categorical over these V + 1 numbers, exactly as MDLM makes it, so the `precision` setting
reproduces the float32 truncation effect (Zheng et al. Sec. 5). Because the model has no time
input, p_theta(. | x_t) is re-used while a sequence does not change (MDLM's caching; Zheng et al.
Sec. 3.2), so a sequence costs at most min(T, its number of masked tokens) evaluations.
The grid runs from t_0 = 1 to t_T = 0, where alpha = 1 unmasks every remaining token (no argmax
"noise removal" step as in MDLM's code). Unlike FHS's, the tokens depend on the masking schedule:
alpha(t) on the grid sets how many tokens unmask together in a step.

NFE rule (`with_nfe`): a budget of nfe evaluations per sample sets steps = T = nfe.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..base import Option, _progress, positive_int
from ..registry import register
from .base import PRECISION_OPTION, MaskedDenoiser, MaskedSampler
from .categorical import precision_dtype, sample_categorical, uniform_rows


def uniform_time_grid(steps: int) -> torch.Tensor:
    """t_i = 1 - i / steps, i = 0..steps (float64)."""
    return torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64)


def validate_masked_grid(grid) -> torch.Tensor:
    grid = torch.as_tensor(grid, dtype=torch.float64).flatten()
    if len(grid) < 2 or not (grid[1:] < grid[:-1]).all() or grid[0] > 1.0 or grid[-1] != 0.0:
        raise ValueError("timesteps must be strictly decreasing from t_0 <= 1 to t_T = 0, with at least 2 points")
    return grid


def tstep_solve(denoiser: MaskedDenoiser, x: torch.Tensor, grid: torch.Tensor, schedule, generator=None,
                precision: str = "float64", callback=None, progress: bool = False) -> torch.Tensor:
    """Run the ancestral loop on an explicit grid; only sequences that changed are re-evaluated.

    `callback` gets dict(i, t, s, x) after every step from t = grid[i] to s = grid[i + 1].
    """
    mask, dtype = denoiser.mask_id, precision_dtype(precision)
    alphas = schedule.alpha(grid)
    cache: Optional[torch.Tensor] = None  # p_theta(. | x) in `dtype`, [B, L, V], valid where `fresh`
    fresh = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
    for i in _progress(len(grid) - 1, progress, "mdlm_tstep"):
        masked = x == mask
        active = masked.any(-1)
        if not active.any():
            break
        need = active & ~fresh
        if need.any():
            probs = denoiser.probs(x[need]).to(dtype)
            cache = probs.new_zeros(*x.shape, probs.shape[-1]) if cache is None else cache
            cache[need], fresh[need] = probs, True
        keep = float((1.0 - alphas[i + 1]) / (1.0 - alphas[i]))
        b, l = masked.nonzero(as_tuple=True)
        drawn = sample_categorical(_ancestral_rows(cache, b, l, keep), precision=precision,
                                   u=uniform_rows((len(b), cache.shape[-1] + 1), b, generator, dtype=dtype, device=x.device))
        x[b, l] = torch.where(drawn == cache.shape[-1], mask, drawn)
        fresh[b[drawn != cache.shape[-1]]] = False
        if callback is not None:
            callback({"i": i, "t": float(grid[i]), "s": float(grid[i + 1]), "x": x})
    return x


def _ancestral_rows(cache: torch.Tensor, b: torch.Tensor, l: torch.Tensor, keep: float) -> torch.Tensor:
    """The (V + 1)-way rows [(1 - keep) p_theta(. | x), keep] of the masked positions (b, l) (Eq. 7 of MDLM)."""
    v = cache.shape[-1]
    rows = torch.empty(len(b), v + 1, dtype=cache.dtype, device=cache.device)
    torch.mul(cache[b, l], 1.0 - keep, out=rows[:, :v])
    rows[:, v] = keep
    return rows


@register("mdlm_tstep")
class TStepSampler(MaskedSampler):
    """MDLM's T-step ancestral sampler with caching (`steps` = T, the grid uniform in t)."""

    OPTIONS = {
        "steps": Option(128, check=positive_int(), allowed="an integer >= 1", doc="number of time steps T"),
        "precision": PRECISION_OPTION,
    }
    nfe_option = "steps"
    nfe_rule = "steps = nfe"
    nfe_needs_length = False
    takes_timesteps = True

    def options_for_nfe(self, nfe, length):
        return {"steps": nfe}

    def solve(self, denoiser, x, schedule, generator=None, callback=None, progress=False, timesteps=None):
        if timesteps is None:
            grid = uniform_time_grid(self.options["steps"])
        else:
            grid = validate_masked_grid(timesteps)
            if "steps" in self.explicit and len(grid) - 1 != self.options["steps"]:
                raise ValueError(f"sampler 'mdlm_tstep': the timesteps given have {len(grid) - 1} steps, but "
                                 f"steps={self.options['steps']} (given, or set by nfe); give only one of them")
        return tstep_solve(denoiser, x, grid, schedule, generator, self.options["precision"], callback, progress)
