"""The image (score-based) experiment: data and module from a config, the after-training report, sample.py."""

from __future__ import annotations

from pathlib import Path

import torch

from ..config import call_with_section, to_dict
from ..generate import generate_samples
from ..io import save_image_grid, write_json, write_table
from ..samplers import build_from_config, build_sampler
from .score_module import ScoreDiffusion, load_score_module

DATASETS = ("digits", "files", "gmm")


def build_datamodule(data_cfg: dict, seed: int):
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


def build_experiment(cfg):
    config = to_dict(cfg)
    datamodule = build_datamodule(config.get("data", {}), int(config.get("seed", 0)))
    module = ScoreDiffusion(config, datamodule.data_shape, datamodule.num_classes)
    return module, datamodule


def load_module(path, map_location="cpu"):
    return load_score_module(path, map_location)


def sampler_label(sampler_cfg: dict) -> str:
    """A short, unique, readable name for a sampler config, e.g. 'deis(order=3)'."""
    opts = {k: v for k, v in sampler_cfg.items() if k not in ("name", "label")}
    if "label" in sampler_cfg:
        return str(sampler_cfg["label"])
    return sampler_cfg["name"] + (f"({', '.join(f'{k}={v}' for k, v in opts.items())})" if opts else "")


def build_callbacks(cfg, out_dir: Path) -> list:
    """Training callbacks: reproducible data order, and the sampler evaluation every N validation epochs.

    The `evaluation:` section is validated here (every sampler built, every NFE checked), so a bad
    entry fails before training starts.
    """
    from ..callbacks import EpochSeededShuffle, ImageTask, SamplerEvaluation, evaluation_settings

    config = to_dict(cfg)
    settings = evaluation_settings(config.get("evaluation", {}))
    callbacks = [EpochSeededShuffle(int(config.get("seed", 0)))]
    if settings.enabled and settings.every_n_val_epochs:
        callbacks.append(SamplerEvaluation(settings, ImageTask(settings), out_dir))
    return callbacks


def evaluate(evaluation: dict, module: ScoreDiffusion, datamodule, out_dir: Path, tag: str = "final") -> list[dict]:
    """Run the sampler evaluation once in this process (after training, or from sample.py); rows of the table."""
    from ..callbacks import Evaluator, ImageTask, evaluation_settings

    settings = evaluation_settings(evaluation)
    task = ImageTask(settings, distributed=False)
    task.prepare(datamodule)
    return Evaluator(settings, task, out_dir).run(module, tag, prefix=tag)


def after_fit(cfg, module: ScoreDiffusion, datamodule, out_dir: Path) -> dict:
    """Sample with every configured sampler at every NFE; write grids and a timing table (rank 0).

    With `evaluation.after_fit` (and samplers listed) the full evaluation runs too: eval/final/
    gets the table (CSV, markdown, JSON), the quality-vs-NFE plot and a grid per sampler.
    """
    summary = _sampling_summary(cfg, module, out_dir)
    evaluation = to_dict(cfg).get("evaluation", {}) or {}
    from ..callbacks import evaluation_settings

    settings = evaluation_settings(evaluation)
    if settings.enabled and settings.after_fit:
        module.eval()
        summary["evaluation"] = evaluate(evaluation, module, datamodule, out_dir)
    return summary


def _sampling_summary(cfg, module: ScoreDiffusion, out_dir: Path) -> dict:
    """Grids and seconds per sample for the `sampling:` section (a quick look, no metrics)."""
    sampling = to_dict(cfg).get("sampling", {})
    rows = []
    with module.ema_weights():
        for s_cfg in sampling.get("samplers", [{"name": "ddim"}]):
            s_cfg = dict(s_cfg)
            label = sampler_label(s_cfg)
            sampler = build_from_config({k: v for k, v in s_cfg.items() if k != "label"})
            for nfe in sampling.get("nfe", [10]):
                samples, stats = _generate(module, sampler, int(nfe), sampling)
                grid = out_dir / "samples" / f"{label.replace(' ', '')}_nfe{nfe}.png"
                save_image_grid(samples, grid)
                rows.append({"sampler": label, "nfe": stats["nfe"], "seconds_per_sample": stats["seconds"] / len(samples), "grid": str(grid)})
    write_table(rows, out_dir / "samples" / "summary.csv", out_dir / "samples" / "summary.md")
    return {"rows": rows}


