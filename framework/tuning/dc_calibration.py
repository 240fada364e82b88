"""Post-training DC calibration of one model: search DC-Solver's ratios at every configured NFE (and guidance
scale), fit the cascade when there are enough configurations, save both next to the checkpoint and measure
the reference-solution error before and after on noises the search did not see.

Used by the DCCalibration callback after training and by `sample.py --calibrate-dc`; the settings are the
config's `evaluation.dc_calibration` section (framework.schema.DCCalibrationSection holds the defaults).
`module` is anything with `net`, `schedule`, `prediction`, `data_shape`, `device`, `conditional` and an
`ema_weights()` context (a ScoreDiffusion); no Lightning here.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from ..diffusion.denoiser import Denoiser
from ..io import write_table
from ..metrics.relative_error import relative_errors
from ..samplers import build_from_config
from ..samplers.generate import generate_samples
from ..samplers.labels import sampler_label
from ..samplers.noise import randn, sample_generators
from .cascade_regression import CascadeRegression
from .dc_artifacts import RATIO_OPTION, artifact_paths, cpr_key, ratio_key, save_cpr, save_ratios
from .dc_search import search_dc
from .reference import ReferenceSolver, reference_solution, state_hash

Log = Callable[[str, float], None]


def _labels(module, indices: Sequence[int]) -> Optional[torch.Tensor]:
    """Class labels i % num_classes for sample i of a class-conditional model (as the evaluation)."""
    if not getattr(module, "conditional", False):
        return None
    num_classes = int(module.net.num_classes)
    return torch.tensor([i % num_classes for i in indices], dtype=torch.long)


def cpr_path(folder: Path, label: str) -> Path:
    """The CPR file of one calibrated sampler entry: dc_cpr.json for dc_solver, dc_cpr_<label>.json otherwise."""
    default = artifact_paths(folder)[1]
    return default if label == "dc_solver" else default.with_name(f"dc_cpr_{label}.json")


def reference_errors(module, sampler, nfe: int, indices: Sequence[int], seed: int, reference, guidance_scale: float,
                     batch_size: int) -> tuple[float, float]:
    """(mean relative error, MSE) of `sampler` at `nfe` to the reference solution from the same noises."""
    labels = _labels(module, indices)
    x, _ = generate_samples(module.net, module.schedule, sampler, nfe, indices, seed, module.data_shape,
                            batch_size=batch_size, device=module.device, prediction=module.prediction, labels=labels,
                            guidance_scale=guidance_scale, uncond_label=getattr(module.net, "null_label", None))
    target = reference.target_for(sampler)
    return float(relative_errors(x, target).mean()), float(torch.mean((x.double() - target.double()) ** 2))


def calibrate_dc(module, section: dict, checkpoint_dir: Path, ref_err: dict, eval_seed: int,
                 log: Optional[Log] = None, progress: bool = False) -> list[dict]:
    """Run the calibration of `section` (evaluation.dc_calibration) on the module's EMA weights; write
    dc_ratios.json and the CPR files into `checkpoint_dir`; return one row per (sampler, guidance, NFE).

    The ratios are searched on noises (section.seed, i), i < section.num_noises; the errors before and after
    are measured on the evaluation's first section.eval_noises noises (eval_seed, i) against the evaluation's
    reference solution `ref_err` (evaluation.ref_err: the same cached solution the ref_err column uses).
    """
    checkpoint_dir = Path(checkpoint_dir)
    ratios_file = artifact_paths(checkpoint_dir)[0]
    search_idx = list(range(int(section["num_noises"])))
    eval_idx = list(range(int(section["eval_noises"])))
    batch = max(1, len(eval_idx))
    search_ref = ReferenceSolver(dict(section["reference"]["sampler"]), int(section["reference"]["nfe"]),
                                 ref_err["cache_dir"])
    eval_ref = ReferenceSolver(dict(ref_err["sampler"]), int(ref_err["nfe"]), ref_err["cache_dir"])
    rows: list[dict] = []
    ema = getattr(module, "ema_weights", None)
    with (ema() if ema is not None else nullcontext()), torch.no_grad():
        weights = state_hash(module.net)
        x_T = randn((len(search_idx), *module.data_shape), sample_generators(int(section["seed"]), search_idx))
        x_T = x_T.to(module.device)
        for cfg in section["samplers"]:
            cfg = dict(cfg)
            label = sampler_label(cfg)
            records = []
            for scale in section["guidance_scales"]:
                reference = reference_solution(
                    module.net, module.schedule, eval_idx, eval_seed, module.data_shape, eval_ref, module.prediction,
                    batch, module.device, labels=_labels(module, eval_idx), guidance_scale=float(scale),
                    uncond_label=getattr(module.net, "null_label", None))
                den = Denoiser(module.net, module.schedule, module.prediction, _labels(module, search_idx),
                               float(scale), getattr(module.net, "null_label", None))
                for nfe in section["nfe"]:
                    rows.append(_calibrate_one(module, cfg, label, int(nfe), float(scale), den, x_T, search_ref,
                                               section, reference, eval_idx, eval_seed, batch, weights, ratios_file,
                                               progress))
                    # the cascade's NFE is the number of steps (one ratio each; final_denoise adds an NFE, no step)
                    records.append((len(rows[-1]["ratios"]), float(scale), rows[-1]["ratios"]))
                    if log is not None:
                        for metric in ("ref_err_before", "ref_err_after", "search_seconds"):
                            log(f"dc/{label}/nfe{nfe}/{metric}", rows[-1][metric])
            if len(records) >= int(section["cpr_min_records"]):
                sampler = build_from_config({k: v for k, v in cfg.items() if k != "label"})
                cascade = CascadeRegression(dc_order=sampler.dc_order()).fit(records)
                save_cpr(cpr_path(checkpoint_dir, label), cascade, cpr_key(weights, sampler))
    table = [{k: v for k, v in r.items() if k != "ratios"} | {"ratios": " ".join(f"{x:.3f}" for x in r["ratios"])}
             for r in rows]
    if table:
        write_table(table, checkpoint_dir / "dc_calibration.csv", checkpoint_dir / "dc_calibration.md")
    return rows


def _calibrate_one(module, cfg: dict, label: str, nfe: int, scale: float, den: Denoiser, x_T: torch.Tensor,
                   search_ref: ReferenceSolver, section: dict, reference, eval_idx, eval_seed: int, batch: int,
                   weights: str, ratios_file: Path, progress: bool) -> dict:
    """Search one (sampler, guidance, NFE), save its ratios, and measure the errors before / after."""
    option = RATIO_OPTION.get(cfg.get("name"))
    if option is None:
        raise ValueError(f"evaluation.dc_calibration.samplers: {cfg.get('name')!r} cannot be calibrated; "
                         f"allowed: {', '.join(RATIO_OPTION)}")
    plain = build_from_config({k: v for k, v in cfg.items() if k != "label"})
    result = search_dc(den, module.schedule, plain, nfe, x_T, reference=search_ref,
                       iterations=int(section["iterations"]), lr=float(section["lr"]), progress=progress)
    tuned = build_from_config({**{k: v for k, v in cfg.items() if k != "label"}, option: result.ratios})
    start = time.perf_counter()
    before, mse_before = reference_errors(module, plain, nfe, eval_idx, eval_seed, reference, scale, batch)
    after, mse_after = reference_errors(module, tuned, nfe, eval_idx, eval_seed, reference, scale, batch)
    save_ratios(ratios_file, ratio_key(weights, plain, nfe, scale), result.ratios,
                search={"noises": len(x_T), "seed": int(section["seed"]), "iterations": int(section["iterations"]),
                        "lr": float(section["lr"]), "reference": {"sampler": search_ref.sampler, "nfe": search_ref.nfe},
                        "seconds": round(result.seconds, 2), "reference_seconds": round(result.reference_seconds, 2)},
                ref_err={"before": before, "after": after, "mse_before": mse_before, "mse_after": mse_after,
                         "eval_noises": len(eval_idx), "eval_seed": eval_seed})
    return {"sampler": label, "guidance_scale": scale, "nfe": nfe, "ref_err_before": before, "ref_err_after": after,
            "mse_before": mse_before, "mse_after": mse_after, "search_seconds": result.seconds,
            "reference_seconds": result.reference_seconds,
            "eval_seconds": time.perf_counter() - start, "ratios": result.ratios}


def calibration_summary(rows: Sequence[dict]) -> str:
    """One line per row: sampler, NFE, ref_err before -> after, search seconds."""
    return "\n".join(f"DC calibration {r['sampler']} nfe={r['nfe']} w={r['guidance_scale']:g}: ref_err "
                     f"{r['ref_err_before']:.4f} -> {r['ref_err_after']:.4f} (search {r['search_seconds']:.1f}s)"
                     for r in rows)
