"""The Time-Shift Sampler (Li et al., ICLR 2024) on a trained image model, with and without the shift.

Three parts, all on one checkpoint (the digits model of `python train.py configs/digits.yaml` by default):

* mechanism: along DDIM's trajectory (NFE 10 and 20), the mean per-sample variance of x_t against the variance
  the forward process gives at t (alpha_t^2 v + sigma_t^2, v the training images' mean per-sample variance) --
  the exposure-bias gap the paper plots -- without and with the shift, and how far the shift moves the times;
* table: DDIM, DDPM, F-PNDM and DPM-Solver++ (2M) with and without the shift (the project's defaults otherwise,
  window 30, cutoff 300) at NFE 5, 10, 20 (F-PNDM at 12, 19 = the paper's 10 steps, and 20): FID/KID in the
  project's digit features and the reference-solution error, mean and standard error over the seeds of the
  sampling noise (x_T and, for DDPM, the per-step noise);
* sweep: DDIM at NFE 10 over windows and cutoffs, and the 'data' variance reference.

    python -m benchmarks.time_shift [--ckpt runs/digits/checkpoints/last.ckpt] [--seeds 0 1 2] [--n 1000]
        [--sweep-n 500] [--out benchmarks/results/time_shift] [--parts mechanism table sweep]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Optional, Sequence

import torch

from framework.diffusion import Denoiser
from framework.experiments import load_checkpoint
from framework.io import atomic_write_text
from framework.samplers import build_sampler, randn, sample_generators

DEFAULT_CKPT = "runs/digits/checkpoints/last.ckpt"
DEFAULT_OUT = "benchmarks/results/time_shift"
METRICS = ("fid", "kid_mean", "ref_err")
#: (label, sampler entry, NFE list): the paper's four samplers, each without and with the shift
TABLE = [
    ("ddim", {"name": "ddim"}, [5, 10, 20]),
    ("ts_ddim", {"name": "ts_ddim"}, [5, 10, 20]),
    ("ddpm", {"name": "ddpm"}, [5, 10, 20]),
    ("ts_ddpm", {"name": "ts_ddpm"}, [5, 10, 20]),
    ("fpndm", {"name": "pndm", "method": "F-PNDM"}, [12, 19, 20]),
    ("ts_fpndm", {"name": "ts_fpndm"}, [12, 19, 20]),
    ("dpmsolver++", {"name": "dpmsolver++"}, [5, 10, 20]),
    ("ts_dpmsolver++", {"name": "dpmsolver++", "time_shift": True}, [5, 10, 20]),
]
SWEEP_WINDOWS = (10, 30, 80)
SWEEP_CUTOFFS = (0, 300, 500)


# --- mechanism --------------------------------------------------------------------------------------


def data_variance(experiment, module) -> float:
    """v: the mean over training images of the per-image variance over pixels, in the model's [-1, 1] range."""
    images = experiment.datamodule(module).real_images("train")
    return float(images.reshape(len(images), -1).to(torch.float64).var(dim=1).mean())


@torch.no_grad()
def trajectory_variance(module, sampler, nfe: int, n: int, seed: int) -> list[dict]:
    """Per step: t_next, the mean and sd over samples of var(x_{t_next}), and the mean |shift| (DDPM steps) used."""
    gens = sample_generators(seed, list(range(n)), device="cpu")
    x_T = randn((n, *module.data_shape), gens)
    rows: list[dict] = []

    def record(info: dict) -> None:
        var = info["x"].reshape(n, -1).to(torch.float64).var(dim=1)
        shift = info.get("t_shift")
        moved = (shift - float(info["t"])).abs() * 1000 if shift is not None else torch.zeros(n, dtype=torch.float64)
        rows.append({"t": float(info["t"]), "t_next": float(info["t_next"]), "var_mean": float(var.mean()),
                     "var_sd": float(var.std()), "shift_steps": float(moved.mean())})

    with module.ema_weights():
        den = Denoiser(module.net, module.schedule, prediction=module.prediction)
        sampler.sample(den, x_T, nfe, module.schedule, generator=gens, callback=record)
    return rows


