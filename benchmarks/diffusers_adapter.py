"""Drive diffusers' schedulers with the project's exact denoiser, for side-by-side accuracy numbers.

diffusers is optional: `available()` says whether it can be imported, and nothing here
imports it at module load. A diffusers model sees the integer DDPM step k; the project's
continuous time of that step is t = (k + 1) / N (framework.diffusion.DiscreteVPSchedule),
so the exact noise prediction is evaluated there. Every scheduler is configured to end
at t_min = 1 / N (alphas_cumprod[0]) like the project's samplers, and its NFE is the number
of model calls actually made (PNDM's pseudo Runge-Kutta warm start included).

Settings that make the end point and start point agree with the project's samplers:
- DDIM: set_alpha_to_one=False, clip_sample=False, timestep_spacing='trailing' (starts at k = N - 1);
- PNDM: set_alpha_to_one=False, timestep_spacing='trailing';
- DPM-Solver++ (multistep, singlestep), UniPC: final_sigmas_type='sigma_min';
- DEIS: ends at sigma_min by construction; the default 'linspace' spacing starts at k = N - 1.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field
from typing import Callable, Optional

import torch


@dataclass(frozen=True)
class DiffusersVariant:
    """One diffusers scheduler setting; `ours` names the project variant implementing the same method."""

    label: str
    scheduler: str
    config: dict = field(default_factory=dict)
    ours: Optional[str] = None
    min_steps: int = 1
    #: whether the project's sampler can be run on this scheduler's nominal grid (one eval per grid point)
    grid_comparable: bool = True


def _variants() -> list[DiffusersVariant]:
    v = [
        DiffusersVariant("ddim", "DDIMScheduler",
                         dict(set_alpha_to_one=False, clip_sample=False, timestep_spacing="trailing"), ours="ddim"),
        DiffusersVariant("pndm (PRK warm start)", "PNDMScheduler",
                         dict(skip_prk_steps=False, set_alpha_to_one=False, timestep_spacing="trailing"),
                         ours="pndm F-PNDM", min_steps=4),
        DiffusersVariant("pndm skip_prk (PLMS)", "PNDMScheduler",
                         dict(skip_prk_steps=True, set_alpha_to_one=False, timestep_spacing="trailing"),
                         ours=None, min_steps=2, grid_comparable=False),
    ]
    v += [DiffusersVariant(f"deis order {k}", "DEISMultistepScheduler", dict(solver_order=k), ours=f"deis tab{k - 1}")
          for k in (1, 2, 3)]
    v += [DiffusersVariant(f"dpm++ {k}M", "DPMSolverMultistepScheduler",
                           dict(solver_order=k, algorithm_type="dpmsolver++", final_sigmas_type="sigma_min"),
                           ours=f"dpm++ {k}M") for k in (2, 3)]
    v += [DiffusersVariant(f"dpm++ {k}S", "DPMSolverSinglestepScheduler",
                           dict(solver_order=k, algorithm_type="dpmsolver++", final_sigmas_type="sigma_min"),
                           ours=f"dpm++ {k}S", grid_comparable=False) for k in (2, 3)]
    v += [DiffusersVariant(f"unipc {b} order {k}", "UniPCMultistepScheduler",
                           dict(solver_type=b, solver_order=k, final_sigmas_type="sigma_min"),
                           ours=f"unipc {b} order {k}") for b in ("bh1", "bh2") for k in (2, 3)]
    return v


DIFFUSERS_VARIANTS: list[DiffusersVariant] = _variants()


def available() -> bool:
    """True when the optional diffusers package can be imported."""
    return importlib.util.find_spec("diffusers") is not None


def version() -> str:
    import diffusers

    return diffusers.__version__


def make_scheduler(variant: DiffusersVariant, num_train_timesteps: int = 1000):
    """A fresh scheduler for the DDPM linear schedule (1e-4..0.02) with the variant's settings."""
    import diffusers

    logging.getLogger("diffusers").setLevel(logging.ERROR)
    cls = getattr(diffusers, variant.scheduler)
    return cls(num_train_timesteps=num_train_timesteps, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
               **variant.config)


def steps_for_nfe(variant: DiffusersVariant, nfe: int, max_steps: int = 200) -> int:
    """The num_inference_steps whose run makes exactly `nfe` model calls; ValueError when none does."""
    scheduler = make_scheduler(variant)
    seen = []
    for steps in range(variant.min_steps, min(nfe, max_steps) + 1):
        scheduler.set_timesteps(steps)
        calls = len(scheduler.timesteps)
        seen.append(f"{steps}->{calls}")
        if calls == nfe:
            return steps
    raise ValueError(f"no num_inference_steps >= {variant.min_steps} makes exactly {nfe} calls "
                     f"(steps->calls: {', '.join(seen[:4])}{', ...' if len(seen) > 4 else ''})")


def sample(variant: DiffusersVariant, eps_model: Callable, x_T: torch.Tensor, steps: int) -> tuple[torch.Tensor, int]:
    """Run the scheduler loop from x_T with `steps` inference steps; return (x at t_min, model calls made)."""
    scheduler = make_scheduler(variant)
    scheduler.set_timesteps(steps)
    n_train = scheduler.config.num_train_timesteps
    x, calls = x_T * scheduler.init_noise_sigma, 0
    for k in scheduler.timesteps:
        t = torch.full((x.shape[0],), (int(k) + 1) / n_train, dtype=torch.float64)
        eps = eps_model(scheduler.scale_model_input(x, k), t)
        calls += 1
        x = scheduler.step(eps, k, x).prev_sample
    return x, calls


def nominal_grid(variant: DiffusersVariant, steps: int) -> torch.Tensor:
    """The scheduler's grid as project times: t = (k + 1) / N for its distinct main steps, then t_min.

    For PNDM this is its list of main steps (without the PRK half steps); a multistep scheduler's
    own timesteps otherwise. Only meaningful when `variant.grid_comparable`.
    """
    scheduler = make_scheduler(variant)
    scheduler.set_timesteps(steps)
    n_train = scheduler.config.num_train_timesteps
    if variant.scheduler == "PNDMScheduler":
        ks = sorted({int(k) for k in scheduler._timesteps}, reverse=True)
    else:
        ks = [int(k) for k in scheduler.timesteps]
    t = [(k + 1) / n_train for k in ks]
    if t[-1] > 1.0 / n_train:
        t.append(1.0 / n_train)
    return torch.tensor(t, dtype=torch.float64)
