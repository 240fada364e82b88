"""The per-NFE check the conformance test and the per-sampler option sweeps share."""

from typing import Iterable, Optional

import torch

from framework.diffusion import Denoiser


def assert_finite_and_honest(sampler, model, schedule, x_T: torch.Tensor, nfes: Iterable[int], label: str = "",
                             seed: Optional[int] = None) -> None:
    """At each NFE: exactly that many network evaluations, x_T's dtype and shape kept, every value finite.

    `seed`: a fresh generator seeded with it for every call (stochastic samplers), else none.
    """
    for nfe in nfes:
        den = Denoiser(model, schedule)
        generator = None if seed is None else torch.Generator().manual_seed(seed)
        out = sampler.sample(den, x_T, nfe, schedule, generator=generator)
        assert den.nfe == nfe, f"{label} used {den.nfe} evaluations for nfe={nfe}"
        assert out.dtype == x_T.dtype and out.shape == x_T.shape, f"{label} nfe={nfe}: {out.dtype} {tuple(out.shape)}"
        assert torch.isfinite(out).all(), f"{label} nfe={nfe} is not finite"
