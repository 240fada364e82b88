"""The evolutionary operators of S3 (Liu et al. 2024, sec. 4) over USF schedules, and their fixed-length encoding.

A schedule is a normalized plain mapping (framework.samplers.usf_schedule). Every operator returns a
new one (the inputs are never modified), re-validated and repaired to spend exactly the searched NFE:
a decision that changes the cost (an analytical first step saves one evaluation, an implicit corrector
costs one, a corrector on the last step costs one) is paid for by merging the two steps around the
shortest log-SNR interval, or refunded by splitting the longest one.
"""

from __future__ import annotations

import copy
import math
import random
from dataclasses import dataclass
from typing import Optional

import torch

from ..diffusion.schedules import VPSchedule
from ..samplers.usf_schedule import CORRECTORS, MAX_ORDER, NEW_POINT, PREDICTIONS, RELAXATIONS, normalize_schedule, schedule_nfe

#: how far back (in grid points) the search lets a derivative estimator reach
MAX_BACK = 4
OPERATORS = ("time", "warp", "order", "prediction", "points", "relaxation", "corrector", "first_step")


@dataclass(frozen=True)
class Space:
    """What the search may choose: the NFE it must spend, the noise schedule (for log-SNR moves), first-step kinds."""

    nfe: int
    schedule: VPSchedule
    first_steps: tuple = ("none", "zero_x0")

    def lam(self, t: float) -> float:
        return float(self.schedule.log_snr(torch.tensor(t, dtype=torch.float64)))

    def time(self, lam: float) -> float:
        return float(self.schedule.t_from_log_snr(torch.tensor(lam, dtype=torch.float64)))

    @property
    def lam_range(self) -> tuple[float, float]:
        return self.lam(float(self.schedule.t_max)), self.lam(float(self.schedule.t_min))

    @property
    def max_steps(self) -> int:
        return self.nfe + 1


def _nearest(order: int, extra: tuple = ()) -> list[dict]:
    points = list(extra) + [-j for j in range(1, order)]
    return [{"points": points[: order - 1], "relaxation": "none", "coefficient": 0.0, "scale": 1.0} for _ in range(order - 1)]


def _valid_derivs(derivs: list, order: int, allowed: set) -> bool:
    return len(derivs) == order - 1 and all(len(d["points"]) >= k and set(d["points"]) <= allowed
                                             for k, d in enumerate(derivs, start=1))


def sanitize(schedule: dict) -> dict:
    """Clamp orders to what each step's history allows and reset estimators whose points no longer exist."""
    s = copy.deepcopy(schedule)
    for i, step in enumerate(s["steps"]):
        allowed = {-j for j in range(1, i + 1)}
        step["order"] = max(1, min(step["order"], i + 1, MAX_ORDER))
        if not _valid_derivs(step["derivatives"], step["order"], allowed):
            first = step["derivatives"][0] if step["derivatives"] else None
            step["derivatives"] = _nearest(step["order"])
            if first and step["order"] > 1:
                step["derivatives"][0].update(relaxation=first["relaxation"], coefficient=first["coefficient"])
        c = step["corrector"]
        if c["type"] != "none":
            c["order"] = max(1, min(c["order"], i + 2, MAX_ORDER))
            if not _valid_derivs(c["derivatives"], c["order"], allowed | {NEW_POINT}):
                c["derivatives"] = _nearest(c["order"], (NEW_POINT,))
    return normalize_schedule(s)


def _lams(s: dict, space: Space) -> list[float]:
    return [space.lam(s.get("t_start", float(space.schedule.t_max)))] + [space.lam(st["t_next"]) for st in s["steps"]]


def _merge_shortest(s: dict, space: Space) -> bool:
    """Drop the interior time point with the shortest log-SNR interval after it (its step absorbs the next)."""
    if len(s["steps"]) < 2:
        return False
    lams = _lams(s, space)
    k = min(range(len(s["steps"]) - 1), key=lambda j: lams[j + 2] - lams[j + 1])
    s["steps"][k + 1]["order"] = min(s["steps"][k + 1]["order"], s["steps"][k]["order"])
    del s["steps"][k]
    return True


