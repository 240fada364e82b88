"""Does the S3 solver-schedule search earn its place? Searched USF schedules against the best hand-made solver.

For each problem and NFE the benchmark

1. runs every hand-made configuration of the project (every deterministic solver variant of
   benchmarks.ode_solvers on every grid kind that can spend the NFE exactly) on the search noises and
   keeps the best one;
2. runs S3 (framework.tuning.s3_search) with the predictor within `--budget` true evaluations on the
   same search noises, and the same search without the predictor within `--factor` times as many;
   both start from the USF presets of the 6 best hand-made configurations (counted in the budget);
3. measures the best hand-made configuration and the searched schedule on fresh noises never used in
   the search (the reference-solution error, mean ||x - x_ref|| / ||x_ref||), and also the hand-made
   configuration that is best on the fresh noises themselves (an oracle choice, the hardest baseline);
4. reports the predictor's Kendall tau on held-out schedules (the search without the predictor
   evaluated them; the predictor is trained on the schedules its own search evaluated) and the true
   evaluations the search without the predictor needs to reach the final error of the search with it.

Problems: the exact 2-D Gaussian mixture of benchmarks.ode_solvers (exact probability-flow ODE solution
as the reference) and, with --ckpt, a trained image model (the cached 200-NFE reference of
framework.tuning.reference; search noises seeded 1, fresh noises seeded 2).

    python -m benchmarks.usf_search [--ckpt runs/digits/checkpoints/last.ckpt] [--nfe 4 5 6 8 10] [--budget 60]
"""

from __future__ import annotations

import argparse
import copy
import io
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence

import torch

from framework.diffusion import Denoiser, DiscreteVPSchedule
from framework.io import atomic_write_bytes, markdown_table, write_json, write_table
from framework.metrics.relative_error import relative_errors
from framework.oracles import GaussianMixture
from framework.samplers import GRID_KINDS, build_sampler
from framework.samplers.noise import randn, sample_generators
from framework.tuning.s3_operators import Space, encode
from framework.tuning.s3_predictor import Predictor, kendall_tau
from framework.samplers.usf_schedule import save_schedule
from framework.tuning.s3_search import SearchSettings, describe, s3_search, schedule_key
from framework.tuning.usf_presets import usf_preset

from .ode_solvers import VARIANTS

DEFAULT_NFES = (4, 5, 6, 8, 10)
DEFAULT_OUT = "benchmarks/results/usf_search"
SEARCH_SEED, FRESH_SEED = 1, 2
#: the search starts from this many of the best hand-made configurations (their evaluations count in its budget)
INIT = 6


@dataclass
class Problem:
    """A model on a schedule, search noises and fresh noises with their reference solutions, and the data mean."""

    name: str
    model: object
    schedule: object
    prediction: str
    x_search: torch.Tensor
    ref_search: torch.Tensor
    x_fresh: torch.Tensor
    ref_fresh: torch.Tensor
    data_mean: Optional[list]

    def denoiser(self) -> Denoiser:
        return Denoiser(self.model, self.schedule, self.prediction)


def _noises(seed: int, n: int, shape, dtype) -> torch.Tensor:
    return randn((n, *shape), sample_generators(seed, range(n)), dtype=dtype)


def oracle_problem(n_search: int, n_fresh: int) -> Problem:
    """The 2-D mixture of benchmarks.ode_solvers (DDPM's discrete schedule), exact ODE solutions as references."""
    schedule = DiscreteVPSchedule.linear()
    mixture = GaussianMixture.random(components=4, dim=2, seed=0)
    xs, xf = _noises(SEARCH_SEED, n_search, (2,), torch.float64), _noises(FRESH_SEED, n_fresh, (2,), torch.float64)
    mean = (mixture.weights[:, None] * mixture.means).sum(0).tolist()
    return Problem("2-D mixture (exact)", mixture.eps_model(schedule), schedule, "eps", xs,
                   mixture.ode_solution(xs, schedule), xf, mixture.ode_solution(xf, schedule), mean)


