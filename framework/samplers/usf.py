"""USF, the unified sampling framework (Liu et al., ICLR 2024): one exponential-integrator solver driven by a schedule.

Every step i from t_i to t_{i+1} (h = lambda_{i+1} - lambda_i) Taylor-expands the chosen model output
(noise or data prediction) in lambda around t_i and integrates the expansion exactly (USF sec. 3; official uni_sampler `update`):

    x_{i+1} = linear_part x_i + output_scale [h phi_1 m_i + sum_{k=1}^{p-1} h^{k+1} phi_{k+1} r_k m^(k)],

with each derivative m^(k) estimated from earlier outputs by a difference system (official `get_diff_derivative`) and
the first one optionally relaxed by a factor r_1 = 1 + O(h) (`relax_derivative`). A corrector redoes the
step with the output at t_{i+1} available, and the first evaluation may be replaced by an analytical
x0 (the official `sample` loop). The schedule of decisions is plain data (framework.samplers.usf_schedule); the update is
the shared exponential-integrator core (exp_integrator.taylor_update_weights + exp_step), so DDIM,
DPM-Solver(++), UniPC and DEIS are schedules of this one loop (framework.tuning.usf_presets).
"""

from __future__ import annotations

from typing import Any, Optional

import torch

from .base import Option, Sampler, report_step
from .dpm_solver import multistep_orders
from .exp_integrator import exp_step, phi, schedule_coefs, taylor_update_weights
from .registry import register
from .usf_schedule import NEW_POINT, check_times, normalize_schedule, schedule_nfe

#: Taylor order of the schedule run when none is given (exact-weight multistep, lower orders at both ends)
DEFAULT_ORDER = 3


def relaxation_factor(derivative: dict, h: float, kind: str) -> float:
    """The factor on an estimated derivative: its relaxation (USF sec. 3; official relax_derivative) times its scale.

    With hh = -h (data prediction) or h (noise prediction): 'dpmsolver-2' and 'unipc-bh2' give
    hh (e^hh - 1) / (2 (e^hh - 1 - hh)), which turns the second-order Taylor step into DPM-Solver-2's
    (DPM-Solver++(2M)'s) update and UniPC's with B(h) = e^h - 1; 'unipc-bh1' gives hh^2 / (2 (e^hh - 1 - hh)),
    UniPC's with B(h) = h; 'linear' gives 1 + c h. Written with phi functions, stable as h -> 0.
    """
    hh = h if kind == "eps" else -h
    relaxation = derivative["relaxation"]
    if relaxation == "none":
        factor = 1.0
    elif relaxation == "linear":
        factor = 1.0 + derivative["coefficient"] * h
    elif relaxation in ("dpmsolver-2", "unipc-bh2"):
        factor = 0.5 * phi(1, hh) / phi(2, hh)
    elif relaxation == "unipc-bh1":
        factor = 0.5 / phi(2, hh)
    else:
        raise ValueError(f"relaxation={relaxation!r} is not allowed")
    return factor * derivative["scale"]


def default_steps(grid: torch.Tensor) -> list[dict]:
    """The schedule run without one: data prediction, exact-weight Taylor steps of order 3 from the nearest
    points, warming up from order 1 and lowering the last orders (DPM-Solver++ 3M with exact weights)."""
    orders = multistep_orders(len(grid) - 1, DEFAULT_ORDER, True)
    return normalize_schedule({"steps": [{"t_next": float(t), "order": p} for t, p in zip(grid[1:], orders)]})["steps"]


class _Point:
    """An evaluated grid point: its lambda and both model outputs (noise, data)."""

    __slots__ = ("lam", "eps", "x0")

    def __init__(self, lam: float, eps: torch.Tensor, x0: torch.Tensor):
        self.lam, self.eps, self.x0 = lam, eps, x0

    def output(self, kind: str) -> torch.Tensor:
        return self.eps if kind == "eps" else self.x0


