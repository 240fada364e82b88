"""Injectable noise: one generator for the batch, or one per sample (k-diffusion#25, diffusers#4055).

With a list of generators, sample i's noise comes from generator i alone, so a
sample does not depend on the batch it was drawn in or the number of devices.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

GeneratorLike = Optional[Union[torch.Generator, Sequence[torch.Generator]]]


def check_generators(generator, batch: int) -> None:
    """Refuse anything but None, one torch.Generator, or a list/tuple of exactly `batch` torch.Generators."""
    if generator is None or isinstance(generator, torch.Generator):
        return
    if not isinstance(generator, (list, tuple)) or not all(isinstance(g, torch.Generator) for g in generator):
        raise ValueError(f"generator must be None, a torch.Generator or a list of torch.Generators (one per sample), "
                         f"got {type(generator).__name__}")
    if len(generator) != batch:
        raise ValueError(f"generator: got a list of {len(generator)} generators for a batch of {batch}; "
                         f"give exactly one per sample")


def randn_like(x: torch.Tensor, generator: GeneratorLike = None) -> torch.Tensor:
    return randn(x.shape, generator, dtype=x.dtype, device=x.device)


def randn(shape, generator: GeneratorLike = None, dtype=torch.float32, device=None) -> torch.Tensor:
    """Standard normal noise of `shape`; with a list of generators, one per leading index."""
    return _draw(torch.randn, shape, generator, dtype, device)


def uniform(shape, generator: GeneratorLike = None, dtype=torch.float64, device=None) -> torch.Tensor:
    """U[0, 1) noise of `shape` in `dtype`; with a list of generators, row i comes from generator i alone."""
    return _draw(torch.rand, shape, generator, dtype, device)


def _draw(fn, shape, generator: GeneratorLike, dtype, device) -> torch.Tensor:
    """fn(shape) from one generator (or the global one), or row i from generator i of a list."""
    shape = tuple(shape)
    if generator is None or isinstance(generator, torch.Generator):
        gen_device = generator.device if generator is not None else device
        return fn(shape, generator=generator, dtype=dtype, device=gen_device).to(device)
    if len(generator) != shape[0]:
        raise ValueError(f"got {len(generator)} generators for a batch of {shape[0]}")
    return torch.stack([fn(shape[1:], generator=g, dtype=dtype, device=g.device) for g in generator]).to(device)


def sample_generators(seed: int, indices: Sequence[int], device="cpu") -> list[torch.Generator]:
    """One generator per global sample index, seeded by (run seed, index) (EDM's per-sample seeds)."""
    gens = []
    for i in indices:
        g = torch.Generator(device=device)
        g.manual_seed((int(seed) * 1_000_003 + int(i)) % (2**63 - 1))
        gens.append(g)
    return gens
