"""S3 (Liu et al. 2024, sec. 4): search a USF solver schedule for one model at a fixed NFE.

A true evaluation runs a candidate schedule from the given noises and measures its reference-solution
error (mean ||x - x_ref|| / ||x_ref||, framework.metrics.relative_error) against a many-step solution of
the same model from the same noises (framework.tuning.reference, cached on disk per checkpoint and
noises). The search is evolutionary (framework.tuning.s3_operators): start from hand-made schedules
(presets of the project's samplers), then, stage by stage, breed many candidates from the best
schedules so far by mutation and crossover; a performance predictor (framework.tuning.s3_predictor,
retrained each stage with a ranking loss on every schedule evaluated so far) screens them, and only
the few it ranks best are evaluated for real, until the budget of true evaluations is spent. Without
the predictor the same loop evaluates as many unscreened candidates per stage. Every random choice
comes from the given generator, so a search is deterministic.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from ..diffusion.denoiser import Denoiser
from ..diffusion.schedules import VPSchedule
from ..metrics.relative_error import relative_errors
from ..samplers import build_sampler
from ..samplers.base import progress_bar
from ..samplers.noise import randn, sample_generators
from ..samplers.usf_schedule import load_schedule, normalize_schedule, save_schedule
from ..schema import SolverSearch
from .reference import ReferenceSolver, reference_solution, state_hash
from .s3_operators import Space, crossover, encode, mutate
from .s3_predictor import Predictor
from .usf_presets import usf_preset

#: the hand-made starting points: (preset, options) on each of INIT_GRIDS
INIT_PRESETS: tuple = (("unipc", {"order": 2, "variant": "bh2"}), ("unipc", {"order": 3, "variant": "bh1"}),
                       ("dpmsolver++", {"order": 3}), ("deis", {"ab_order": 2}))
INIT_GRIDS = ("logsnr", "time_quadratic")


@dataclass(frozen=True)
class SearchSettings:
    """How the search spends its budget: parents kept, candidates bred per stage, true evaluations per stage."""

    parents: int = 8
    candidates: int = SolverSearch.candidates  # the config's defaults (evaluation.solver_search), defined once
    per_stage: int = SolverSearch.per_stage
    crossover_rate: float = 0.25
    max_mutations: int = 2
    use_predictor: bool = SolverSearch.use_predictor
    predictor_steps: int = 300
    first_steps: tuple = ("none", "zero_x0")


@dataclass
class Evaluated:
    """One truly evaluated schedule and its reference-solution error."""

    schedule: dict
    error: float
    stage: int
    encoding: list = field(default_factory=list)
    #: the true error of the schedule it was bred from (the geometric mean of both parents after a crossover;
    #: its own for a starting point): with the encoding, what the predictor sees
    parent_error: float = math.nan

    def features(self) -> list:
        return features(self.encoding, self.parent_error)


def features(encoding: list, parent_error: float) -> list:
    """The predictor's input: the decisions' encoding and the log of the parent's true error."""
    return encoding + [math.log(max(min(parent_error, 1e3), 1e-12))]


def schedule_key(schedule: dict) -> str:
    """A canonical string of a schedule's decisions (times rounded to 1e-9), to skip duplicates."""
    s = {k: v for k, v in schedule.items() if k != "meta"}
    s = json.loads(json.dumps(s), parse_float=lambda v: round(float(v), 9))
    return json.dumps(s, sort_keys=True)


def default_init(nfe: int, schedule: VPSchedule) -> list[dict]:
    """The presets the search starts from (those that can spend `nfe`)."""
    out = []
    for grid in INIT_GRIDS:
        for name, options in INIT_PRESETS:
            try:
                out.append(usf_preset(name, nfe, schedule, grid=grid, **options))
            except ValueError:
                continue
    return out


def true_error(schedule: dict, denoiser: Denoiser, x_T: torch.Tensor, reference: torch.Tensor,
               data_mean: Optional[list] = None) -> float:
    """The reference-solution error of a schedule from x_T (inf when the result is not finite)."""
    sampler = build_sampler("usf", schedule=schedule, data_mean=data_mean)
    with torch.no_grad():
        x = sampler.sample(denoiser, x_T, None, denoiser.schedule)
    if not bool(torch.isfinite(x).all()):
        return math.inf
    return float(relative_errors(x, reference).mean())