def evaluate(denoiser, x: torch.Tensor, t, alpha: float, sigma: float, lam: float) -> _Point:
    """One network evaluation, kept as noise and data prediction (x0 = (x - sigma eps) / alpha)."""
    eps = denoiser.eps(x, t)
    return _Point(lam, eps, (x - sigma * eps) / alpha)


def analytical_point(x: torch.Tensor, x0: torch.Tensor, alpha: float, sigma: float, lam: float) -> _Point:
    """The analytical first step (USF sec. 3; official `afs`): a guessed x0 (zero or the data mean) in place of an evaluation."""
    x0 = x0.to(x.dtype).expand_as(x)
    return _Point(lam, (x - alpha * x0) / sigma, x0)


def taylor_step(x: torch.Tensor, points: dict[int, _Point], lam_t: float, coefs, kind: str, derivatives: list[dict]) -> torch.Tensor:
    """One USF update from the start point points[0] to lam_t (USF sec. 3) with the given derivative estimators.

    `points` maps offsets (0: the start, -j: j grid points back, +1: the new point) to evaluated points.
    """
    start = points[0]
    h = lam_t - start.lam
    estimators = [([points[p].lam for p in d["points"]], relaxation_factor(d, h, kind)) for d in derivatives]
    w_start, per_point = taylor_update_weights(start.lam, lam_t, kind, estimators)
    weights: dict[int, float] = {0: w_start}
    for d, ws in zip(derivatives, per_point):
        for p, w in zip(d["points"], ws):
            weights[p] = weights.get(p, 0.0) + w
    offsets = sorted(weights, reverse=True)
    return exp_step(x, [points[p].output(kind) for p in offsets], [weights[p] for p in offsets], coefs, kind)


def _schedule_ok(value: Any) -> bool:
    return value is None or isinstance(value, (str, list, tuple, dict))


def _mean_ok(value: Any) -> bool:
    return value is None or isinstance(value, (int, float, list)) and not isinstance(value, bool)


