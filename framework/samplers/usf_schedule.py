"""USF solver schedules as plain data: parsing, validation with errors naming the step and decision, NFE, JSON.

A solver schedule (Liu et al. 2024, "A Unified Sampling Framework for Solver Searching of Diffusion
Probabilistic Models", sec. 3-4) lists, for every step of the exponential-integrator solver, the
decisions that make it up. Here it is a mapping (or a JSON/YAML file holding one):

    t_start:    time the solve starts at (default: the noise schedule's t_max)
    first_step: analytical first step: 'none' (evaluate the model at x_T), 'zero_x0' (take
                x0 = 0 there) or 'mean_x0' (take x0 = the data mean); the last two save one evaluation
    data_mean:  the data mean for 'mean_x0' (a number or a nested list of the sample shape), unless the
                sampler's option data_mean gives it
    steps:      one mapping per step i (from t_i to t_{i+1}):
        t_next:      t_{i+1} (the time-step decision); the last one is t_min
        prediction:  'noise' or 'data': which model output is Taylor-expanded in lambda
        order:       Taylor order 1-4
        derivatives: order - 1 estimators; the k-th estimates the k-th lambda-derivative from `points`
                     (offsets of grid points relative to t_i: -1 is t_{i-1}, ...; a corrector may use
                     +1, the new point t_{i+1}) by the difference system of the official `get_diff_derivative`, which
                     needs at least k points; `relaxation` (first derivative only):
                     'none', 'linear' (factor 1 + coefficient h), 'dpmsolver-2', 'unipc-bh1',
                     'unipc-bh2' (the factors that turn the Taylor step into DPM-Solver-2's and UniPC's
                     updates); `scale`: a constant factor (1 by default; the official third-order
                     DPM-Solver++ multistep uses 1/2 on the second derivative, and a linear multistep in
                     another variable, tAB-DEIS, one factor per derivative)
        corrector:   {type: 'none' | 'pseudo' | 'implicit', order, derivatives}: after the step,
                     evaluate the model at t_{i+1} and redo the step from t_i with that point available
                     (+1). 'pseudo' (UniC-like) keeps the evaluation at the predicted point for the next
                     step (no extra NFE); 'implicit' evaluates again at the corrected point (+1 NFE).
                     On the last step either costs one evaluation.
    meta:       free-form information (what it was searched for, its error); not read by the solver

Missing decisions take defaults: prediction 'data', order 1, derivatives from the nearest earlier
points, no relaxation, scale 1, no corrector. `normalize_schedule` returns the fully specified plain
mapping that the sampler runs and the search mutates.
"""

from __future__ import annotations

import json
import numbers
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence

from ..io import atomic_write_text

PREDICTIONS = ("noise", "data")
RELAXATIONS = ("none", "linear", "dpmsolver-2", "unipc-bh1", "unipc-bh2")
CORRECTORS = ("none", "pseudo", "implicit")
FIRST_STEPS = ("none", "zero_x0", "mean_x0")
MAX_ORDER = 4
TOP_KEYS = ("t_start", "first_step", "data_mean", "steps", "meta")
STEP_KEYS = ("t_next", "prediction", "order", "derivatives", "corrector")
DERIVATIVE_KEYS = ("points", "relaxation", "coefficient", "scale")
CORRECTOR_KEYS = ("type", "order", "derivatives")
#: the offset of the new point t_{i+1}, which only a corrector may use
NEW_POINT = 1