def _generate(module, sampler, nfe, sampling: dict, indices=None):
    n = int(sampling.get("num_samples", 64))
    device = next(module.parameters()).device
    return generate_samples(
        module.net, module.schedule, sampler, nfe, indices or range(n), int(sampling.get("seed", 0)),
        module.data_shape, batch_size=int(sampling.get("batch_size", 256)), device=device,
        prediction=module.prediction,
    )


def sample_cli(args, module: ScoreDiffusion) -> None:
    """sample.py for image models: write a PNG grid and an .npz of samples into args.out (--evaluate: score them too)."""
    if getattr(args, "evaluate", False) and args.sampler == "config":
        evaluate_cli(args, module)
        return
    sampler = build_sampler(args.sampler, **args.options)
    out = Path(args.out)
    labels = None
    if args.label is not None:
        if not module.conditional:
            raise ValueError("--label needs a class-conditional model (model.class_conditional=true)")
        labels = torch.full((args.num_samples,), int(args.label), dtype=torch.long)
    device = torch.device(args.device)
    module.to(device)
    with module.ema_weights():
        samples, stats = generate_samples(
            module.net, module.schedule, sampler, args.nfe, range(args.num_samples), args.seed, module.data_shape,
            batch_size=args.batch_size, device=device, prediction=module.prediction, labels=labels,
            guidance_scale=args.guidance_scale, uncond_label=getattr(module.net, "null_label", None), progress=True,
        )
    name = f"{args.sampler}_nfe{stats['nfe']}"
    save_image_grid(samples, out / f"{name}.png")
    import io as _io
    import numpy as np
    from ..io import atomic_write_bytes

    buf = _io.BytesIO()
    np.savez_compressed(buf, samples=samples.numpy())
    atomic_write_bytes(out / f"{name}.npz", buf.getvalue())
    write_json(out / f"{name}.json", {"sampler": sampler.to_config(), "nfe": stats["nfe"], "seed": args.seed,
                                      "num_samples": args.num_samples, "seconds": stats["seconds"], "checkpoint": str(args.ckpt)})
    print(f"wrote {len(samples)} samples ({sampler.name}, nfe={stats['nfe']}, {stats['seconds']:.2f}s) to {out / (name + '.png')}")
    if getattr(args, "evaluate", False):
        evaluate_cli(args, module)


def evaluate_cli(args, module: ScoreDiffusion) -> list[dict]:
    """sample.py --evaluate: score --sampler at --nfe (or, with --sampler config, the checkpoint's evaluation set).

    Uses the checkpoint's data and evaluation settings (feature network cache, reference set,
    metric options) with --num-samples, --batch-size and --seed; writes <out>/eval/cli/ and prints the table.
    """
    config = module.hparams.config
    evaluation = {k: v for k, v in (config.get("evaluation") or {}).items() if k not in ("every_n_val_epochs", "after_fit")}
    evaluation.update(num_samples=args.num_samples, batch_size=args.batch_size, seed=args.seed, guidance_scale=args.guidance_scale)
    if args.sampler != "config":
        evaluation["samplers"] = [{"name": args.sampler, **args.options}]
        evaluation["nfe"] = [args.nfe] if args.nfe is not None else evaluation.get("nfe", [10])
    if not evaluation.get("samplers"):
        raise ValueError("--sampler config needs a checkpoint whose config lists evaluation.samplers")
    datamodule = build_datamodule(config.get("data", {}), int(config.get("seed", 0)))
    rows = evaluate(evaluation, module, datamodule, Path(args.out), tag="cli")
    table = Path(args.out) / evaluation.get("out_subdir", "eval") / "cli" / "table.md"
    print(table.read_text())
    return rows
