"""The image (score-based) experiment: data and module from a config, the after-training report, sample.py."""

from __future__ import annotations

import io
from contextlib import ExitStack
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from ..callbacks import DCCalibration
from ..config import call_with_section
from ..evaluation import EvaluationSettings, ImageTask, evaluation_settings
from ..io import atomic_write_bytes, save_image_grid, write_json, write_table
from ..modules.score import ScoreDiffusion
from ..samplers import build_from_config
from ..samplers.generate import generate_samples
from ..samplers.labels import sampler_label
from ..tuning.dc_artifacts import artifact_paths, is_calibrated_entry, resolve_calibrated
from ..tuning.dc_calibration import calibrate_dc, calibration_summary
from ..tuning.reference import ReferenceSolver, state_hash
from ..tuning.s3_search import SearchSettings, check_fitted, describe, search_for_network, searched_schedule_path
from .base import Experiment

DATASETS = ("digits", "files", "gmm")


def build_datamodule(data_cfg: dict, seed: int):
    """The image (or vector) data module named by data.name, with the section's remaining keys."""
    data_cfg = dict(data_cfg)
    name = data_cfg.pop("name", "digits")
    data_cfg.setdefault("seed", seed)
    if name == "digits":
        from datamodules.images import DigitsDataModule

        return call_with_section(DigitsDataModule, "data", data_cfg)
    if name == "files":
        from datamodules.images import ImageFileDataModule

        return call_with_section(ImageFileDataModule, "data", data_cfg)
    if name == "gmm":
        from datamodules.toy import GaussianMixtureDataModule

        return call_with_section(GaussianMixtureDataModule, "data", data_cfg)
    raise ValueError(f"unknown data.name {name!r}; allowed: {', '.join(DATASETS)}")


