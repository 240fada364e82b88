"""The interface every experiment kind implements, and the parts they share.

An experiment kind (image or text) knows how to build its module and data from a validated
config, which callbacks train with it, what to write after training, how `sample.py` samples
from its checkpoint, and how its samplers are evaluated. train.py and sample.py see nothing
else; this package is the only code that reads command-line arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

from ..callbacks import EpochSeededShuffle, SamplerEvaluation
from ..config import to_dict, validate_config
from ..evaluation import EvaluationSettings, Evaluator
from ..samplers import build_sampler


class Experiment:
    """One experiment kind. Subclasses set `kind`, `family` (the sampler family it runs) and
    `module_class`, and implement build, datamodule, evaluation_settings, task, sampling_summary and
    write_samples."""

    kind: str = ""
    family: str = ""
    module_class: Any = None
    #: re-seed the training order by (seed, epoch) so that a resumed run replays it (EpochSeededShuffle)
    seeded_data_order: bool = True

    def __init__(self, config: Any):
        """`config`: an experiment config (a mapping or DictConfig), validated here with every default filled in."""
        self.config = to_dict(validate_config(config))
        self.seed = int(self.config["seed"])

    # --- training ---------------------------------------------------------------------
    def build(self) -> tuple[Any, Any]:
        """(LightningModule, LightningDataModule) for training."""
        raise NotImplementedError

    def callbacks(self, out_dir: Path) -> list:
        """Training callbacks: the epoch-seeded data order, and the sampler evaluation every N validations.

        The `evaluation:` section is validated here (every sampler built, every NFE checked), so a bad
        entry fails before training starts.
        """
        section = self.training_evaluation(self.config["evaluation"])
        settings = self.evaluation_settings(section)
        callbacks: list = [EpochSeededShuffle(self.seed)] if self.seeded_data_order else []
        if settings.enabled and settings.every_n_val_epochs:
            callbacks.append(SamplerEvaluation(settings, self.task(settings), out_dir))
        return callbacks

    def training_evaluation(self, section: dict) -> dict:
        """The `evaluation:` section the evaluation during training runs (all of it by default)."""
        return section

    def after_fit(self, module, datamodule, out_dir: Path) -> dict:
        """Rank 0, after training: the `sampling:` section's samples and, with `evaluation.after_fit` and
        samplers listed, the final evaluation into <out>/<out_subdir>/final/."""
        summary = self.sampling_summary(module, datamodule, out_dir)
        evaluation = self.config["evaluation"]
        if evaluation["samplers"] and evaluation["after_fit"]:
            summary["evaluation"] = self.evaluate(module, datamodule, out_dir)
        return summary

    def sampling_summary(self, module, datamodule, out_dir: Path) -> dict:
        """The `sampling:` section's samples and their table under <out>/samples/ (a quick look); {'rows': ...}."""
        raise NotImplementedError

    # --- evaluation -------------------------------------------------------------------
    def datamodule(self, module=None):
        """The data module (for the reference set of an evaluation); `module`: a loaded checkpoint's module."""
        raise NotImplementedError

    def evaluation_settings(self, section: dict) -> EvaluationSettings:
        raise NotImplementedError

    def task(self, settings: EvaluationSettings, distributed: bool = True):
        """The evaluation task (generation + metric + grids) of this kind."""
        raise NotImplementedError

    def evaluate(self, module, datamodule, out_dir: Path, tag: str = "final", section: Optional[dict] = None) -> list[dict]:
        """Run the sampler evaluation once in this process; rank 0 writes <out>/<out_subdir>/<tag>/. Returns the rows."""
        section = self.config["evaluation"] if section is None else section
        settings = self.evaluation_settings(section)
        task = self.task(settings, distributed=False)
        task.prepare(datamodule)
        module.eval()
        return Evaluator(settings, task, out_dir).run(module, tag, prefix=tag)

    # --- sample.py --------------------------------------------------------------------
    def check_sampler(self, name: str, options: dict):
        """A sampler of this experiment's family, or a ValueError naming both families."""
        return build_sampler(name, family=self.family, **options)

    def check_cli(self, args) -> None:
        """sample.py arguments this kind refuses (raise ValueError naming them); none by default."""

    def sample(self, args, module) -> None:
        """sample.py: sample with args.sampler at args.nfe into args.out; --evaluate scores them too, and with
        --sampler config only the checkpoint's evaluation set runs. The evaluation is validated first, so a
        bad request fails before anything is sampled."""
        if getattr(args, "search_solver", False):
            self.search_solver_cli(args, module)
            return
        self.check_cli(args)
        models = 1 + len(getattr(args, "experts", []))
        if models > 1 and args.evaluate:
            raise ValueError("--evaluate takes one --ckpt (the evaluation scores one checkpoint's samplers)")
        if getattr(args, "calibrate_dc", False):
            self.calibrate_cli(args, module)
            if args.sampler is None:
                return
        evaluation = self.cli_evaluation(args) if args.evaluate else None
        if args.sampler != "config" or evaluation is None:
            sampler = self.check_sampler(args.sampler, args.options)
            if sampler.experts != models:
                raise ValueError(f"--ckpt given {models} time(s), but sampler {args.sampler!r} with these options takes "
                                 f"{sampler.experts} model(s) (two: --sampler fkc --option target=product)")
            self.write_samples(args, module, sampler)
        if evaluation is not None:
            self.evaluate_cli(args, module, evaluation)

    def calibrate_cli(self, args, module) -> None:
        """sample.py --calibrate-dc: only experiments with DC-Solver calibration support it."""
        raise ValueError(f"--calibrate-dc needs an image (kind: score) checkpoint, this one is kind {self.kind!r}")

    def search_solver_cli(self, args, module) -> None:
        """sample.py --search-solver: search a USF solver schedule for the checkpoint (continuous samplers only)."""
        raise ValueError(f"--search-solver searches continuous solvers; this is a {self.kind!r} checkpoint, whose samplers "
                         f"are {self.family}")

    def write_samples(self, args, module, sampler) -> None:
        """sample.py's outputs for one sampler (files named by sampler_label and the NFE) into args.out."""
        raise NotImplementedError

    def cli_evaluation(self, args) -> dict:
        """The `evaluation:` section that sample.py --evaluate runs: the checkpoint's own, with --num-samples,
        --batch-size and --seed; unless --sampler config, its samplers replaced by --sampler at --nfe."""
        evaluation = {k: v for k, v in self.config["evaluation"].items()
                      if k not in ("every_n_val_epochs", "after_fit")}
        evaluation.update(num_samples=args.num_samples, batch_size=args.batch_size, seed=args.seed)
        if args.sampler != "config":
            entry = {"name": args.sampler, **args.options}
            nfe = [args.nfe] if args.nfe is not None else self.natural_nfe(args.sampler)
            if nfe is not None:
                entry["nfe"] = nfe
            evaluation["samplers"] = [entry]
        if not evaluation.get("samplers"):
            raise ValueError("--sampler config needs a checkpoint whose config lists evaluation.samplers; "
                             "name a sampler instead (--sampler NAME --nfe K --evaluate)")
        self.evaluation_settings(evaluation)  # raises on a bad sampler, NFE or count before anything runs
        return evaluation

    def natural_nfe(self, name: str) -> Optional[list[int]]:
        """The NFE a sampler is evaluated at when --nfe is not given (None: the section's NFE list)."""
        return None

    def evaluate_cli(self, args, module, evaluation: dict) -> list[dict]:
        """sample.py --evaluate: run `evaluation` on the checkpoint into <out>/<out_subdir>/cli/ and print the table."""
        module.to(args.device)
        rows = self.evaluate(module, self.datamodule(module), Path(args.out), tag="cli", section=evaluation)
        print((Path(args.out) / evaluation["out_subdir"] / "cli" / "table.md").read_text())
        return rows
