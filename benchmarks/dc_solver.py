"""DC-Solver on a trained checkpoint: UniPC vs DC-Solver (searched ratios, and CPR-predicted ratios at an NFE
that was not searched) and DPM-Solver++ vs DPM-Solver++ with dynamic compensation.

1. Search (framework.tuning.dc_calibration.calibrate_dc, the code behind DCCalibration): the ratios of
   dc_solver and of dpmsolver++ at each NFE on `--noises` noises (seed `--search-seed`), against the 200-step
   DDIM reference trajectory; the wall time of each search is reported.
2. CPR: a cascade fitted to the dc_solver ratios of every NFE but `--cpr-nfe`, used at `--cpr-nfe`.
3. Evaluation (framework.experiments' evaluation: FID, KID, precision, recall and ref_err, i.e. the mean
   relative distance to the DPM-Solver++ 3M 200-NFE solution of the same noises) on `--num-samples` samples
   of seed `--seed`: noises the search never saw. The paper's metric, the MSE to that same reference
   solution, is computed from the saved samples of the first `ref_err.num_samples`.

Nothing is written next to the checkpoint: the artefacts go to `--out`.

    python -m benchmarks.dc_solver --ckpt runs/digits/checkpoints/last.ckpt [--nfe 5 6 8 10] [--num-samples 1000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Optional, Sequence

import numpy as np
import torch

from framework.experiments import load_checkpoint
from framework.io import markdown_table, write_json, write_table
from framework.tuning.cascade_regression import CascadeRegression
from framework.tuning.dc_calibration import calibrate_dc
from framework.tuning.reference import ReferenceSolver, reference_solution

DEFAULT_OUT = "benchmarks/results/dc_solver"
SEARCHED = [{"name": "dc_solver"}, {"name": "dpmsolver++"}]


def search(module, experiment, nfes: Sequence[int], noises: int, seed: int, out: Path) -> list[dict]:
    """calibrate_dc for dc_solver and dpmsolver++ at `nfes` (artefacts into `out`)."""
    evaluation = experiment.config["evaluation"]
    section = {**evaluation["dc_calibration"], "samplers": SEARCHED, "nfe": list(nfes), "num_noises": noises,
               "seed": seed, "cpr_min_records": 10**9}
    return calibrate_dc(module, section, out, evaluation["ref_err"], evaluation["seed"], progress=True)


def sampler_entries(rows: Sequence[dict], nfes: Sequence[int], cpr_nfe: Optional[int]) -> tuple[list[dict], dict]:
    """The evaluation's sampler entries, and the CPR's predicted ratios (fitted without `cpr_nfe`)."""
    ratios = {name: {r["nfe"]: r["ratios"] for r in rows if r["sampler"] == name} for name in ("dc_solver", "dpmsolver++")}
    entries = [{"name": "unipc", "label": "unipc", "nfe": list(nfes)},
               {"name": "dc_solver", "label": "dc_solver", "ratios": ratios["dc_solver"], "nfe": list(nfes)},
               {"name": "dpmsolver++", "label": "dpmsolver++", "nfe": list(nfes)},
               {"name": "dpmsolver++", "label": "dpmsolver++_dc", "dc_ratios": ratios["dpmsolver++"], "nfe": list(nfes)}]
    cpr = {}
    if cpr_nfe is not None:
        records = [(len(r), 1.0, r) for nfe, r in ratios["dc_solver"].items() if nfe != cpr_nfe]
        cascade = CascadeRegression().fit(records)
        cpr = {"fitted_on": sorted(n for n, *_ in records), "nfe": cpr_nfe, "ratios": cascade.predict(cpr_nfe),
               "coefficients": cascade.coefficients, "residual": cascade.residual()}
        entries.insert(2, {"name": "dc_solver", "label": "dc_solver_cpr", "ratios": {cpr_nfe: cpr["ratios"]},
                           "nfe": [cpr_nfe]})
    return entries, cpr


def mse_to_reference(module, experiment, section: dict, eval_dir: Path, entries: Sequence[dict]) -> dict:
    """{(label, nfe): MSE of the saved samples to the reference solution}, over the first ref_err.num_samples."""
    ref = section["ref_err"]
    count = min(int(ref["num_samples"]), int(section["num_samples"]))
    solver = ReferenceSolver(dict(ref["sampler"]), int(ref["nfe"]), ref["cache_dir"])
    with module.ema_weights():
        solution = reference_solution(module.net, module.schedule, range(count), int(section["seed"]), module.data_shape,
                                      solver, module.prediction, count, module.device)
    out = {}
    for e in entries:
        for nfe in e["nfe"]:
            x = torch.from_numpy(np.load(eval_dir / "samples" / f"{e['label']}_nfe{nfe}.npz")["samples"][:count])
            out[(e["label"], nfe)] = float(torch.mean((x.double() - solution.x.double()) ** 2))
    return out


def table(rows: Sequence[dict], metric: str, labels: Sequence[str], nfes: Sequence[int], fmt: str) -> str:
    """One line per sampler, one column per NFE."""
    cell = {(r["sampler"], r["nfe"]): r[metric] for r in rows}
    lines = ["| sampler | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---|" + "---|" * len(nfes)]
    for label in labels:
        values = [cell.get((label, n)) for n in nfes]
        lines.append(f"| {label} | " + " | ".join("-" if v is None else format(v, fmt) for v in values) + " |")
    return "\n".join(lines)


def run(ckpt: Path, nfes: Sequence[int], num_samples: int, noises: int, search_seed: int, cpr_nfe: Optional[int],
        out: Path, threads: int) -> list[dict]:
    torch.set_num_threads(threads)
    experiment, module = load_checkpoint(ckpt)
    module.eval()
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    searched = search(module, experiment, nfes, noises, search_seed, out)
    entries, cpr = sampler_entries(searched, nfes, cpr_nfe)
    section = {**experiment.config["evaluation"], "samplers": entries, "nfe": list(nfes), "num_samples": num_samples,
               "batch_size": min(500, num_samples), "save_samples": True, "grid_size": 0, "out_subdir": "eval",
               "every_n_val_epochs": 0}
    section["dc_calibration"] = {**section["dc_calibration"], "enabled": False}
    evaluated = experiment.evaluate(module, experiment.datamodule(module), out, tag="dc_solver", section=section)
    mse = mse_to_reference(module, experiment, section, out / "eval" / "dc_solver", entries)
    search_seconds = {(r["sampler"], r["nfe"]): r["search_seconds"] for r in searched}
    reference_seconds = {(r["sampler"], r["nfe"]): r["reference_seconds"] for r in searched}
    rows = []
    for r in evaluated:
        if r["sampler"] == "real_data":
            continue
        name = {"dc_solver": "dc_solver", "dpmsolver++_dc": "dpmsolver++"}.get(r["sampler"])
        rows.append({**r, "mse": mse[(r["sampler"], r["nfe"])],
                     "search_seconds": search_seconds.get((name, r["nfe"])) if name else None,
                     "reference_seconds": reference_seconds.get((name, r["nfe"])) if name else None})
    write_table(rows, out / "dc_solver.csv", out / "dc_solver.md")
    write_json(out / "dc_solver.json", {"rows": rows, "searched": searched, "cpr": cpr, "checkpoint": str(ckpt),
                                        "num_samples": num_samples, "search_noises": noises, "search_seed": search_seed,
                                        "seconds": round(time.perf_counter() - start, 1)})
    labels = [e["label"] for e in entries]
    for metric, fmt in (("ref_err", ".4f"), ("mse", ".2e"), ("fid", ".3f"), ("kid_mean", ".4f"), ("search_seconds", ".1f"),
                        ("reference_seconds", ".1f")):
        print(f"\n{metric}\n" + table(rows, metric, labels, nfes, fmt))
    if cpr:
        print(f"\nCPR fitted on NFE {cpr['fitted_on']} (rms residual {cpr['residual']:.3f}), ratios at NFE {cpr['nfe']}: "
              + " ".join(f"{x:.3f}" for x in cpr["ratios"]))
    print("\nsearched ratios\n" + markdown_table([{"sampler": r["sampler"], "nfe": r["nfe"],
                                                   "ratios": " ".join(f"{x:.3f}" for x in r["ratios"])} for r in searched]))
    print(f"\ntotal {time.perf_counter() - start:.0f}s; results in {out}")
    return rows


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", type=Path, required=True)
    p.add_argument("--nfe", type=int, nargs="+", default=[5, 6, 8, 10])
    p.add_argument("--num-samples", type=int, default=1000, help="evaluation samples (seed --seed of the checkpoint's evaluation)")
    p.add_argument("--noises", type=int, default=10, help="search noises")
    p.add_argument("--search-seed", type=int, default=1, help="seed of the search noises (the evaluation's is another)")
    p.add_argument("--cpr-nfe", type=int, default=6, help="NFE predicted by a CPR fitted on the other NFE (0: none)")
    p.add_argument("--out", type=Path, default=Path(DEFAULT_OUT))
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args(argv)
    if args.cpr_nfe and args.cpr_nfe not in args.nfe:
        raise SystemExit(f"--cpr-nfe {args.cpr_nfe} must be one of --nfe {args.nfe} (it is compared with the searched ratios)")
    run(args.ckpt, args.nfe, args.num_samples, args.noises, args.search_seed, args.cpr_nfe or None, args.out, args.threads)


if __name__ == "__main__":
    main()