def _seed(generator: torch.Generator) -> int:
    return int(torch.randint(0, 2**62, (1,), generator=generator))


def _breed(parents: list[Evaluated], count: int, rng: random.Random, space: Space, settings: SearchSettings,
           seen: set) -> list[tuple[dict, float]]:
    """Up to `count` new (child, parent error) pairs: crossover of two parents or 1..max_mutations mutations of one."""
    out, keys = [], set()
    for _ in range(30 * count):
        if len(out) >= count:
            break
        if rng.random() < settings.crossover_rate and len(parents) > 1:
            a, b = rng.sample(parents, 2)
            child, parent_error = crossover(a.schedule, b.schedule, rng, space), math.sqrt(a.error * b.error)
        else:
            p = rng.choice(parents)
            child, parent_error = mutate(p.schedule, rng, space, count=rng.randint(1, settings.max_mutations)), p.error
        key = None if child is None else schedule_key(child)
        if key is not None and key not in seen and key not in keys:
            out.append((child, parent_error))
            keys.add(key)
    return out


def s3_search(model, schedule: VPSchedule, nfe: int, x_T: torch.Tensor, budget: int, generator: torch.Generator,
              reference: Optional[torch.Tensor] = None, prediction: str = "eps", data_mean=None,
              init: Optional[Sequence[dict]] = None, settings: SearchSettings = SearchSettings(),
              progress: bool = False, archive: Optional[list] = None,
              on_stage: Optional[Callable[[int, list], None]] = None) -> dict:
    """The best USF schedule found for `model` at `nfe` within `budget` true evaluations (S3).

    `model`: a Denoiser on `schedule`, or a network model(x, t) predicting `prediction`. `reference`: the
    reference solution from x_T (None: DPM-Solver++ 3M at 200 NFE on the quadratic grid, computed here).
    `data_mean` (a tensor or nested list of x_T's sample shape) enables the 'mean_x0' first step.
    `archive`: a list that receives every Evaluated schedule. The result's meta holds the error, the number
    of true evaluations and the best error after each of them (`history`).
    """
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
        raise ValueError(f"s3_search: budget must be a positive integer (true evaluations), got {budget!r}")
    denoiser = model if isinstance(model, Denoiser) else Denoiser(model, schedule, prediction)
    if reference is None:
        solver = ReferenceSolver(cache_dir=None)
        with torch.no_grad():
            reference = solver.build().sample(denoiser, x_T, solver.nfe, schedule)
    mean = data_mean.tolist() if isinstance(data_mean, torch.Tensor) else data_mean
    first_steps = settings.first_steps + (("mean_x0",) if mean is not None else ())
    space = Space(nfe, schedule, tuple(dict.fromkeys(first_steps)))
    rng = random.Random(_seed(generator))
    predictor_seed = _seed(generator)
    start = [normalize_schedule(s) for s in (default_init(nfe, schedule) if init is None else init)]
    archive = [] if archive is None else archive
    seen: set = set()
    history: list[float] = []
    bar = progress_bar(budget, progress, f"s3 search nfe={nfe}")

    def evaluate(batch: list[tuple[dict, float]], stage: int) -> None:
        for s, parent_error in batch:
            if len(archive) >= budget:
                return
            seen.add(schedule_key(s))
            err = true_error(s, denoiser, x_T, reference, mean)
            archive.append(Evaluated(s, err, stage, encode(s, space), err if math.isnan(parent_error) else parent_error))
            history.append(min(history[-1], archive[-1].error) if history else archive[-1].error)
            bar.update(1)

    evaluate([(s, math.nan) for s in start if schedule_key(s) not in seen], 0)
    stage = 0
    while len(archive) < budget:
        stage += 1
        ranked = sorted(archive, key=lambda e: e.error)
        parents = [e for e in ranked[: settings.parents] if math.isfinite(e.error)]
        k = min(settings.per_stage, budget - len(archive))
        screened = settings.use_predictor and len(archive) >= 4
        pool = _breed(parents, settings.candidates if screened else k, rng, space, settings, seen)
        if not pool:
            break
        if screened:
            predictor = Predictor(steps=settings.predictor_steps).fit([e.features() for e in archive],
                                                                      [min(e.error, 1e3) for e in archive],
                                                                      seed=predictor_seed + stage)
            scores = predictor.score([features(encode(s, space), pe) for s, pe in pool])
            pool = [pool[j] for j in sorted(range(len(pool)), key=lambda j: scores[j])]
        evaluate(pool[:k], stage)
        if on_stage is not None:
            on_stage(stage, archive)
    bar.close()
    best = min(archive, key=lambda e: e.error)
    meta = {"nfe": nfe, "error": best.error, "evaluations": len(archive), "stages": stage, "history": history,
            "predictor": settings.use_predictor, "found_at_stage": best.stage}
    extra = {"data_mean": mean} if best.schedule["first_step"] == "mean_x0" else {}
    return normalize_schedule({**best.schedule, **extra, "meta": {**best.schedule.get("meta", {}), "search": meta}})


