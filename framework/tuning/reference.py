"""The many-step reference solution of one model from given noises, computed once and cached.

FID on small images saturates at 10-20 NFE; the distance of a sampler's output to the solution of
the same model's probability-flow ODE from the same x_T does not. That reference is a high-order
solver at many steps: DPM-Solver++ 3M at 200 NFE on the quadratic time grid by default. On the digits
model (DDPM's discrete schedule, whose lambda(t) has a kink at every DDPM step) it is 2.7e-4 (mean
relative error) from a 400-NFE log-SNR solution, ~20x below the best sampler at NFE 20; the same solver
on the uniform time grid converges slowly there (3e-3 at 100 NFE, 1e-3 at 400). It is a function of (weights, schedule, parameterisation,
noises, reference solver), so it is cached on disk under the hash of all of these: the evaluation
after training, `sample.py --evaluate` and the tuning of DC ratios or solver schedules on the same
checkpoint and noises share it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from ..diffusion.denoiser import Denoiser
from ..diffusion.schedules import VPSchedule
from ..io import atomic_torch_save
from ..samplers import build_from_config
from ..samplers.generate import generate_samples

DEFAULT_SOLVER = {"name": "dpmsolver++", "order": 3, "grid": "time_quadratic"}


@dataclass(frozen=True)
class ReferenceSolver:
    """Which solver, at how many NFE, gives the reference; `cache_dir` None keeps it in memory only."""

    sampler: dict = field(default_factory=lambda: dict(DEFAULT_SOLVER))
    nfe: int = 200
    cache_dir: Optional[str] = "runs/cache/reference"

    def build(self):
        """The reference sampler, ending at t_min without the final denoising (both ends are kept, see Reference)."""
        return build_from_config({**self.sampler, "final_denoise": False})


@dataclass
class Reference:
    """The reference solution of some samples: `x` = x(t_min) of the ODE, `x0` = the model's denoised x0 at t_min."""

    indices: list[int]
    x: torch.Tensor
    x0: torch.Tensor
    key: str

    def target_for(self, sampler) -> torch.Tensor:
        """The end point a sampler's output approximates: x0 for samplers with final_denoise, else x(t_min)."""
        return self.x0 if sampler.options.get("final_denoise") else self.x


def state_hash(network) -> Optional[str]:
    """SHA-256 of a network's parameters and buffers (names, dtypes, values); None for a callable without state_dict."""
    if not isinstance(network, torch.nn.Module):
        return None
    h = hashlib.sha256()
    for name, value in network.state_dict().items():
        h.update(name.encode())
        h.update(str(value.dtype).encode())
        h.update(value.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def reference_key(network, schedule: VPSchedule, prediction: str, solver: ReferenceSolver, seed: int,
                  indices: Sequence[int], shape: Sequence[int], dtype: torch.dtype, guidance: dict) -> str:
    """What the reference depends on, hashed: the same key means the same reference ('' when the weights cannot be hashed)."""
    weights = state_hash(network)
    if weights is None:
        return ""
    spec = {"weights": weights, "schedule": schedule.to_config(), "prediction": prediction,
            "solver": solver.sampler, "nfe": solver.nfe, "seed": int(seed), "indices": [int(i) for i in indices],
            "shape": list(shape), "dtype": str(dtype), "guidance": guidance}
    return _hash_spec(spec)


def _hash_spec(spec: dict) -> str:
    """The cache key of a JSON-able description of what a cached result depends on."""
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]


def _cache_path(solver: ReferenceSolver, kind: str, key: str) -> Optional[Path]:
    """Where a cached result of `kind` lives (None: the solver keeps nothing on disk, or the key is empty)."""
    return None if solver.cache_dir is None or not key else Path(solver.cache_dir) / f"{kind}_{key}.pt"


