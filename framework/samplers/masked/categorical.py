"""THE categorical draw of every masked-diffusion sampler: Gumbel-max in a chosen precision.

Zheng et al. (2024), Sec. 5: MDLM draws x ~ Cat(p) as argmax(p / E), E = -log u, with u uniform in
float32. float32 uniforms lie on the grid k 2^-24, so E >= 2^-24 and the Gumbel noise -log E is
truncated at about 16.6; for rows like [1 - eps, eps p] (the T-step sampler with many steps) the
rare tokens then become rarer, which lowers the effective temperature (their Thm. 5.1 / Fig. 4).
`precision="float64"` (the default) puts the truncation at about 36.7, out of reach in practice.
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


def gumbel_from_uniform(u: torch.Tensor) -> torch.Tensor:
    """Gumbel noise -log(-log u), computed in u's dtype (its truncation is the point of the precision setting)."""
    return -torch.log(-torch.log(u))


def categorical_from_uniform(probs: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """argmax over the last axis of log p + Gumbel(u), in u's dtype; probs need not be normalised."""
    return (torch.log(probs.to(u.dtype)) + gumbel_from_uniform(u)).argmax(dim=-1)


def sample_categorical(probs: torch.Tensor, generator: GeneratorLike = None, precision: str = "float64",
                       u: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One draw per row of `probs` (last axis = categories) by Gumbel-max in `precision`.

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

    Gumbel-top-k: the k largest of log w + Gumbel(u), the same noise as `sample_categorical`, so
    k = 1 returns exactly what `sample_categorical` returns for the same generator state.
    """
    dtype = precision_dtype(precision)
    u = uniform(weights.shape, generator, dtype=dtype, device=weights.device)
    keys = torch.log(weights.to(dtype)) + gumbel_from_uniform(u)
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