def checkpoint_problem(ckpt: str, n_search: int, n_fresh: int, cache_dir: str) -> Problem:
    """A trained image model (EMA weights) with the cached many-step reference (framework.tuning.reference)."""
    from framework.experiments import load_checkpoint
    from framework.experiments.image import data_mean
    from framework.tuning.reference import ReferenceSolver, reference_solution

    experiment, module = load_checkpoint(ckpt)
    module.eval()
    with module.ema_weights():
        net = copy.deepcopy(module.net)
    solver = ReferenceSolver(cache_dir=cache_dir)
    shape = tuple(module.data_shape)
    refs = [reference_solution(net, module.schedule, range(n), seed, shape, solver, prediction=module.prediction).x
            for seed, n in ((SEARCH_SEED, n_search), (FRESH_SEED, n_fresh))]
    return Problem(f"{Path(ckpt).parent.parent.name} model", net, module.schedule, module.prediction,
                   _noises(SEARCH_SEED, n_search, shape, torch.float32), refs[0],
                   _noises(FRESH_SEED, n_fresh, shape, torch.float32), refs[1], data_mean(experiment.datamodule(module)))


@torch.no_grad()
def error(problem: Problem, sampler, nfe: Optional[int], fresh: bool) -> float:
    x, ref = (problem.x_fresh, problem.ref_fresh) if fresh else (problem.x_search, problem.ref_search)
    out = sampler.sample(problem.denoiser(), x, nfe, problem.schedule)
    return float(relative_errors(out, ref).mean()) if bool(torch.isfinite(out).all()) else float("inf")


def hand_made(problem: Problem, nfe: int) -> list[dict]:
    """Every deterministic solver variant on every grid that spends exactly `nfe`, on the search and fresh noises."""
    rows = []
    for variant in VARIANTS:
        for grid in GRID_KINDS:
            try:
                sampler = build_sampler(variant.sampler, **variant.options, grid=grid, final_denoise=False)
                sampler.check_nfe(nfe)
            except ValueError:
                continue
            rows.append({"label": f"{variant.label} / {grid}", "search": error(problem, sampler, nfe, False),
                         "fresh": error(problem, sampler, nfe, True), "preset": _preset(variant, grid, nfe, problem)})
    return rows


def _preset(variant, grid: str, nfe: int, problem: Problem) -> Optional[dict]:
    """The USF schedule of a hand-made configuration, when it has a preset (singlestep, rhoRK, PNDM do not)."""
    try:
        return usf_preset(variant.sampler, nfe, problem.schedule, grid=grid, **variant.options)
    except ValueError:
        return None


def starting_points(base: list[dict], count: int) -> list[dict]:
    """The `count` hand-made configurations with presets that are best on the search noises: where S3 starts."""
    return [r["preset"] for r in sorted(base, key=lambda r: r["search"]) if r["preset"] is not None][:count]


def evaluations_to_reach(history: Sequence[float], target: float) -> Optional[int]:
    """The number of true evaluations after which a search's best error is <= target (None: never)."""
    return next((i + 1 for i, e in enumerate(history) if e <= target * (1 + 1e-12)), None)


def held_out_tau(trained_on: list, held_out: list, space: Space, seed: int) -> float:
    """Kendall tau between the predictor (trained on `trained_on`) and the true errors of unseen schedules."""
    seen = {schedule_key(e.schedule) for e in trained_on}
    test = [e for e in held_out if schedule_key(e.schedule) not in seen and e.error < float("inf")]
    predictor = Predictor().fit([e.encoding for e in trained_on], [min(e.error, 1e3) for e in trained_on], seed=seed)
    return kendall_tau(predictor.score([encode(e.schedule, space) for e in test]), [e.error for e in test])