@register("usf")
class USF(Sampler):
    """USF (Liu et al. 2024): the exponential-integrator solver whose every step follows its schedule's decisions.

    `schedule`: a mapping, a list of per-step decisions, or the path of a JSON/YAML file
    (framework.samplers.usf_schedule); it fixes the time steps and the NFE. Without one, the sampler
    runs order-3 exact-weight Taylor steps (data prediction) on `grid` at any NFE. `data_mean`: the data
    mean (a number or a nested list of the sample shape) for the 'mean_x0' analytical first step (default:
    the schedule's own data_mean).
    """

    OPTIONS = {
        "schedule": Option(None, check=_schedule_ok, allowed="None, a schedule mapping, a list of steps or a file path",
                           doc="the solver schedule (decisions per step)"),
        "data_mean": Option(None, check=_mean_ok, allowed="None, a number or a nested list",
                            doc="x0 of the 'mean_x0' analytical first step"),
    }

    def check_options(self) -> None:
        spec = self.options["schedule"]
        self._schedule: Optional[dict] = None if spec is None else normalize_schedule(spec)
        if self._schedule is None:
            return
        if "grid" in self.explicit or "rho" in self.explicit:
            raise ValueError("sampler 'usf': options grid and rho apply only without a schedule (the schedule sets "
                             "the time steps)")
        if self._schedule["first_step"] == "mean_x0" and self._data_mean() is None:
            raise ValueError("sampler 'usf': the schedule's first_step='mean_x0' needs a data mean: the option "
                             "data_mean or the schedule's data_mean")

    def _data_mean(self):
        """The option data_mean, else the schedule's own."""
        if self.options["data_mean"] is not None:
            return self.options["data_mean"]
        return None if self._schedule is None else self._schedule.get("data_mean")

    @property
    def schedule(self) -> Optional[dict]:
        """The normalized schedule (None: the default one on `grid`)."""
        return self._schedule

    # --- NFE --------------------------------------------------------------------------------
    def steps_for_nfe(self, nfe: int) -> int:
        if self._schedule is None:
            return super().steps_for_nfe(nfe)
        expected = self.nfe_for_steps(len(self._schedule["steps"]))
        if nfe != expected:
            raise ValueError(f"sampler 'usf': nfe={nfe} is not allowed; allowed: {expected}, what its schedule of "
                             f"{len(self._schedule['steps'])} steps costs")
        return len(self._schedule["steps"])

    def nfe_for_steps(self, steps: int) -> int:
        if self._schedule is None:
            return super().nfe_for_steps(steps)
        if steps != len(self._schedule["steps"]):
            raise ValueError(f"sampler 'usf': its schedule has {len(self._schedule['steps'])} steps, not {steps}")
        return schedule_nfe(self._schedule) + int(self.options["final_denoise"])

    def min_nfe(self) -> int:
        return super().min_nfe() if self._schedule is None else self.nfe_for_steps(len(self._schedule["steps"]))

    def timesteps(self, nfe: int, schedule, device=None) -> torch.Tensor:
        if self._schedule is None:
            return super().timesteps(nfe, schedule, device)
        self.check_nfe(nfe)
        times = check_times(self._schedule, float(schedule.t_min), float(schedule.t_max))
        return torch.tensor(times, dtype=torch.float64, device=device)

    def sample(self, model, x_T, nfe, schedule, generator=None, progress=False, callback=None, timesteps=None):
        if self._schedule is not None and timesteps is not None:
            raise ValueError("sampler 'usf': timesteps= cannot be given with a schedule (its t_next decisions are the time steps)")
        if self._schedule is not None and nfe is None:
            nfe = self.nfe_for_steps(len(self._schedule["steps"]))
        return super().sample(model, x_T, nfe, schedule, generator, progress, callback, timesteps)

    # --- the loop ----------------------------------------------------------------------------
    def _first_point(self, denoiser, x: torch.Tensor, t, alpha: float, sigma: float, lam: float, first: str) -> _Point:
        if first == "none":
            return evaluate(denoiser, x, t, alpha, sigma, lam)
        if first == "zero_x0":
            return analytical_point(x, torch.zeros((), dtype=x.dtype, device=x.device), alpha, sigma, lam)
        mean = torch.as_tensor(self._data_mean(), dtype=x.dtype, device=x.device)
        return analytical_point(x, mean, alpha, sigma, lam)

    def solve(self, denoiser, x, grid, generator=None, callback=None, steps=None):
        plan = self._schedule["steps"] if self._schedule is not None else default_steps(grid)
        first = self._schedule["first_step"] if self._schedule is not None else "none"
        n = len(grid) - 1
        coefs = [schedule_coefs(denoiser.schedule, t) for t in grid]
        history = {0: self._first_point(denoiser, x, grid[0], *coefs[0], first)}
        for i in steps if steps is not None else range(n):
            decision, kind = plan[i], "x0" if plan[i]["prediction"] == "data" else "eps"
            alpha_t, sigma_t, lam_t = coefs[i + 1]
            step_coefs = (coefs[i][0], coefs[i][1], alpha_t, sigma_t)
            points = {-j: history[i - j] for j in range(i + 1)}
            x_next = taylor_step(x, points, lam_t, step_coefs, kind, decision["derivatives"])
            corrector = decision["corrector"]
            if i + 1 < n or corrector["type"] != "none":
                history[i + 1] = evaluate(denoiser, x_next, grid[i + 1], alpha_t, sigma_t, lam_t)
            if corrector["type"] != "none":
                points[NEW_POINT] = history[i + 1]
                x_next = taylor_step(x, points, lam_t, step_coefs, kind, corrector["derivatives"])
                if corrector["type"] == "implicit" and i + 1 < n:
                    history[i + 1] = evaluate(denoiser, x_next, grid[i + 1], alpha_t, sigma_t, lam_t)
            report_step(callback, i, grid[i], grid[i + 1], x_next, history[i].x0)
            x = x_next
        return x