def mechanism(experiment, module, v: float, n: int, seed: int) -> list[dict]:
    schedule = module.schedule
    samplers = {"ddim": build_sampler("ddim"), "ts_ddim": build_sampler("ts_ddim"),
                "ts_ddim data": build_sampler("ts_ddim", ts_reference="data", ts_data_var=v)}
    out = []
    for nfe in (10, 20):
        for label, sampler in samplers.items():
            for r in trajectory_variance(module, sampler, nfe, n, seed):
                t = torch.tensor(r["t_next"], dtype=torch.float64)
                expected = float(schedule.alpha(t) ** 2 * v + schedule.sigma(t) ** 2)
                out.append({"sampler": label, "nfe": nfe, **r, "expected": expected,
                            "gap": r["var_mean"] - expected, "noise_only": float(schedule.sigma(t) ** 2)})
    return out


# --- table and sweep ---------------------------------------------------------------------------------


def evaluate(experiment, module, datamodule, entries: Sequence[tuple], n: int, seeds: Sequence[int], out: Path,
             tag: str) -> list[dict]:
    """Every entry at its NFE list, once per seed, through the project's evaluation (FID/KID, ref_err)."""
    rows = []
    for seed in seeds:
        section = dict(experiment.config["evaluation"])
        section.update(samplers=[{**entry, "label": label, "nfe": list(nfe)} for label, entry, nfe in entries],
                       num_samples=n, seed=seed, grid_size=0, save_samples=False)
        start = time.perf_counter()
        got = experiment.evaluate(module, datamodule, out / f"seed{seed}", tag=tag, section=section)
        print(f"  {tag} seed {seed}: {time.perf_counter() - start:.0f} s", flush=True)
        rows += [{**r, "seed": seed} for r in got]
    return rows


def summarise(rows: Sequence[dict]) -> list[dict]:
    """Mean and standard error over seeds per (sampler, nfe)."""
    keys = sorted({(r["sampler"], r["nfe"]) for r in rows}, key=lambda k: [r["sampler"] for r in rows].index(k[0]))
    out = []
    for label, nfe in keys:
        group = [r for r in rows if r["sampler"] == label and r["nfe"] == nfe]
        entry = {"sampler": label, "nfe": nfe, "seeds": len(group)}
        for m in METRICS:
            vals = [r[m] for r in group if r.get(m) is not None]
            if vals:
                mean = sum(vals) / len(vals)
                se = math.sqrt(sum((x - mean) ** 2 for x in vals) / (len(vals) - 1) / len(vals)) if len(vals) > 1 else float("nan")
                entry[m], entry[m + "_se"] = mean, se
        out.append(entry)
    return out


def _cell(row: Optional[dict], metric: str) -> str:
    if row is None or metric not in row:
        return ""
    digits = 4 if metric == "ref_err" else 3
    return f"{row[metric]:.{digits}f} ± {row[metric + '_se']:.{digits}f}"


def table_markdown(summary: Sequence[dict], metric: str) -> str:
    nfes = sorted({r["nfe"] for r in summary if r["sampler"] != "real_data"})
    labels = list(dict.fromkeys(r["sampler"] for r in summary if r["sampler"] != "real_data"))
    lines = [f"| sampler | {' | '.join(f'{metric} @{k}' for k in nfes)} |", "|---" * (len(nfes) + 1) + "|"]
    for label in labels:
        cells = [_cell(next((r for r in summary if r["sampler"] == label and r["nfe"] == k), None), metric) for k in nfes]
        lines.append(f"| {label} | {' | '.join(cells)} |")
    return "\n".join(lines)


def sweep_entries(v: float) -> list[tuple]:
    entries = [("ddim", {"name": "ddim"}, [10])]
    entries += [(f"w{w}_c{c}", {"name": "ts_ddim", "ts_window": w, "ts_cutoff": c}, [10])
                for w in SWEEP_WINDOWS for c in SWEEP_CUTOFFS]
    entries += [(f"w{w}_c300_data", {"name": "ts_ddim", "ts_window": w, "ts_reference": "data", "ts_data_var": v}, [10])
                for w in (10, 30, 80)]
    entries += [(f"w{w}_c300_network", {"name": "ts_ddim", "ts_window": w, "ts_apply": "network"}, [10]) for w in (10, 30)]
    return entries


# --- plot ---------------------------------------------------------------------------------------------