class ImageExperiment(Experiment):
    """ScoreDiffusion on images (or vectors) with the continuous samplers."""

    kind = "score"
    family = "continuous"
    module_class = ScoreDiffusion

    def build(self):
        datamodule = self.datamodule()
        return ScoreDiffusion(self.config, datamodule.data_shape, datamodule.num_classes), datamodule

    def datamodule(self, module=None):
        return build_datamodule(self.config["data"], self.seed)

    def evaluation_settings(self, section: dict) -> EvaluationSettings:
        return evaluation_settings(section, family=self.family)

    # --- DC-Solver calibration ----------------------------------------------------------
    #: where the DC artefacts are read from (sample.py: the checkpoint's folder; training: out_dir/checkpoints)
    checkpoint_dir = None

    def callbacks(self, out_dir: Path) -> list:
        """The shared callbacks, and DCCalibration after training when evaluation.dc_calibration.enabled."""
        callbacks = super().callbacks(out_dir)
        evaluation = self.config["evaluation"]
        if evaluation["dc_calibration"]["enabled"]:
            callbacks.append(DCCalibration(evaluation["dc_calibration"], Path(out_dir) / "checkpoints",
                                           evaluation["ref_err"], evaluation["seed"]))
        return callbacks

    def training_evaluation(self, section: dict) -> dict:
        """Without the `ratios: calibrated` entries: their ratios exist only once training has ended (checked here:
        they need evaluation.dc_calibration.enabled and NFEs it calibrates)."""
        calibrated = [dict(s) for s in section["samplers"] if is_calibrated_entry(dict(s))]
        dc = section["dc_calibration"]
        for entry in calibrated:
            label = sampler_label(entry)
            if not dc["enabled"]:
                raise ValueError(f"evaluation sampler {label!r} asks for calibrated DC ratios but "
                                 "evaluation.dc_calibration.enabled is false")
            missing = sorted(set(entry.get("nfe", section["nfe"])) - set(dc["nfe"]))
            if missing:
                raise ValueError(f"evaluation sampler {label!r} asks for calibrated DC ratios at nfe {missing}, "
                                 f"which evaluation.dc_calibration.nfe {list(dc['nfe'])} does not calibrate")
        return {**section, "samplers": [s for s in section["samplers"] if not is_calibrated_entry(dict(s))]}

    def with_calibrated_ratios(self, section: dict, module, checkpoint_dir: Path) -> dict:
        """`section` with every `ratios: calibrated` entry given the ratios saved for these EMA weights."""
        if not any(is_calibrated_entry(dict(s)) for s in section["samplers"]):
            return section
        with module.ema_weights():
            weights = state_hash(module.net)
        path = artifact_paths(checkpoint_dir)[0]
        samplers = [resolve_calibrated(dict(s), s.get("nfe", section["nfe"]), path, weights,
                                       float(section.get("guidance_scale", 1.0)))
                    if is_calibrated_entry(dict(s)) else s for s in section["samplers"]]
        return {**section, "samplers": samplers}

    def evaluate(self, module, datamodule, out_dir: Path, tag: str = "final", section=None) -> list[dict]:
        """The shared evaluation, with calibrated DC ratios read from next to the checkpoint; a usf schedule searched
        for other weights is refused first."""
        section = self.config["evaluation"] if section is None else section
        folder = Path(self.checkpoint_dir) if self.checkpoint_dir is not None else Path(out_dir) / "checkpoints"
        section = self.with_calibrated_ratios(section, module, folder)
        self.check_fitted_samplers(module, [e.sampler for e in self.evaluation_settings(section).entries])
        return super().evaluate(module, datamodule, out_dir, tag, section)

    def sample(self, args, module) -> None:
        self.checkpoint_dir = Path(args.ckpt).parent
        super().sample(args, module)

    def calibrate_cli(self, args, module) -> None:
        """sample.py --calibrate-dc: the checkpoint's evaluation.dc_calibration, artefacts next to the checkpoint."""
        evaluation = self.config["evaluation"]
        module.to(args.device).eval()
        rows = calibrate_dc(module, evaluation["dc_calibration"], Path(args.ckpt).parent, evaluation["ref_err"],
                            evaluation["seed"], progress=True)
        print(calibration_summary(rows))
        print(f"wrote {artifact_paths(Path(args.ckpt).parent)[0]}")

    def task(self, settings: EvaluationSettings, distributed: bool = True) -> ImageTask:
        return ImageTask(settings, distributed=distributed)

    def sampling_summary(self, module: ScoreDiffusion, datamodule, out_dir: Path) -> dict:
        """Grids and seconds per sample for the `sampling:` section (a quick look, no metrics)."""
        sampling = self.config["sampling"]
        n = int(sampling["num_samples"])
        rows = []
        with module.ema_weights():
            for s_cfg in sampling["samplers"]:
                label = sampler_label(s_cfg)
                sampler = build_from_config({k: v for k, v in dict(s_cfg).items() if k != "label"}, family=self.family)
                for nfe in sampling["nfe"]:
                    samples, stats = generate_samples(
                        module.net, module.schedule, sampler, int(nfe), range(n), int(sampling["seed"]),
                        module.data_shape, batch_size=int(sampling["batch_size"]), device=module.device,
                        prediction=module.prediction)
                    grid = out_dir / "samples" / f"{label}_nfe{nfe}.png"
                    save_image_grid(samples, grid)
                    rows.append({"sampler": label, "nfe": stats["nfe"], "seconds_per_sample": stats["seconds"] / n,
                                 "grid": str(grid)})
        write_table(rows, out_dir / "samples" / "summary.csv", out_dir / "samples" / "summary.md")
        return {"rows": rows}

    def write_samples(self, args, module: ScoreDiffusion, sampler) -> None:
        """A PNG grid, an .npz of the samples and a JSON of the settings (calibrated DC ratios resolved first)."""
        if is_calibrated_entry(sampler.to_config()):
            section = {"samplers": [sampler.to_config()], "nfe": [args.nfe], "guidance_scale": args.guidance_scale}
            folder = Path(self.checkpoint_dir) if self.checkpoint_dir is not None else Path(args.ckpt).parent
            sampler = build_from_config(self.with_calibrated_ratios(section, module, folder)["samplers"][0],
                                        family=self.family)
        labels = None
        if args.label is not None:
            if not module.conditional:
                raise ValueError("--label needs a class-conditional model (model.class_conditional=true)")
            labels = torch.full((args.num_samples,), int(args.label), dtype=torch.long)
        device = torch.device(args.device)
        self.check_fitted_samplers(module, [sampler])
        modules = [module, *getattr(args, "experts", [])]
        for other in modules[1:]:
            if other.schedule.to_config() != module.schedule.to_config() or other.prediction != module.prediction:
                raise ValueError("--ckpt: the checkpoints of a product must share the schedule and the prediction type")
        with ExitStack() as stack:
            for m in modules:
                m.to(device)
                stack.enter_context(m.ema_weights())
            nets = modules[0].net if len(modules) == 1 else tuple(m.net for m in modules)
            samples, stats = generate_samples(
                nets, module.schedule, sampler, args.nfe, range(args.num_samples), args.seed, module.data_shape,
                batch_size=args.batch_size, device=device, prediction=module.prediction, labels=labels,
                guidance_scale=args.guidance_scale, uncond_label=getattr(module.net, "null_label", None), progress=True,
            )
        out = Path(args.out)
        name = f"{sampler_label({'name': args.sampler, **args.options})}_nfe{stats['nfe']}"
        save_image_grid(samples, out / f"{name}.png")
        buf = io.BytesIO()
        np.savez_compressed(buf, samples=samples.numpy())
        atomic_write_bytes(out / f"{name}.npz", buf.getvalue())
        write_json(out / f"{name}.json", {"sampler": sampler.to_config(), "nfe": stats["nfe"], "seed": args.seed,
                                          "num_samples": args.num_samples, "seconds": stats["seconds"],
                                          "checkpoint": str(args.ckpt),
                                          "experts": [str(p) for p in getattr(args, "expert_paths", [])]})
        print(f"wrote {len(samples)} samples ({sampler.name}, nfe={stats['nfe']}, {stats['seconds']:.2f}s) to {out / (name + '.png')}")

    # --- S3 solver-schedule search --------------------------------------------------------
    def after_fit(self, module, datamodule, out_dir: Path) -> dict:
        """The base report, then (with evaluation.solver_search.after_fit) the S3 search at its NFEs."""
        search = self.config["evaluation"]["solver_search"]
        summary = {}
        if search["after_fit"] and search["nfe"]:
            rows = self.search_solvers(module, datamodule, out_dir / "checkpoints", search["nfe"])
            write_table(rows, out_dir / "checkpoints" / "usf_s3.csv", out_dir / "checkpoints" / "usf_s3.md")
            summary["solver_search"] = rows
        return {**super().after_fit(module, datamodule, out_dir), **summary}

    def search_solvers(self, module: ScoreDiffusion, datamodule, folder: Path, nfes, progress: bool = False,
                       budget: Optional[int] = None) -> list[dict]:
        """S3 at each NFE for the EMA weights (evaluation.solver_search; `budget` overrides its budget), schedules
        saved as folder/usf_s3_nfe<k>.json."""
        section, ref = self.config["evaluation"]["solver_search"], self.config["evaluation"]["ref_err"]
        budget = int(section["budget"]) if budget is None else int(budget)
        solver = ReferenceSolver(sampler=dict(ref["sampler"]), nfe=int(ref["nfe"]), cache_dir=ref["cache_dir"])
        settings = SearchSettings(candidates=int(section["candidates"]), per_stage=int(section["per_stage"]),
                                  use_predictor=bool(section["use_predictor"]))
        mean = data_mean(datamodule) if section["data_mean"] else None
        rows = []
        with module.ema_weights():
            for nfe in nfes:
                path = searched_schedule_path(folder / "last.ckpt", int(nfe))
                found = search_for_network(module.net, module.schedule, module.prediction, int(nfe), budget,
                                           int(section["seed"]), int(section["num_samples"]), module.data_shape, out=path,
                                           reference_solver=solver, data_mean=mean, settings=settings, progress=progress,
                                           device=module.device)
                meta = found["meta"]["search"]
                rows.append({"nfe": int(nfe), "ref_err": meta["error"], "evaluations": meta["evaluations"],
                             "decisions": describe(found), "schedule": str(path)})
        return rows

    def search_solver_cli(self, args, module) -> None:
        """sample.py --search-solver [--nfe K]: search next to --ckpt (at --nfe, else the section's NFEs) and print the table."""
        nfes = [args.nfe] if args.nfe is not None else self.config["evaluation"]["solver_search"]["nfe"]
        if not nfes:
            raise ValueError("--search-solver needs --nfe K (or evaluation.solver_search.nfe in the checkpoint's config)")
        module.to(args.device)
        rows = self.search_solvers(module, self.datamodule(module), Path(args.ckpt).parent, nfes, progress=True,
                                   budget=getattr(args, "budget", None))
        for r in rows:
            print(f"nfe={r['nfe']}: ref_err {r['ref_err']:.4g} after {r['evaluations']} true evaluations; "
                  f"{r['decisions']}; saved to {r['schedule']}")

    def check_fitted_samplers(self, module, samplers) -> None:
        """Refuse a usf sampler whose schedule file was searched for other weights or another schedule."""
        for sampler in samplers:
            spec = sampler.options.get("schedule") if sampler.name == "usf" else None
            if isinstance(spec, str):
                with module.ema_weights():
                    check_fitted(spec, module.net, module.schedule, module.prediction)

    def cli_evaluation(self, args) -> dict:
        evaluation = super().cli_evaluation(args)
        evaluation["guidance_scale"] = args.guidance_scale
        return evaluation


def data_mean(datamodule) -> list | None:
    """The training data's mean sample (nested list), for the 'mean_x0' analytical first step; None when unknown."""
    for name in ("real_images", "real_samples"):
        if hasattr(datamodule, name):
            return getattr(datamodule, name)("train").to(torch.float64).mean(0).tolist()
    return None

