"""THE categorical draw of every masked-diffusion sampler: Gumbel-max in a chosen precision.

Zheng et al. (2024), Sec. 5: MDLM draws x ~ Cat(w) as argmax(w / E), E = -log u (the exponential
race, equal to argmax(log w + Gumbel)), with u uniform in float32. float32 uniforms lie on the grid
k 2^-24, so E >= 2^-24 (the Gumbel noise -log E is capped at about 16.6); for rows like
[1 - eps, eps p] (the T-step sampler with many steps) the rare tokens then become rarer, which
lowers the effective temperature (their Thm. 5.1 / Fig. 4). `reveal_law` gives that law in closed
form. `precision="float64"` (the default) puts the cap at 2^-53 (Gumbel 36.7), out of reach in practice.
"""

from __future__ import annotations

from typing import Optional

import torch

from ..noise import GeneratorLike, uniform

PRECISIONS = {"float64": torch.float64, "float32": torch.float32}


def precision_dtype(precision: str) -> torch.dtype:
    """The torch dtype of a precision name; anything else raises ValueError naming the allowed ones."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision {precision!r} is not allowed; allowed: {', '.join(PRECISIONS)}")
    return PRECISIONS[precision]


def exponential_from_uniform(u: torch.Tensor) -> torch.Tensor:
    """E = -log u ~ Exp(1), in u's dtype (its floor -log(1 - 2^-mantissa) is the point of the precision setting)."""
    return -torch.log(u)


def categorical_from_uniform(weights: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """argmax over the last axis of w / (-log u), in u's dtype; weights >= 0 need not be normalised.

    The exponential race is Gumbel-max with one logarithm per entry instead of three (no log w),
    and it is MDLM's own form of the draw, so float32 truncates exactly as MDLM does.
    """
    return (weights.to(u.dtype) / exponential_from_uniform(u)).argmax(dim=-1)


def reveal_law(p: torch.Tensor, eps, precision: str = "float64") -> torch.Tensor:
    """P(the draw over the row [1 - eps, eps p] returns token v), v = 1..V, for uniforms in `precision`.

    Closed form of the truncation (ours; it matches the exhaustive float32 enumeration to ~1e-7 TV in
    the tests): the uniforms lie on a grid of step d = 2^-24 (float32) or 2^-53 (float64), so near 0
    E = -log u takes the values j d and P(E_v < x) = d (ceil(x / d) - 1) instead of x. Averaged over the
    mask's E ~ Exp(1), token v wins with probability eps p_v f(r_v), f(r) = r / (e^r - 1),
    r_v = d (1 - eps) / (eps p_v), to first order in eps. f -> 1 for r << 1 (float64, or eps p_v >> d),
    and f ~ r e^-r for tokens with eps p_v below d: those are under-sampled, which lowers the entropy of
    the revealed token (Zheng et al. Sec. 5). `eps` may be a tensor broadcasting against p[..., :1].
    """
    d = torch.finfo(precision_dtype(precision)).eps / 2  # 2^-24 or 2^-53: the spacing of the uniforms
    p = p.to(torch.float64)
    eps = torch.as_tensor(eps, dtype=torch.float64)
    r = d * (1 - eps) / (eps * p)
    f = torch.where(r > 0, r / torch.expm1(r), torch.ones_like(r)).nan_to_num(0.0)
    return eps * p * f


def sample_categorical(probs: torch.Tensor, generator: GeneratorLike = None, precision: str = "float64",
                       u: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One draw per row of `probs` (last axis = categories) by the exponential race in `precision`.

    `generator`: one torch.Generator, or a list with one per leading index (per-sample seeds);
    `u`: injected uniforms of probs' shape (then `generator` is unused).
    """
    dtype = precision_dtype(precision)
    if u is None:
        u = uniform(probs.shape, generator, dtype=dtype, device=probs.device)
    elif u.shape != probs.shape or u.dtype != dtype:
        raise ValueError(f"injected uniforms must have shape {tuple(probs.shape)} and dtype {dtype}, got {tuple(u.shape)} {u.dtype}")
    return categorical_from_uniform(probs, u)


def sample_without_replacement(weights: torch.Tensor, k: int, generator: GeneratorLike = None,
                               precision: str = "float64") -> torch.Tensor:
    """k distinct indices per row, drawn one after another with probability proportional to `weights`.

    Gumbel-top-k in race form: the k largest of w / (-log u), the same noise as `sample_categorical`,
    so k = 1 returns exactly what `sample_categorical` returns for the same generator state.
    """
    dtype = precision_dtype(precision)
    u = uniform(weights.shape, generator, dtype=dtype, device=weights.device)
    keys = weights.to(dtype) / exponential_from_uniform(u)
    if k == 1:
        return keys.argmax(dim=-1, keepdim=True)
    return keys.topk(k, dim=-1).indices


def uniform_rows(shape, owners: torch.Tensor, generator: GeneratorLike = None, dtype: torch.dtype = torch.float64,
                 device=None) -> torch.Tensor:
    """U[0, 1) noise for a ragged set of rows [N, ...] where row j belongs to sample owners[j] (sorted).

    With a list of generators, sample b's rows come from generator b alone, so a sample's draws do
    not depend on the other samples in the batch; otherwise one generator fills every row.
    """
    if generator is None or isinstance(generator, torch.Generator):
        return uniform(shape, generator, dtype=dtype, device=device)
    owners = owners.cpu()
    if len(owners) and (owners[1:] < owners[:-1]).any():
        raise ValueError("uniform_rows needs rows sorted by owner")
    ids, counts = torch.unique_consecutive(owners, return_counts=True)
    parts = [uniform((int(c), *shape[1:]), generator[int(b)], dtype=dtype, device=device) for b, c in zip(ids, counts)]
    return torch.cat(parts) if parts else torch.empty(tuple(shape), dtype=dtype, device=device)