def _split_longest(s: dict, space: Space) -> bool:
    if len(s["steps"]) >= space.max_steps:
        return False
    lams = _lams(s, space)
    k = max(range(len(s["steps"])), key=lambda j: lams[j + 1] - lams[j])
    new = copy.deepcopy(s["steps"][k])
    new["t_next"] = space.time(0.5 * (lams[k] + lams[k + 1]))
    new["corrector"] = {"type": "none"}
    s["steps"].insert(k, new)
    return True


def repair(schedule: dict, space: Space) -> Optional[dict]:
    """The schedule made to cost exactly space.nfe (merging or splitting steps), or None when it cannot."""
    s = copy.deepcopy(schedule)
    for _ in range(4 * space.max_steps):
        s = sanitize(s)
        cost = schedule_nfe(s)
        if cost == space.nfe:
            return s
        ok = _merge_shortest(s, space) if cost > space.nfe else _split_longest(s, space)
        if not ok:
            return None
    return None


# --- mutations -------------------------------------------------------------------------------------


def _mutate_time(s: dict, rng: random.Random, space: Space) -> None:
    if len(s["steps"]) < 2:
        return
    lams = _lams(s, space)
    k = rng.randrange(1, len(lams) - 1)  # an interior point; both ends stay
    lo, hi = lams[k - 1], lams[k + 1]
    new = lams[k] + rng.gauss(0.0, 0.25) * (hi - lo)
    margin = 0.02 * (hi - lo)
    s["steps"][k - 1]["t_next"] = space.time(min(max(new, lo + margin), hi - margin))


def _mutate_warp(s: dict, rng: random.Random, space: Space) -> None:
    """Move every interior time point at once: u -> u^gamma on the normalised log-SNR axis (a smooth re-spacing)."""
    lams = _lams(s, space)
    lo, hi = lams[0], lams[-1]
    gamma = math.exp(rng.gauss(0.0, 0.15))
    for k in range(1, len(lams) - 1):
        u = (lams[k] - lo) / (hi - lo)
        s["steps"][k - 1]["t_next"] = space.time(lo + (hi - lo) * u**gamma)


def _mutate_order(s: dict, rng: random.Random, space: Space) -> None:
    i = rng.randrange(len(s["steps"]))
    step = s["steps"][i]
    step["order"] = rng.randint(1, min(MAX_ORDER, i + 1))
    step["derivatives"] = _nearest(step["order"])


def _mutate_prediction(s: dict, rng: random.Random, space: Space) -> None:
    step = rng.choice(s["steps"])
    step["prediction"] = rng.choice([p for p in PREDICTIONS if p != step["prediction"]])


def _random_points(rng: random.Random, k: int, allowed: list[int]) -> list[int]:
    size = rng.randint(k, min(len(allowed), max(k, MAX_BACK)))
    return sorted(rng.sample(allowed, size), key=abs)


def _mutate_points(s: dict, rng: random.Random, space: Space) -> None:
    i = rng.randrange(len(s["steps"]))
    step = s["steps"][i]
    allowed = [-j for j in range(1, min(i, MAX_BACK + 2) + 1)]
    if step["order"] > 1:
        k = rng.randrange(1, step["order"])
        step["derivatives"][k - 1]["points"] = _random_points(rng, k, allowed)


def _mutate_relaxation(s: dict, rng: random.Random, space: Space) -> None:
    candidates = [st for st in s["steps"] if st["order"] > 1]
    if not candidates:
        return
    d = rng.choice(candidates)["derivatives"][0]
    d["relaxation"] = rng.choice(RELAXATIONS)
    d["coefficient"] = round(rng.gauss(0.0, 0.5), 4) if d["relaxation"] == "linear" else 0.0


def _mutate_corrector(s: dict, rng: random.Random, space: Space) -> None:
    i = rng.randrange(len(s["steps"]))
    kind = rng.choice(CORRECTORS)
    order = rng.randint(1, min(MAX_ORDER, i + 2))
    s["steps"][i]["corrector"] = {"type": "none"} if kind == "none" else {
        "type": kind, "order": order, "derivatives": _nearest(order, (NEW_POINT,))}