def run_problem(problem: Problem, nfes: Sequence[int], budget: int, factor: int, seed: int, log,
                out: Optional[Path] = None) -> tuple[list, dict]:
    rows, histories = [], {}
    for nfe in nfes:
        t0 = time.perf_counter()
        base = hand_made(problem, nfe)
        chosen = min(base, key=lambda r: r["search"])
        oracle_choice = min(base, key=lambda r: r["fresh"])
        init = starting_points(base, INIT)
        archives: dict = {True: [], False: []}
        found = {}
        for use in (True, False):
            found[use] = s3_search(problem.model, problem.schedule, nfe, problem.x_search, budget * (1 if use else factor),
                                   torch.Generator().manual_seed(seed + nfe), reference=problem.ref_search,
                                   prediction=problem.prediction, data_mean=problem.data_mean,
                                   init=init, settings=SearchSettings(use_predictor=use), archive=archives[use])
        h_pred, h_plain = (found[u]["meta"]["search"]["history"] for u in (True, False))
        histories[nfe] = {"predictor": h_pred, "no_predictor": h_plain}
        searched = error(problem, build_sampler("usf", schedule=found[True], data_mean=problem.data_mean), None, True)
        plain = error(problem, build_sampler("usf", schedule=found[False], data_mean=problem.data_mean), None, True)
        if out is not None:
            tag = f"{problem.name.split()[0].lower().replace('-', '')}_nfe{nfe}"
            save_schedule(found[True], out / "schedules" / f"{tag}.json", meta={"hand_made": chosen["label"]})
        need = evaluations_to_reach(h_plain, h_pred[-1])
        space = Space(nfe, problem.schedule)
        rows.append({
            "problem": problem.name, "nfe": nfe, "hand-made (chosen on search noises)": chosen["label"],
            "hand-made err": chosen["fresh"], "searched err": searched, "gain": 1 - searched / chosen["fresh"],
            "best hand-made on fresh": f"{oracle_choice['label']}: {oracle_choice['fresh']:.4g}",
            "search-noise err (hand-made / searched)": f"{chosen['search']:.4g} / {h_pred[-1]:.4g}",
            "evals with predictor": len(h_pred),
            "evals without, to equal quality": need if need is not None else f">{len(h_plain)}",
            "no-predictor err at equal evals": h_plain[len(h_pred) - 1],
            f"searched err without predictor, {factor}x evals": plain, "decisions without predictor": describe(found[False]),
            "kendall tau (held out)": held_out_tau(archives[True], archives[False], space, seed),
            "decisions": describe(found[True]), "configs": len(base), "seconds": time.perf_counter() - t0})
        log(f"{problem.name} nfe={nfe}: hand-made {chosen['label']} {chosen['fresh']:.4g}, searched {searched:.4g} "
            f"({rows[-1]['gain']:+.0%}); {rows[-1]['seconds']:.0f}s")
    return rows, histories


def hand_made_sampler(label: str):
    """The hand-made configuration named '<variant label> / <grid>' (final_denoise off)."""
    name, grid = label.rsplit(" / ", 1)
    variant = next(v for v in VARIANTS if v.label == name)
    return build_sampler(variant.sampler, **variant.options, grid=grid, final_denoise=False)


def fid_rows(ckpt: str, rows: list, out: Path, features: str, n: int) -> list[dict]:
    """FID/KID (the project's feature network at `features`) of `n` fresh samples (seed FRESH_SEED) from the searched
    schedule and the chosen hand-made configuration at each NFE of the checkpoint problem."""
    from framework.experiments import load_checkpoint
    from framework.metrics.features import load_feature_network
    from framework.metrics.image import ImageQuality
    from framework.samplers.generate import generate_samples

    experiment, module = load_checkpoint(ckpt)
    module.eval()
    extractor = load_feature_network(features).extractor
    real = experiment.datamodule(module).real_images("train")
    result = []
    with module.ema_weights():
        for r in (r for r in rows if r["problem"] != "2-D mixture (exact)"):
            tag = f"{r['problem'].split()[0].lower()}_nfe{r['nfe']}"
            for kind, sampler in (("hand-made", hand_made_sampler(r["hand-made (chosen on search noises)"])),
                                  ("searched", build_sampler("usf", schedule=str(out / "schedules" / f"{tag}.json")))):
                x, _ = generate_samples(module.net, module.schedule, sampler, r["nfe"], range(n), FRESH_SEED,
                                        module.data_shape, prediction=module.prediction)
                metric = ImageQuality(extractor, real)
                metric.update(x, range(n))
                q = metric.compute()
                result.append({"nfe": r["nfe"], "sampler": kind if kind == "searched" else r["hand-made (chosen on search noises)"],
                               "fid": q["fid"], "kid": q["kid_mean"], "kid_std": q["kid_std"]})
                print(f"FID nfe={r['nfe']} {result[-1]['sampler']}: {q['fid']:.3f} KID {q['kid_mean']:.4f}", flush=True)
    return result