def plot(mech: Sequence[dict], summary: Sequence[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    ax = axes[0]
    for label, style in (("ddim", "-"), ("ts_ddim", "--"), ("ts_ddim data", ":")):
        pts = [r for r in mech if r["sampler"] == label and r["nfe"] == 10]
        ax.plot([r["t_next"] for r in pts], [r["gap"] for r in pts], style, marker="o", label=f"{label} (NFE 10)")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set(xlabel="t", ylabel="mean var(x_t) - (alpha^2 v + sigma^2)", title="exposure-bias gap along the trajectory")
    ax.invert_xaxis()
    ax.legend(fontsize=8)
    for ax, metric in zip(axes[1:], ("fid", "ref_err")):
        for base, shifted, colour in (("ddim", "ts_ddim", "C0"), ("ddpm", "ts_ddpm", "C1"),
                                      ("fpndm", "ts_fpndm", "C2"), ("dpmsolver++", "ts_dpmsolver++", "C3")):
            for label, style in ((base, "-"), (shifted, "--")):
                pts = sorted((r["nfe"], r[metric], r[metric + "_se"]) for r in summary if r["sampler"] == label and metric in r)
                if pts:
                    ax.errorbar([p[0] for p in pts], [p[1] for p in pts], yerr=[p[2] for p in pts], fmt=style,
                                color=colour, marker="o", ms=3, capsize=2, label=label)
        ax.set(xlabel="NFE", ylabel=metric, yscale="log", title=f"{metric} (mean ± SE over seeds)")
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --- main -------------------------------------------------------------------------------------------------


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--ckpt", default=DEFAULT_CKPT)
    p.add_argument("--out", default=DEFAULT_OUT)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--n", type=int, default=1000, help="samples per (sampler, NFE, seed) in the table")
    p.add_argument("--sweep-n", type=int, default=500, help="samples per (setting, seed) in the sweep")
    p.add_argument("--parts", nargs="+", default=["mechanism", "table", "sweep"], choices=["mechanism", "table", "sweep"])
    args = p.parse_args(argv)
    out = Path(args.out)
    experiment, module = load_checkpoint(args.ckpt)
    module.eval()
    datamodule = experiment.datamodule(module)
    v = data_variance(experiment, module)
    results: dict = {"checkpoint": str(args.ckpt), "seeds": args.seeds, "data_variance": v}
    if (out / "results.json").is_file():
        results = {**json.loads((out / "results.json").read_text()), **results}
    print(f"data variance v = {v:.4f}")
    if "table" in args.parts:
        rows = evaluate(experiment, module, datamodule, TABLE, args.n, args.seeds, out / "table", "table")
        results["table_rows"], results["table"] = rows, summarise(rows)
        atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    if "sweep" in args.parts:
        rows = evaluate(experiment, module, datamodule, sweep_entries(v), args.sweep_n, args.seeds, out / "sweep", "sweep")
        results["sweep_rows"], results["sweep"] = rows, summarise(rows)
        atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    if "mechanism" in args.parts:
        results["mechanism"] = mechanism(experiment, module, v, n=500, seed=args.seeds[0])
        print("\n## exposure-bias gap (NFE 10): t_next, expected, ddim, ts_ddim, ts_ddim data, mean |shift| (DDPM steps)")
        by = {(r["sampler"], r["nfe"], round(r["t_next"], 4)): r for r in results["mechanism"]}
        for r in [r for r in results["mechanism"] if r["sampler"] == "ddim" and r["nfe"] == 10]:
            k = round(r["t_next"], 4)
            ts, tsd = by[("ts_ddim", 10, k)], by[("ts_ddim data", 10, k)]
            print(f"{r['t_next']:.3f}  {r['expected']:.4f}  {r['var_mean']:.4f}  {ts['var_mean']:.4f}  {tsd['var_mean']:.4f}"
                  f"  {ts['shift_steps']:.1f} / {tsd['shift_steps']:.1f}")
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    for part in ("table", "sweep"):
        if part in results:
            for metric in METRICS:
                print(f"\n## {part}: {metric}\n" + table_markdown(results[part], metric))
    if "mechanism" in results and "table" in results:
        plot(results["mechanism"], results["table"], out / "time_shift.png")
        print(f"\nwrote {out / 'time_shift.png'}")


if __name__ == "__main__":
    main()
