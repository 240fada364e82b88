"""The project's hand-made solvers as USF schedules: `usf_preset(name, nfe, schedule, **options)`.

USF (Liu et al. 2024, sec. 3) shows that the exponential-integrator solvers are choices of
its decisions. Each preset below builds the project's own sampler with the same options (so its
options are validated there and its time grid is the one that sampler walks) and writes the decisions
that reproduce that sampler's update at every step:

- ddim: Taylor order 1 (DDIM eq. 12 is the first-order exponential integrator);
- dpmsolver++ (multistep, orders 1-3, data or noise prediction): order p = the sampler's step order,
  derivatives from the nearest earlier points; the official second-order update is the 'dpmsolver-2'
  relaxation of the first derivative, the official third-order one halves the second derivative
  (scale 1/2, see dpm_solver.official_3m_weights); solver_type 'taylor' needs neither;
- unipc (orders 1-3, bh1/bh2, data or noise prediction, with or without UniC): UniP-p is Taylor order p
  and UniC-p Taylor order p + 1 with the new point among the estimator's points; where UniPC solves for
  a single rho it takes rho = 1/2, which is the 'unipc-bh1'/'unipc-bh2' relaxation; the corrector is
  'pseudo' (the evaluation at the predicted point serves the next step);
- deis tAB (and rhoAB), ipndm: linear multisteps in the noise prediction with weights w_j on the
  outputs; any such step with sum_j w_j = h phi_1(h) is a Taylor step of order r + 1 whose k-th derivative
  is estimated from the r earlier points and scaled by a constant (solved here from the weights).

The presets spend the whole NFE on steps (final_denoise off): run them with
build_sampler("usf", schedule=preset, final_denoise=...) like any sampler.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np
import torch

from ..diffusion.schedules import VPSchedule
from ..samplers import build_sampler
from ..samplers.deis import _cached_tab_weights, _rho, ab_degree, rho_ab_weights
from ..samplers.dpm_solver import multistep_orders
from ..samplers.exp_integrator import adams_bashforth_weights, finite_difference_weights, schedule_coefs, taylor_weights
from ..samplers.usf_schedule import normalize_schedule

PRESETS = ("ddim", "dpmsolver++", "unipc", "deis", "ipndm")


def _nearest(count: int, extra: Sequence[int] = ()) -> list[int]:
    return list(extra) + [-j for j in range(1, count + 1)]


def _derivs(order: int, points: list[int], first: str = "none", scales: Sequence[float] = ()) -> list[dict]:
    out = []
    for k in range(1, order):
        d = {"points": points[: order - 1], "relaxation": first if k == 1 else "none"}
        if k - 1 < len(scales):
            d["scale"] = float(scales[k - 1])
        out.append(d)
    return out


def _dpmsolver_steps(sampler, times: Sequence[float]) -> list[dict]:
    o = sampler.options
    if o["method"] != "multistep":
        raise ValueError("usf_preset('dpmsolver++'): method='singlestep' is not a preset; allowed: 'multistep'")
    prediction = "data" if o["algorithm_type"] == "dpmsolver++" else "noise"
    official = o["solver_type"] == "dpmsolver"
    steps = []
    for t, p in zip(times[1:], multistep_orders(len(times) - 1, o["order"], o["lower_order_final"])):
        first = "dpmsolver-2" if official and p == 2 else "none"
        scales = (1.0, 0.5) if official and p == 3 else ()
        steps.append({"t_next": t, "prediction": prediction, "order": p, "derivatives": _derivs(p, _nearest(p - 1), first, scales)})
    return steps


def _unipc_steps(sampler, times: Sequence[float]) -> list[dict]:
    o = sampler.options
    prediction = "data" if o["predict_x0"] else "noise"
    relax = f"unipc-{o['variant']}"
    n = len(times) - 1
    steps = []
    for i, (t, p) in enumerate(zip(times[1:], multistep_orders(n, o["order"], o["lower_order_final"]))):
        step = {"t_next": t, "prediction": prediction, "order": p,
                "derivatives": _derivs(p, _nearest(p - 1), relax if p == 2 else "none")}
        if o["use_corrector"] and i + 1 < n:
            step["corrector"] = {"type": "pseudo", "order": p + 1,
                                 "derivatives": _derivs(p + 1, _nearest(p - 1, [1]), relax if p == 1 else "none")}
        steps.append(step)
    return steps


def linear_multistep_step(t_next: float, lams: Sequence[float], lam_t: float, weights: Sequence[float]) -> dict:
    """The noise-prediction Taylor step equal to sum_j weights_j eps_j (outputs at `lams`, newest first, lams[0] the start).

    Order len(lams); the k-th derivative uses all earlier points and the scale s_k that solves
    sum_k s_k c_k a_kj = weights_j for every earlier point j (c_k: taylor_weights, a_kj: finite_difference_weights).
    The start output then gets h phi_1 - sum_j weights_j, equal to weights[0] when the weights sum to h phi_1.
    """
    r = len(lams) - 1
    if r == 0:
        return {"t_next": t_next, "prediction": "noise", "order": 1}
    lam_s = float(lams[0])
    offsets = [float(v) - lam_s for v in lams[1:]]
    c = taylor_weights(lam_t - lam_s, r + 1, "eps")
    a = np.array([finite_difference_weights(offsets, k) for k in range(1, r + 1)])  # [k, j]
    combined = np.linalg.solve(a.T, np.asarray(weights[1:], dtype=np.float64))  # c_k s_k
    scales = [float(combined[k] / c[k + 1]) for k in range(r)]
    return {"t_next": t_next, "prediction": "noise", "order": r + 1,
            "derivatives": [{"points": _nearest(r), "scale": s} for s in scales]}


def _multistep_weights_steps(times: Sequence[float], schedule: VPSchedule, degree: Callable[[int], int],
                             weights: Callable[[int, int], list[float]]) -> list[dict]:
    lams = [schedule_coefs(schedule, t)[2] for t in times]
    steps = []
    for i in range(len(times) - 1):
        r = degree(i)
        steps.append(linear_multistep_step(times[i + 1], [lams[i - j] for j in range(r + 1)], lams[i + 1], weights(i, r)))
    return steps


def _deis_steps(sampler, times: Sequence[float], schedule: VPSchedule) -> list[dict]:
    o = sampler.options
    if o["method"] == "rho_rk":
        raise ValueError("usf_preset('deis'): method='rho_rk' is not a preset; allowed: 't_ab', 'rho_ab'")
    n = len(times) - 1

    def weights(i: int, r: int) -> list[float]:
        nodes = [times[i - j] for j in range(r + 1)]
        if o["method"] == "t_ab":
            return list(_cached_tab_weights(schedule, tuple(nodes), times[i], times[i + 1]))
        return rho_ab_weights([_rho(schedule, v) for v in nodes], _rho(schedule, times[i]), _rho(schedule, times[i + 1]))

    return _multistep_weights_steps(times, schedule, lambda i: min(ab_degree(o, i, n), i), weights)


def _ipndm_steps(sampler, times: Sequence[float], schedule: VPSchedule) -> list[dict]:
    """iPNDM: the DDIM transfer of the Adams-Bashforth combination, i.e. weights h phi_1(h) b_j on eps_j."""
    order = sampler.options["order"]
    lams = [schedule_coefs(schedule, t)[2] for t in times]

    def weights(i: int, r: int) -> list[float]:
        first = taylor_weights(lams[i + 1] - lams[i], 1, "eps")[0]
        return [first * b for b in adams_bashforth_weights(r + 1)]

    return _multistep_weights_steps(times, schedule, lambda i: min(order - 1, i), weights)


def usf_preset(name: str, nfe: int, schedule: VPSchedule, **options: Any) -> dict:
    """The USF schedule of the project's sampler `name` with `options` at `nfe` on `schedule` (its time grid
    from the sampler's `grid` option, or `timesteps=`); a normalized plain mapping."""
    if name not in PRESETS:
        raise ValueError(f"usf_preset: unknown preset {name!r}; allowed: {', '.join(PRESETS)}")
    timesteps = options.pop("timesteps", None)
    if options.get("final_denoise"):
        raise ValueError("usf_preset: final_denoise=True is not part of a schedule; allowed: False "
                         "(set it on the usf sampler)")
    sampler = build_sampler(name, **{**options, "final_denoise": False})
    grid = sampler.timesteps(nfe, schedule) if timesteps is None else torch.as_tensor(timesteps, dtype=torch.float64)
    if timesteps is not None and sampler.nfe_for_steps(len(grid) - 1) != nfe:
        raise ValueError(f"usf_preset: the {len(grid) - 1}-step timesteps cost {sampler.nfe_for_steps(len(grid) - 1)} "
                         f"evaluations with {name!r}, not nfe={nfe}")
    times = [float(t) for t in grid]
    if name == "ddim":
        if float(sampler.options["eta"]) != 0.0:
            raise ValueError("usf_preset('ddim'): eta must be 0 (the ODE solver); USF schedules are deterministic")
        steps = [{"t_next": t, "prediction": "noise", "order": 1} for t in times[1:]]
    elif name == "dpmsolver++":
        steps = _dpmsolver_steps(sampler, times)
    elif name == "unipc":
        steps = _unipc_steps(sampler, times)
    elif name == "deis":
        steps = _deis_steps(sampler, times, schedule)
    else:
        steps = _ipndm_steps(sampler, times, schedule)
    label = {"preset": name, "options": {k: v for k, v in sampler.options.items() if k != "final_denoise"}, "nfe": nfe}
    return normalize_schedule({"t_start": times[0], "steps": steps, "meta": label})