def plot(rows: list, histories: dict, path: Path, nfe_curve: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    problems = list(dict.fromkeys(r["problem"] for r in rows))
    fig, axes = plt.subplots(2, len(problems), figsize=(6 * len(problems), 8), squeeze=False)
    for j, name in enumerate(problems):
        mine = [r for r in rows if r["problem"] == name]
        ax = axes[0][j]
        ax.plot([r["nfe"] for r in mine], [r["hand-made err"] for r in mine], "o--", label="best hand-made (all solvers x grids)")
        ax.plot([r["nfe"] for r in mine], [r["searched err"] for r in mine], "s-", label="S3-searched USF schedule")
        ax.set_yscale("log")
        ax.set_xlabel("NFE")
        ax.set_ylabel("reference-solution error, fresh noises")
        ax.set_title(name, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        ax = axes[1][j]
        h = histories[name].get(nfe_curve)
        if h:
            ax.plot(range(1, len(h["predictor"]) + 1), h["predictor"], label="with predictor")
            ax.plot(range(1, len(h["no_predictor"]) + 1), h["no_predictor"], label="without predictor")
            ax.set_yscale("log")
            ax.set_xlabel("true evaluations")
            ax.set_ylabel(f"best error so far, search noises (NFE {nfe_curve})")
            ax.grid(True, which="both", alpha=0.3)
            ax.legend(fontsize=8)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


COLUMNS = ("problem", "nfe", "hand-made (chosen on search noises)", "hand-made err", "searched err", "gain",
           "best hand-made on fresh", "evals with predictor", "evals without, to equal quality",
           "no-predictor err at equal evals", "kendall tau (held out)", "decisions")
#: the column of the search without the predictor (its budget factor is in the name)
PLAIN = "searched err without predictor"


def main(argv: Optional[Sequence[str]] = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", default=None, help="also search for this checkpoint (e.g. runs/digits/checkpoints/last.ckpt)")
    p.add_argument("--nfe", type=int, nargs="+", default=list(DEFAULT_NFES))
    p.add_argument("--budget", type=int, default=60, help="true evaluations of the search with the predictor")
    p.add_argument("--factor", type=int, default=3, help="the search without the predictor gets factor x budget")
    p.add_argument("--n-search", type=int, default=128, help="search noises")
    p.add_argument("--n-fresh", type=int, default=256, help="fresh noises")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-oracle", action="store_true")
    p.add_argument("--cache-dir", default="runs/cache/reference")
    p.add_argument("--out", type=Path, default=Path(DEFAULT_OUT))
    p.add_argument("--features", default=None, help="with --ckpt: a cached feature network (.pt) for FID/KID")
    p.add_argument("--fid-samples", type=int, default=1000, help="fresh samples per FID/KID")
    a = p.parse_args(argv)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    problems = [] if a.no_oracle else [oracle_problem(a.n_search, a.n_fresh)]
    if a.ckpt:
        problems.append(checkpoint_problem(a.ckpt, a.n_search, a.n_fresh, a.cache_dir))
    rows, histories = [], {}
    for problem in problems:
        r, h = run_problem(problem, a.nfe, a.budget, a.factor, a.seed, print, a.out)
        rows += r
        histories[problem.name] = h
    table = [{**{k: r[k] for k in COLUMNS}, **{k: v for k, v in r.items() if k.startswith(PLAIN)}} for r in rows]
    write_table(rows, a.out / "results.csv", a.out / "results.md")
    write_json(a.out / "histories.json", histories)
    plot(rows, histories, a.out / "usf_search.png", 5 if 5 in a.nfe else a.nfe[0])
    print(markdown_table(table), end="")
    fid = []
    if a.ckpt and a.features:
        fid = fid_rows(a.ckpt, rows, a.out, a.features, a.fid_samples)
        write_table(fid, a.out / "fid.csv", a.out / "fid.md")
        print(markdown_table(fid), end="")
    print(f"\nresults in {a.out}")
    return {"rows": rows, "histories": histories, "fid": fid}


if __name__ == "__main__":
    main()
