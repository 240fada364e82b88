"""Generate samples with per-sample seeds, independent of batch size and number of devices.

Sample i always starts from, and draws its sampler noise from, a generator seeded by
(seed, i) (EDM's generate.py convention); a rank generates only its share of indices.
Images go through `generate_samples`, token sequences through `generate_tokens`.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

import torch

from ..diffusion.denoiser import Denoiser
from ..diffusion.schedules import VPSchedule
from .masked.base import MaskedDenoiser
from .noise import randn, sample_generators


def shard_indices(num_samples: int, rank: int = 0, world_size: int = 1) -> list[int]:
    """The global sample indices rank `rank` of `world_size` generates (strided, so shards differ by at most 1)."""
    return list(range(rank, num_samples, world_size))


@torch.no_grad()
def generate_samples(
    network: Callable,
    schedule: VPSchedule,
    sampler,
    nfe: Optional[int],
    indices: Sequence[int],
    seed: int,
    shape: Sequence[int],
    batch_size: int = 256,
    device="cpu",
    dtype=torch.float32,
    prediction: str = "eps",
    labels: Optional[torch.Tensor] = None,
    guidance_scale: float = 1.0,
    uncond_label: Optional[int] = None,
    timesteps: Optional[torch.Tensor] = None,
    progress: bool = False,
) -> tuple[torch.Tensor, dict]:
    """Samples for the given global indices, in index order, and stats {'nfe', 'seconds'}.

    `labels`: one class label per index (same order) for conditional models, or None. `network`: one
    network, or a tuple of networks on the same schedule for a sampler that combines models (FKC's
    product); a sampler over populations (`population` > 1) needs `batch_size` to be a multiple of it, so
    that a population is always the same consecutive indices.
    """
    indices = list(indices)
    networks = network if isinstance(network, tuple) else (network,)
    population = getattr(sampler, "population", 1)
    if batch_size % population:
        raise ValueError(f"batch_size={batch_size} must be a multiple of the sampler's population of {population} "
                         f"samples (num_particles), so that a population does not depend on the batch")
    outs, seconds, nfe_used = [], 0.0, 0
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        gens = sample_generators(seed, chunk, device="cpu")
        x_T = randn((len(chunk), *shape), gens, dtype=dtype).to(device)
        chunk_labels = None if labels is None else labels[start : start + len(chunk)].to(device)
        dens = [Denoiser(net, schedule, prediction=prediction, labels=chunk_labels, guidance_scale=guidance_scale,
                         uncond_label=uncond_label) for net in networks]
        t0 = time.perf_counter()
        x = sampler.sample(dens[0] if len(dens) == 1 else tuple(dens), x_T, nfe, schedule, generator=gens,
                           progress=progress, timesteps=timesteps)
        seconds += time.perf_counter() - t0
        nfe_used = sum(d.nfe for d in dens)
        outs.append(x.cpu())
    samples = torch.cat(outs) if outs else torch.empty(0, *shape)
    return samples, {"nfe": nfe_used, "seconds": seconds}


@torch.no_grad()
def generate_tokens(net, sampler, nfe: Optional[int], indices: Sequence[int], seed: int, length: int, mask_id: int,
                    schedule=None, batch_size: int = 64, device="cpu") -> tuple[torch.Tensor, dict]:
    """Fill all-mask sequences for the given global sample indices; return tokens [N, length] and stats.

    NFE is reported per sample as the number of sequence evaluations divided by the number of
    samples (a batched call of b rows counts b), next to the batched network calls and the wall time.
    """
    indices = list(indices)
    den = MaskedDenoiser(net, mask_id)
    outs, start = [], time.perf_counter()
    for i in range(0, len(indices), batch_size):
        idx = indices[i: i + batch_size]
        x_T = torch.full((len(idx), length), mask_id, dtype=torch.long, device=device)
        outs.append(sampler.sample(den, x_T, nfe, schedule, generator=sample_generators(seed, idx, device)).cpu())
    seconds = time.perf_counter() - start
    n = max(len(indices), 1)
    tokens = torch.cat(outs) if outs else torch.empty(0, length, dtype=torch.long)
    return tokens, {"nfe_per_sample": den.rows / n, "network_calls": den.calls, "seconds": seconds,
                    "seconds_per_sample": seconds / n, "num_samples": len(indices)}
