"""Generate samples with per-sample seeds, independent of batch size and number of devices.

Sample i always starts from, and draws its sampler noise from, a generator seeded by
(seed, i) (EDM's generate.py convention); a rank generates only its share of indices.
"""

from __future__ import annotations

import time
from typing import Callable, Optional, Sequence

import torch

from .diffusion.denoiser import Denoiser
from .diffusion.schedules import VPSchedule
from .samplers.noise import randn, sample_generators


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

    `labels`: one class label per index (same order) for conditional models, or None.
    """
    indices = list(indices)
    outs, seconds, nfe_used = [], 0.0, 0
    for start in range(0, len(indices), batch_size):
        chunk = indices[start : start + batch_size]
        gens = sample_generators(seed, chunk, device="cpu")
        x_T = randn((len(chunk), *shape), gens, dtype=dtype).to(device)
        chunk_labels = None if labels is None else labels[start : start + len(chunk)].to(device)
        den = Denoiser(network, schedule, prediction=prediction, labels=chunk_labels,
                       guidance_scale=guidance_scale, uncond_label=uncond_label)
        t0 = time.perf_counter()
        x = sampler.sample(den, x_T, nfe, schedule, generator=gens, progress=progress, timesteps=timesteps)
        seconds += time.perf_counter() - t0
        nfe_used = den.nfe
        outs.append(x.cpu())
    samples = torch.cat(outs) if outs else torch.empty(0, *shape)
    return samples, {"nfe": nfe_used, "seconds": seconds}