# --- schedules fitted to a checkpoint ---------------------------------------------------------------


def fitted_key(network, schedule: VPSchedule, prediction: str, seed: int, num_samples: int) -> dict:
    """What a searched schedule was fitted for: the weights' hash, the noise schedule, parameterisation and noises."""
    return {"weights": state_hash(network), "schedule": schedule.to_config(), "prediction": prediction,
            "seed": int(seed), "num_samples": int(num_samples)}


def searched_schedule_path(checkpoint: str | Path, nfe: int) -> Path:
    """Where the schedule searched for a checkpoint at `nfe` lives: next to it, usf_s3_nfe<k>.json."""
    return Path(checkpoint).parent / f"usf_s3_nfe{nfe}.json"


def check_fitted(path: str | Path, network, schedule: VPSchedule, prediction: str) -> dict:
    """The schedule saved at `path`, refused (ValueError) when it was searched for other weights or another schedule."""
    saved = load_schedule(path)
    key = (saved.get("meta") or {}).get("fitted_for") or {}
    mine = {"weights": state_hash(network), "schedule": schedule.to_config(), "prediction": prediction}
    wrong = [k for k in mine if k in key and key[k] != mine[k]]
    if wrong:
        raise ValueError(f"usf schedule {path} was searched for another model (its {', '.join(wrong)} differ); "
                         f"search again for this checkpoint (sample.py --search-solver)")
    return normalize_schedule(saved)


def search_for_network(network, schedule: VPSchedule, prediction: str, nfe: int, budget: int, seed: int,
                       num_samples: int, shape: Sequence[int], out: Optional[str | Path] = None,
                       reference_solver: ReferenceSolver = ReferenceSolver(), data_mean=None,
                       settings: SearchSettings = SearchSettings(), progress: bool = False, device="cpu") -> dict:
    """S3 for a trained network on the noises of samples 0..num_samples-1 seeded by (seed, i) (the reference
    solution cached by framework.tuning.reference); saved to `out` (JSON) with what it was fitted for."""
    indices = list(range(num_samples))
    ref = reference_solution(network, schedule, indices, seed, shape, reference_solver, prediction=prediction,
                             device=device)
    x_T = randn((num_samples, *shape), sample_generators(seed, indices), dtype=torch.float32).to(device)
    found = s3_search(network, schedule, nfe, x_T, budget, torch.Generator().manual_seed(seed),
                      reference=ref.x.to(device), prediction=prediction, data_mean=data_mean, settings=settings,
                      progress=progress)
    found["meta"]["fitted_for"] = fitted_key(network, schedule, prediction, seed, num_samples)
    if out is not None:
        save_schedule(found, out)
    return found


def describe(schedule: dict) -> str:
    """A one-line summary of a USF schedule's decisions: first step, orders, predictions, correctors, relaxations."""
    steps = schedule["steps"]
    corr = [s["corrector"]["type"][0] if s["corrector"]["type"] != "none" else "-" for s in steps]
    relax = sorted({s["derivatives"][0]["relaxation"] for s in steps if s["derivatives"]} - {"none"})
    return (f"first {schedule['first_step']}, orders {''.join(str(s['order']) for s in steps)}, "
            f"pred {''.join(s['prediction'][0] for s in steps)}, corr {''.join(corr)}"
            + (f", relax {'/'.join(relax)}" if relax else ""))