def _keys(where: str, value: Any, allowed: Sequence[str]) -> dict:
    if not isinstance(value, Mapping):
        raise ValueError(f"usf schedule {where}: expected a mapping with keys {', '.join(allowed)}, got {type(value).__name__}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise ValueError(f"usf schedule {where}: unknown decision(s) {', '.join(map(str, unknown))}; allowed: {', '.join(allowed)}")
    return dict(value)


def _choice(where: str, name: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"usf schedule {where}: {name}={value!r} is not allowed; allowed: {', '.join(map(repr, allowed))}")
    return value


def _number(where: str, name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"usf schedule {where}: {name}={value!r} must be a number")
    return float(value)


def _order(where: str, value: Any, available: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_ORDER:
        raise ValueError(f"usf schedule {where}: order={value!r} is not allowed; allowed: an integer 1..{MAX_ORDER}")
    if value - 1 > available:
        raise ValueError(f"usf schedule {where}: order={value} is higher than the history allows: Taylor order p needs "
                         f"p - 1 points besides the start point and only {available} are available here")
    return value


def _derivative(where: str, spec: Any, k: int, allowed_points: list[int], default_points: list[int]) -> dict:
    spec = _keys(where, {} if spec is None else spec, DERIVATIVE_KEYS)
    points = spec.get("points", default_points[:])
    if not isinstance(points, (list, tuple)) or not all(isinstance(p, int) and not isinstance(p, bool) for p in points):
        raise ValueError(f"usf schedule {where}: points={points!r} must be a list of integer offsets")
    bad = [p for p in points if p not in allowed_points]
    if bad or len(set(points)) != len(points):
        raise ValueError(f"usf schedule {where}: points={list(points)} is not allowed; allowed: distinct offsets among "
                         f"{allowed_points} (-j: the grid point j steps back; +1: the new point, correctors only)")
    if len(points) < k:
        raise ValueError(f"usf schedule {where}: the derivative of order {k} needs at least {k} points, got points={list(points)}")
    relaxation = _choice(where, "relaxation", spec.get("relaxation", "none"), RELAXATIONS)
    if k > 1 and relaxation != "none":
        raise ValueError(f"usf schedule {where}: relaxation={relaxation!r} applies to the first derivative only; "
                         f"allowed for derivative {k}: 'none'")
    coefficient = _number(where, "coefficient", spec.get("coefficient", 0.0))
    if relaxation != "linear" and coefficient != 0.0:
        raise ValueError(f"usf schedule {where}: coefficient={coefficient} applies only with relaxation='linear'")
    return {"points": [int(p) for p in points], "relaxation": relaxation, "coefficient": coefficient,
            "scale": _number(where, "scale", spec.get("scale", 1.0))}


def _estimators(where: str, order: int, specs: Any, allowed: list[int], default: list[int]) -> list[dict]:
    if specs is None:
        specs = [None] * (order - 1)
    if not isinstance(specs, (list, tuple)) or len(specs) != order - 1:
        raise ValueError(f"usf schedule {where}: derivatives must list order - 1 = {order - 1} estimators, got {specs!r}")
    return [_derivative(f"{where} derivatives[{k - 1}]", s, k, allowed, default[: max(order - 1, 1)])
            for k, s in enumerate(specs, start=1)]


def _corrector(where: str, spec: Any, i: int) -> dict:
    spec = _keys(f"{where} corrector", {"type": spec} if isinstance(spec, str) else spec, CORRECTOR_KEYS)
    kind = _choice(f"{where} corrector", "type", spec.get("type", "none"), CORRECTORS)
    if kind == "none":
        if set(spec) - {"type"}:
            raise ValueError(f"usf schedule {where} corrector: type 'none' takes no order or derivatives")
        return {"type": "none"}
    allowed = [NEW_POINT] + [-j for j in range(1, i + 1)]
    order = _order(f"{where} corrector", spec.get("order", 2), len(allowed))
    derivs = _estimators(f"{where} corrector", order, spec.get("derivatives"), allowed, allowed)
    return {"type": kind, "order": order, "derivatives": derivs}


def _step(i: int, spec: Any) -> dict:
    where = f"step {i}"
    spec = _keys(where, spec, STEP_KEYS)
    if "t_next" not in spec:
        raise ValueError(f"usf schedule {where}: the decision t_next (the time the step ends at) is missing")
    allowed = [-j for j in range(1, i + 1)]
    order = _order(where, spec.get("order", 1), len(allowed))
    return {"t_next": _number(where, "t_next", spec["t_next"]),
            "prediction": _choice(where, "prediction", spec.get("prediction", "data"), PREDICTIONS),
            "order": order,
            "derivatives": _estimators(where, order, spec.get("derivatives"), allowed, allowed),
            "corrector": _corrector(where, spec.get("corrector", "none"), i)}


def _mean(value: Any) -> Any:
    flat = value
    while isinstance(flat, (list, tuple)) and flat:
        flat = flat[0]
    if isinstance(value, bool) or not isinstance(flat, numbers.Real) or isinstance(flat, bool):
        raise ValueError(f"usf schedule: data_mean must be a number or a nested list of numbers, got {type(value).__name__}")
    return value


def normalize_schedule(spec: Any) -> dict:
    """The fully specified schedule of a mapping, a list of steps or a JSON/YAML path; ValueError naming the step and decision."""
    if isinstance(spec, (str, Path)):
        spec = load_schedule(spec)
    if isinstance(spec, (list, tuple)):
        spec = {"steps": list(spec)}
    spec = _keys("", spec, TOP_KEYS)
    steps = spec.get("steps")
    if not isinstance(steps, (list, tuple)) or not steps:
        raise ValueError("usf schedule: steps must be a non-empty list of per-step decisions")
    out = {"first_step": _choice("", "first_step", spec.get("first_step", "none"), FIRST_STEPS),
           "steps": [_step(i, s) for i, s in enumerate(steps)]}
    if spec.get("t_start") is not None:
        out["t_start"] = _number("", "t_start", spec["t_start"])
    times = [out.get("t_start", float("inf"))] + [s["t_next"] for s in out["steps"]]
    for i in range(len(times) - 1):
        if not times[i + 1] < times[i]:
            raise ValueError(f"usf schedule step {i}: t_next={times[i + 1]} must be below the step's start time {times[i]} "
                             f"(time steps strictly decrease)")
    if spec.get("data_mean") is not None:
        out["data_mean"] = _mean(spec["data_mean"])
    if "meta" in spec:
        out["meta"] = spec["meta"]
    return out


def schedule_nfe(schedule: Mapping) -> int:
    """Network evaluations a normalized schedule costs (USF sec. 3; the official `sample` loop).

    One at x_T unless the first step is analytical, one at the end of every step but the last (it
    serves the next step and a pseudo corrector), one more per implicit corrector before the last
    step, and one for a corrector on the last step.
    """
    steps = schedule["steps"]
    nfe = int(schedule["first_step"] == "none") + len(steps) - 1
    for i, step in enumerate(steps):
        kind = step["corrector"]["type"]
        nfe += int(kind != "none") if i == len(steps) - 1 else int(kind == "implicit")
    return nfe


def check_times(schedule: Mapping, t_min: float, t_max: float, tol: float = 1e-9) -> list[float]:
    """The schedule's time grid [t_start, t_next...]; ValueError naming the step when it leaves [t_min, t_max] or does not end at t_min."""
    start = schedule.get("t_start", t_max)
    if not t_min - tol <= start <= t_max + tol:
        raise ValueError(f"usf schedule: t_start={start} is not allowed; allowed: [{t_min}, {t_max}]")
    times = [start] + [s["t_next"] for s in schedule["steps"]]
    for i, t in enumerate(times[1:]):
        if not t_min - tol <= t <= t_max + tol:
            raise ValueError(f"usf schedule step {i}: t_next={t} is not allowed; allowed: [{t_min}, {t_max}]")
    if abs(times[-1] - t_min) > tol:
        raise ValueError(f"usf schedule step {len(times) - 2}: the last t_next={times[-1]} must be t_min={t_min}")
    return times


def load_schedule(path: str | Path) -> dict:
    """Read a schedule file (JSON, or YAML for .yaml/.yml); it is validated by normalize_schedule."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"usf schedule file not found: {path}")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml  # ships with omegaconf

        return yaml.safe_load(text)
    return json.loads(text)


def save_schedule(schedule: Mapping, path: str | Path, meta: Optional[dict] = None) -> Path:
    """Write a (validated) schedule as JSON, atomically; `meta` is merged into its meta field."""
    out = normalize_schedule(schedule)
    if meta:
        out["meta"] = {**out.get("meta", {}), **meta}
    path = Path(path)
    atomic_write_text(path, json.dumps(out, indent=1) + "\n")
    return path