def _mutate_first_step(s: dict, rng: random.Random, space: Space) -> None:
    s["first_step"] = rng.choice(space.first_steps)


_MUTATIONS = {"time": _mutate_time, "warp": _mutate_warp, "order": _mutate_order, "prediction": _mutate_prediction, "points": _mutate_points,
              "relaxation": _mutate_relaxation, "corrector": _mutate_corrector, "first_step": _mutate_first_step}
#: how often each operator is drawn (time steps matter most at low NFE)
WEIGHTS = {"time": 4, "warp": 2, "order": 2, "prediction": 1, "points": 1, "relaxation": 1, "corrector": 1, "first_step": 1}


def mutate(schedule: dict, rng: random.Random, space: Space, count: int = 1) -> Optional[dict]:
    """`count` random mutations (S3, sec. 4: time steps, orders, prediction types, estimators, relaxation,
    correctors, first step), then repaired to the NFE; None when the result cannot be repaired."""
    s = copy.deepcopy(schedule)
    names = list(WEIGHTS)
    for _ in range(count):
        _MUTATIONS[rng.choices(names, weights=[WEIGHTS[n] for n in names])[0]](s, rng, space)
    return repair(s, space)


def crossover(a: dict, b: dict, rng: random.Random, space: Space) -> Optional[dict]:
    """One-point crossover: the steps after a random cut take their decisions from `b` (steps aligned from the
    end), and, when both have as many steps and the times still decrease, their time steps too; the first
    step from either parent; repaired to the NFE."""
    if len(a["steps"]) < 2:
        return None
    child = copy.deepcopy(a)
    cut = rng.randrange(1, len(a["steps"]))
    shift = len(b["steps"]) - len(a["steps"])
    for i in range(cut, len(a["steps"])):
        if i + shift >= 0:
            src = b["steps"][i + shift]
            child["steps"][i].update({k: copy.deepcopy(v) for k, v in src.items() if k != "t_next"})
    if shift == 0 and b["steps"][cut]["t_next"] < a["steps"][cut - 1]["t_next"]:
        for i in range(cut, len(a["steps"])):
            child["steps"][i]["t_next"] = b["steps"][i]["t_next"]
    child["first_step"] = rng.choice([a["first_step"], b["first_step"]])
    return repair(child, space)


# --- encoding ----------------------------------------------------------------------------------------

STEP_FEATURES = 1 + 2 + 1 + MAX_ORDER + len(RELAXATIONS) + 1 + 1 + len(CORRECTORS) + 1


def encode(schedule: dict, space: Space) -> list[float]:
    """A fixed-length vector of a schedule's decisions (space.max_steps slots, zero-padded) for the predictor."""
    lo, hi = space.lam_range
    out: list[float] = []
    for i in range(space.max_steps):
        if i >= len(schedule["steps"]):
            out += [0.0] * STEP_FEATURES
            continue
        st = schedule["steps"][i]
        order = [0.0] * MAX_ORDER
        order[st["order"] - 1] = 1.0
        relax = [0.0] * len(RELAXATIONS)
        coef, depth = 0.0, 0.0
        if st["derivatives"]:
            relax[RELAXATIONS.index(st["derivatives"][0]["relaxation"])] = 1.0
            coef = st["derivatives"][0]["coefficient"]
            pts = [abs(p) for d in st["derivatives"] for p in d["points"]]
            depth = sum(pts) / len(pts) / MAX_BACK
        corr = [0.0] * len(CORRECTORS)
        corr[CORRECTORS.index(st["corrector"]["type"])] = 1.0
        u = (space.lam(st["t_next"]) - lo) / (hi - lo)
        u_prev = (space.lam(schedule["steps"][i - 1]["t_next"]) - lo) / (hi - lo) if i else 0.0
        out += [1.0, u, u - u_prev, float(st["prediction"] == "data"), *order, *relax, coef, depth, *corr,
                st["corrector"].get("order", 0) / MAX_ORDER]
    first = [float(schedule["first_step"] == f) for f in ("none", "zero_x0", "mean_x0")]
    return out + first + [math.log(len(schedule["steps"]))]
