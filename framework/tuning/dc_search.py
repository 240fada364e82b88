"""The search of DC-Solver's compensation ratios (Zhao et al., ECCV 2024; official `search_dc`): step by step
along the trajectory of a few noises, each ratio fitted so that the state after its step lands on the ground truth.

For steps i = dc_order, ..., N - 1 in order (earlier steps lack the history and keep rho = 1), with the
previous ratios fixed at their searched values:

    rho_i = argmin_rho  MSE( x_{i+1}(rho), x*_{i+1} ),

where x_{i+1}(rho) is the state after step i with the newest output compensated by rho (for UniPC: the
predictor, the evaluation at the predicted point and the corrector, as the official `find_optim_ratio`; for
DPM-Solver++: the predictor step) and x*_{i+1} the many-step reference solution of the same model from the
same noises at t_{i+1} (framework.tuning.reference.reference_trajectory: 200-step DDIM by default, cached).
Each minimisation is AdamW (lr 0.1, 40 iterations, torch's default weight decay) from rho = 1, keeping the
last iterate, as the official code. The gradient runs through the network (the corrector's evaluation).
Nothing is random, so the same x_T gives the same ratios.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Optional

import torch

from ..diffusion.denoiser import as_denoiser
from ..diffusion.schedules import VPSchedule
from ..samplers.base import progress_bar
from ..samplers.dynamic_compensation import MultistepState, start_multistep
from .reference import ReferenceSolver, reference_trajectory

#: the ground truth of the official search: a 200-step DDIM solution from the same noises
DC_REFERENCE = ReferenceSolver({"name": "ddim"}, 200)
SEARCHABLE = ("dc_solver", "dpmsolver++")


@dataclass
class DCSearchResult:
    """The searched ratios (one per step), the loss of each searched step at rho = 1 and at the found rho,
    the search's wall time and, within it, the time spent on the reference trajectory (0 when cached)."""

    ratios: list[float]
    loss_before: list[Optional[float]] = field(default_factory=list)
    loss_after: list[Optional[float]] = field(default_factory=list)
    seconds: float = 0.0
    reference_seconds: float = 0.0


def check_searchable(sampler) -> None:
    """A built dc_solver or multistep dpmsolver++, else a ValueError naming what is allowed."""
    name = getattr(sampler, "name", type(sampler).__name__)
    if name not in SEARCHABLE or not hasattr(sampler, "dc_step"):
        raise ValueError(f"the DC ratio search needs a built sampler of {', '.join(SEARCHABLE)}, got {name!r}")
    if name == "dpmsolver++" and sampler.options["method"] != "multistep":
        raise ValueError("the DC ratio search on dpmsolver++ needs method='multistep', "
                         f"got method={sampler.options['method']!r}")


def _corrector_in_loss(sampler) -> Optional[bool]:
    """UniPC with its corrector: the loss is taken after the evaluation and UniC (None: the step's default);
    a predictor-only solver: after the predictor, without evaluating (False)."""
    return None if sampler.options.get("use_corrector", False) else False


def _step_loss(sampler, den, state: MultistepState, grid, ratio, target, evaluate) -> torch.Tensor:
    x_next = sampler.dc_step(den, state, grid, ratio, evaluate=evaluate).x
    return torch.mean((x_next.to(torch.float64) - target.to(torch.float64)) ** 2)


def optimise_ratio(sampler, den, state: MultistepState, grid, target: torch.Tensor, iterations: int, lr: float,
                   bar=None) -> tuple[float, float, float]:
    """(rho, loss at rho = 1, loss at rho) for one step: AdamW on the step's MSE to `target` from rho = 1."""
    evaluate = _corrector_in_loss(sampler)
    rho = torch.nn.Parameter(torch.ones((), dtype=torch.float64))
    optimiser = torch.optim.AdamW([rho], lr=lr)
    first = None
    for _ in range(iterations):
        optimiser.zero_grad()
        with torch.enable_grad():
            loss = _step_loss(sampler, den, state, grid, rho, target, evaluate)
            (grad,) = torch.autograd.grad(loss, [rho])
        first = float(loss) if first is None else first
        rho.grad = grad
        optimiser.step()
        if bar is not None:
            bar.update(1)
    value = float(rho.detach())
    with torch.no_grad():
        last = float(_step_loss(sampler, den, state, grid, value, target, evaluate))
    return value, first if first is not None else last, last


def search_dc(model, schedule: VPSchedule, sampler, nfe: Optional[int], x_T: torch.Tensor,
              reference: ReferenceSolver = DC_REFERENCE, iterations: int = 40, lr: float = 0.1,
              progress: bool = False, timesteps: Optional[torch.Tensor] = None) -> DCSearchResult:
    """search_dc_ratios with the per-step losses and the wall time (see the module doc)."""
    check_searchable(sampler)
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 1:
        raise ValueError(f"iterations must be a positive integer, got {iterations!r}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    start = time.perf_counter()
    den = as_denoiser(model, schedule)
    grid = sampler.timesteps(nfe, schedule, device=x_T.device) if timesteps is None else timesteps.to(x_T.device)
    truth = reference_trajectory(den, x_T, grid, reference)
    n, dc_order = len(grid) - 1, sampler.dc_order()
    result = DCSearchResult([], reference_seconds=time.perf_counter() - start)
    bar = progress_bar(max(0, n - dc_order) * iterations, progress, f"DC search {sampler.name} nfe={nfe}")
    with torch.no_grad():
        state = start_multistep(sampler, den, x_T, grid)
        for i in range(n):
            rho, before, after = 1.0, None, None
            if i >= dc_order:
                rho, before, after = optimise_ratio(sampler, den, state, grid, truth[i + 1], iterations, lr, bar)
            result.ratios.append(rho)
            result.loss_before.append(before)
            result.loss_after.append(after)
            state = sampler.dc_step(den, state, grid, rho)
    bar.close()
    result.seconds = time.perf_counter() - start
    return result


def search_dc_ratios(model, schedule: VPSchedule, sampler, nfe: Optional[int], x_T: torch.Tensor,
                     reference: ReferenceSolver = DC_REFERENCE, iterations: int = 40, lr: float = 0.1,
                     progress: bool = False, timesteps: Optional[torch.Tensor] = None) -> list[float]:
    """DC-Solver's compensation ratios of `sampler` (a built dc_solver or multistep dpmsolver++) at `nfe` for
    `model` (anything the samplers accept: a network predicting noise, or a Denoiser with its prediction,
    labels and guidance), fitted on the noises x_T (10 in the paper) to the reference solution; one ratio per
    step, 1 for the first dc_order steps (official `search_dc` / `find_optim_ratio`)."""
    return search_dc(model, schedule, sampler, nfe, x_T, reference, iterations, lr, progress, timesteps).ratios