@torch.no_grad()
def reference_solution(network: Callable, schedule: VPSchedule, indices: Sequence[int], seed: int, shape: Sequence[int],
                       solver: ReferenceSolver = ReferenceSolver(), prediction: str = "eps", batch_size: int = 256,
                       device="cpu", dtype=torch.float32, labels: Optional[torch.Tensor] = None,
                       guidance_scale: float = 1.0, uncond_label: Optional[int] = None) -> Reference:
    """The reference for the samples with these global indices (x_T from the generators seeded by (seed, i), as
    every evaluated sampler draws it; `labels` one per index for class-conditional models), cached when possible."""
    indices = [int(i) for i in indices]
    guidance = {"labels": None if labels is None else [int(v) for v in labels], "scale": float(guidance_scale),
                "uncond_label": uncond_label}
    key = reference_key(network, schedule, prediction, solver, seed, indices, shape, dtype, guidance)
    path = _cache_path(solver, "reference", key)
    if path is not None and path.is_file():
        cached = torch.load(path, map_location="cpu", weights_only=True)
        return Reference(indices, cached["x"], cached["x0"], key)
    x, _ = generate_samples(network, schedule, solver.build(), solver.nfe, indices, seed, shape, batch_size=batch_size,
                            device=device, dtype=dtype, prediction=prediction, labels=labels,
                            guidance_scale=guidance_scale, uncond_label=uncond_label)
    t_min = torch.tensor(schedule.t_min, dtype=torch.float64)
    x0 = []
    for start in range(0, len(x), batch_size):
        chunk_labels = None if labels is None else labels[start: start + batch_size].to(device)
        den = Denoiser(network, schedule, prediction, chunk_labels, guidance_scale, uncond_label)
        x0.append(den.x0(x[start: start + batch_size].to(device), t_min).cpu())
    x0 = torch.cat(x0) if x0 else x.clone()
    if path is not None:
        atomic_torch_save(path, {"x": x, "x0": x0})
    return Reference(indices, x, x0, key)


# --- the reference trajectory at a coarse grid's times (the DC ratio search) ----------------------------


def fine_grid(grid: torch.Tensor, nfe: int) -> tuple[torch.Tensor, int]:
    """Each interval of `grid` cut into m = ceil(nfe / steps) equal pieces in t: (the fine grid, m). The
    coarse grid's times are exactly every m-th fine time, so a solver on it passes through all of them."""
    steps = len(grid) - 1
    m = max(1, -(-int(nfe) // steps))
    pieces = [grid[i] + (grid[i + 1] - grid[i]) * torch.arange(m, dtype=torch.float64) / m for i in range(steps)]
    return torch.cat([*pieces, grid[-1:]]), m


def trajectory_key(denoiser: Denoiser, solver: ReferenceSolver, x_T: torch.Tensor, grid: torch.Tensor) -> str:
    """What a reference trajectory depends on, hashed ('' when the network's weights cannot be hashed)."""
    weights = state_hash(denoiser.model)
    if weights is None:
        return ""
    labels = denoiser.labels
    spec = {"weights": weights, "schedule": denoiser.schedule.to_config(), "prediction": denoiser.prediction,
            "solver": solver.sampler, "nfe": solver.nfe, "grid": [float(t) for t in grid],
            "x_T": hashlib.sha256(x_T.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest(),
            "shape": list(x_T.shape), "dtype": str(x_T.dtype),
            "guidance": {"labels": None if labels is None else [int(v) for v in labels.reshape(-1)],
                         "scale": denoiser.guidance_scale, "uncond_label": denoiser.uncond_label}}
    return _hash_spec(spec)


@torch.no_grad()
def reference_trajectory(denoiser: Denoiser, x_T: torch.Tensor, grid: torch.Tensor,
                         solver: ReferenceSolver = ReferenceSolver()) -> torch.Tensor:
    """The reference solution from x_T through every time of `grid`: [len(grid), *x_T.shape], [0] = x_T.

    The reference solver runs on `fine_grid(grid, solver.nfe)` (at least solver.nfe evaluations) and its
    states are read at the coarse times; cached under solver.cache_dir by trajectory_key when the
    denoiser's network is a torch module.
    """
    key = trajectory_key(denoiser, solver, x_T, grid)
    path = _cache_path(solver, "trajectory", key)
    if path is not None and path.is_file():
        return torch.load(path, map_location="cpu", weights_only=True)["states"].to(x_T.device)
    fine, m = fine_grid(grid.to(torch.float64).cpu(), solver.nfe)
    states = [x_T]

    def keep(step: dict) -> None:
        if (step["i"] + 1) % m == 0:
            states.append(step["x"])

    solver.build().sample(denoiser, x_T, None, denoiser.schedule, callback=keep, timesteps=fine.to(x_T.device))
    states = torch.stack(states)
    if path is not None:
        atomic_torch_save(path, {"states": states.cpu()})
    return states
