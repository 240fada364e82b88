"""Feynman-Kac correctors (Skreta et al. 2025) against the unweighted SDE of the same drift.

Mixtures (`python -m benchmarks.fkc`): on the exact 1-D targets of framework.oracles.fkc_targets (annealed
p^beta at beta = 2 and 0.5, a product of two mixtures, guidance q_u^(1-w) q_c^w at w = 3), for populations of
K = 8 ... 4,096 particles: the root-mean-square error of one population's mode weight P(x > 0) over R
independent populations (R K >= `--total` particles in all), the mean energy distance of a population's
particles to 4,096 exact draws next to its Monte Carlo floor (K exact draws against the same 4,096), and the
wall time per particle (the NFE per particle is the same for both: `--nfe`).

Digits (`--digits CKPT`, a class-conditional checkpoint): guided sampling at a few scales w with and without
FKC's weights (target cfg, populations of `--digits-particles` particles sharing one label): the accuracy of
the project's digit classifier on the requested labels, FID/KID against the training digits, and how many of
the samples are distinct (the final resampling returns copies of the fittest particles).

    python -m benchmarks.fkc [--out DIR] [--particles 8 16 ... 4096] [--total 16384] [--nfe 200]
    python -m benchmarks.fkc --digits runs/digits_cond/checkpoints/last.ckpt --scales 1 2 4 --num-samples 1000
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from framework.diffusion import build_schedule
from framework.io import atomic_write_bytes, write_json, write_table
from framework.oracles.fkc_targets import FKCProblem, energy_distance, fkc_problems, self_distance
from framework.samplers import build_sampler

DEFAULT_OUT = "benchmarks/results/fkc"
PARTICLES = (8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
#: populations whose energy distance is measured (each against the same exact reference set)
ED_POPULATIONS = 8
REFERENCE_SIZE = 4096


def run_problem(problem: FKCProblem, schedule, k: int, weights: bool, total: int, nfe: int, seed: int,
                reference: torch.Tensor, ref_self: float, threshold: float) -> dict:
    """One (target, K, weights) cell: mode-weight RMSE / bias over R populations, energy distance, time per particle."""
    populations = max(total // k, 4)
    n = populations * k
    sampler = build_sampler("fkc", num_particles=k, weights=weights, ess_threshold=threshold, **problem.options)
    x_T = torch.randn(n, 1, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    t0 = time.perf_counter()
    x = sampler.sample(problem.models(n), x_T, nfe, schedule, torch.Generator().manual_seed(seed + 1))
    seconds = time.perf_counter() - t0
    frac = (x[:, 0] > 0).double().reshape(populations, k).mean(1)
    err = frac - problem.mass_above_zero
    pops = x.reshape(populations, k, 1)[:ED_POPULATIONS]
    return {"target": problem.name, "particles": k, "sampler": "fkc" if weights else "sde", "populations": populations,
            "mode_rmse": float(err.pow(2).mean().sqrt()), "mode_bias": float(err.mean()),
            "energy": sum(energy_distance(p, reference, ref_self) for p in pops) / len(pops),
            "us_per_particle": 1e6 * seconds / n, "nfe": nfe}


def floor_rows(problem: FKCProblem, particles: Sequence[int], reference: torch.Tensor, ref_self: float,
               seed: int) -> list[dict]:
    """The energy distance of K exact draws to the reference set (mean over ED_POPULATIONS draws): the floor."""
    rows = []
    for k in particles:
        g = torch.Generator().manual_seed(seed + 7)
        draws = [problem.draws(k, g) for _ in range(ED_POPULATIONS)]
        rows.append({"target": problem.name, "particles": k, "sampler": "exact", "populations": ED_POPULATIONS,
                     "mode_rmse": "", "mode_bias": "", "energy": sum(energy_distance(d, reference, ref_self) for d in draws) / len(draws),
                     "us_per_particle": "", "nfe": ""})
    return rows


def run_mixtures(out: Path, particles: Sequence[int], total: int, nfe: int, seed: int, threshold: float,
                 names: Optional[Sequence[str]] = None, plot: bool = True,
                 reference_size: int = REFERENCE_SIZE) -> list[dict]:
    schedule = build_schedule("linear")
    problems = fkc_problems(schedule)
    rows = []
    for name, problem in problems.items():
        if names and name not in names:
            continue
        reference = problem.draws(reference_size, torch.Generator().manual_seed(seed + 3))
        ref_self = self_distance(reference)
        rows += floor_rows(problem, particles, reference, ref_self, seed)
        for k in particles:
            for weights in (True, False):
                rows.append(run_problem(problem, schedule, k, weights, total, nfe, seed, reference, ref_self, threshold))
                r = rows[-1]
                print(f"{name:15s} K={k:5d} {r['sampler']:4s} mode rmse {r['mode_rmse']:.4f} bias {r['mode_bias']:+.4f} "
                      f"energy {r['energy']:.4f} {r['us_per_particle']:.1f} us/particle", flush=True)
    write_table(rows, out / "mixtures.csv")
    write_json(out / "mixtures.json", {"particles": list(particles), "total": total, "nfe": nfe, "seed": seed,
                                       "ess_threshold": threshold, "reference_size": reference_size, "exact": {n: p.mass_above_zero for n, p in problems.items()}})
    (out / "mixtures.md").write_text(mixture_tables(rows))
    if plot:
        plot_mixtures(rows, out / "fkc_particles.png")
    return rows


def mixture_tables(rows: Sequence[dict]) -> str:
    """Per target: mode-weight RMSE and energy distance against K, FKC / SDE / exact floor."""
    parts = []
    for target in dict.fromkeys(r["target"] for r in rows):
        ks = sorted({r["particles"] for r in rows if r["target"] == target})
        cell = {(r["sampler"], r["particles"]): r for r in rows if r["target"] == target}
        lines = ["| K | " + " | ".join(str(k) for k in ks) + " |", "|---|" + "---|" * len(ks)]
        for sampler, metric, label in (("fkc", "mode_rmse", "FKC mode-weight RMSE"), ("sde", "mode_rmse", "SDE mode-weight RMSE"),
                                       ("fkc", "energy", "FKC energy distance"), ("sde", "energy", "SDE energy distance"),
                                       ("exact", "energy", "exact draws (floor)"),
                                       ("fkc", "us_per_particle", "FKC us / particle"), ("sde", "us_per_particle", "SDE us / particle")):
            lines.append(f"| {label} | " + " | ".join(_fmt(cell[(sampler, k)][metric]) for k in ks) + " |")
        parts.append(f"### {target}\n\n" + "\n".join(lines) + "\n")
    return "\n".join(parts)


def _fmt(v) -> str:
    return f"{v:.3g}" if isinstance(v, float) else "-"


def plot_mixtures(rows: Sequence[dict], path: Path) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = list(dict.fromkeys(r["target"] for r in rows))
    fig, axes = plt.subplots(2, len(targets), figsize=(3.6 * len(targets), 6.4), squeeze=False)
    style = {"fkc": ("C0", "-", "FKC"), "sde": ("C3", "--", "SDE, no weights"), "exact": ("k", ":", "exact draws")}
    for j, target in enumerate(targets):
        for i, metric in enumerate(("mode_rmse", "energy")):
            ax = axes[i][j]
            for sampler, (color, ls, label) in style.items():
                pts = sorted((r["particles"], r[metric]) for r in rows
                             if r["target"] == target and r["sampler"] == sampler and r[metric] != "")
                if pts:
                    ax.plot(*zip(*pts), color=color, ls=ls, marker="o", ms=3, label=label)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_title(target if i == 0 else "")
            ax.set_xlabel("particles per population K")
            ax.set_ylabel("mode-weight RMSE" if i == 0 else "energy distance to exact")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    axes[1][0].legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


# --- digits: guidance with and without FKC ---------------------------------------------------------------------------

def run_digits(ckpt: str, out: Path, scales: Sequence[float], num_samples: int, nfe: int, particles: int,
               seed: int, features_cache: str, options: dict) -> list[dict]:
    from framework.experiments import load_checkpoint
    from framework.metrics.features import feature_network
    from framework.metrics.image import ImageQuality
    from framework.samplers.generate import generate_samples

    experiment, module = load_checkpoint(ckpt)
    if not module.conditional:
        raise ValueError(f"{ckpt} is not class-conditional (model.class_conditional=true); guidance needs labels")
    module.eval()
    datamodule = experiment.datamodule(module)
    features = feature_network(datamodule, {"cache_dir": features_cache})
    classifier = features.extractor.classifier
    real = datamodule.real_images("train", None)
    classes = int(module.hparams.num_classes)
    labels = torch.tensor([(i // particles) % classes for i in range(num_samples)], dtype=torch.long)
    rows = []
    for w in scales:
        for weights in (True, False):
            sampler = build_sampler("fkc", target="cfg", num_particles=particles, weights=weights, **options)
            with module.ema_weights(), torch.no_grad():
                t0 = time.perf_counter()
                samples, stats = generate_samples(
                    module.net, module.schedule, sampler, nfe, range(num_samples), seed, module.data_shape,
                    batch_size=10 * particles, prediction=module.prediction, labels=labels, guidance_scale=float(w),
                    uncond_label=module.net.null_label)
                seconds = time.perf_counter() - t0
            metric = ImageQuality(features.extractor, real, seed=seed)
            metric.update(samples, range(num_samples))
            quality = metric.compute()
            with torch.no_grad():
                acc = float((classifier(samples.float().clamp(-1, 1)).argmax(-1) == labels).float().mean())
            distinct = int(torch.unique(samples.flatten(1), dim=0).shape[0])
            rows.append({"scale": w, "sampler": "fkc" if weights else "guided sde", "accuracy": acc, "distinct": distinct,
                         "fid": quality["fid"], "kid": quality["kid_mean"], "kid_std": quality["kid_std"],
                         "nfe": stats["nfe"], "seconds_per_sample": seconds / num_samples})
            print(f"w={w:g} {rows[-1]['sampler']:10s} accuracy {acc:.3f} distinct {distinct} FID {quality['fid']:.2f} "
                  f"KID {quality['kid_mean']:.3f} +- {quality['kid_std']:.3f} ({seconds:.0f} s)", flush=True)
    write_table(rows, out / "digits.csv", out / "digits.md")
    write_json(out / "digits.json", {"checkpoint": ckpt, "num_samples": num_samples, "nfe": nfe, "particles": particles,
                                     "seed": seed, "options": options, **features.describe()})
    return rows


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path(DEFAULT_OUT))
    p.add_argument("--particles", type=int, nargs="+", default=list(PARTICLES))
    p.add_argument("--total", type=int, default=16384, help="particles per (target, K) cell: R = total / K populations")
    p.add_argument("--nfe", type=int, default=200)
    p.add_argument("--ess-threshold", type=float, default=0.5)
    p.add_argument("--targets", nargs="+", default=None, help="a subset of the mixture targets")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--digits", default=None, help="a class-conditional digits checkpoint: run the guidance comparison")
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0, 4.0])
    p.add_argument("--num-samples", type=int, default=1000)
    p.add_argument("--digits-nfe", type=int, default=100)
    p.add_argument("--digits-particles", type=int, default=50)
    p.add_argument("--features-cache", default="runs/cache/features")
    p.add_argument("--clamp", type=float, default=0.0, help="FKC clamp_increments for the digits run (0: exact weights)")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.digits:
        run_digits(args.digits, args.out, args.scales, args.num_samples, args.digits_nfe, args.digits_particles,
                   args.seed, args.features_cache, {"ess_threshold": args.ess_threshold, "clamp_increments": args.clamp})
        print((args.out / "digits.md").read_text())
        return
    rows = run_mixtures(args.out, args.particles, args.total, args.nfe, args.seed, args.ess_threshold, args.targets,
                        plot=not args.no_plot)
    print("\n" + mixture_tables(rows) + f"\nresults in {args.out}")


if __name__ == "__main__":
    main()
