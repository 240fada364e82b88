"""SamplerEvaluation: the Lightning callback that evaluates every configured sampler every N validation epochs.

Lightning supplies what the evaluation needs and nothing is re-implemented: the rank and
world size, `all_gather` for the sample grids, a barrier while rank 0 trains the feature
network, and `pl_module.log` for the numbers (val/<sampler>/nfe<k>/<metric>). The work
itself is framework.evaluation.Evaluator, which also runs after training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import lightning as L
from lightning.pytorch.callbacks import Callback

from ..evaluation.evaluator import Evaluator
from ..evaluation.settings import EvaluationSettings


class SamplerEvaluation(Callback):
    """Evaluate the samplers of `settings` through `task` on validation epochs 1 x N, 2 x N, ... (none when N = 0).

    `task`: an object with prepare(datamodule, is_writer, barrier), generate(module, sampler,
    nfe, indices), metric (a torchmetrics Metric with update(samples, indices) and compute()
    -> dict), metric_names, plot_metrics and write_grid(samples_by_nfe, path); see ImageTask.
    """

    def __init__(self, settings: EvaluationSettings, task, out_dir: str | Path):
        super().__init__()
        self.settings, self.task = settings, task
        self.evaluator = Evaluator(settings, task, out_dir)
        self.last_rows: list[dict] = []
        self._validations = 0

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage in ("fit", "validate") and self.settings.every_n_val_epochs:
            info = self.task.prepare(trainer.datamodule, trainer.is_global_zero, trainer.strategy.barrier)
            for logger in trainer.loggers:
                logger.log_hyperparams({"evaluation": {"num_samples": self.settings.num_samples, **info}})

    def on_validation_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking or not self.settings.every_n_val_epochs:
            return
        self._validations += 1
        if self._validations % self.settings.every_n_val_epochs:
            return
        self.evaluate(trainer, pl_module)

    def evaluate(self, trainer: L.Trainer, pl_module: L.LightningModule, tag: Optional[str] = None) -> list[dict]:
        """Run the evaluation now on every rank (a collective call) and log its numbers."""

        def log(name: str, value: float) -> None:
            # every rank holds the same value; max-reduction keeps it bit for bit on any number of ranks
            pl_module.log(name, value, sync_dist=True, reduce_fx="max")

        self.last_rows = self.evaluator.run(
            pl_module, tag or f"step{trainer.global_step:07d}", trainer.global_rank, trainer.world_size,
            pl_module.all_gather, log,
        )
        return self.last_rows

    def state_dict(self) -> dict:
        return {"validations": self._validations}

    def load_state_dict(self, state_dict: dict) -> None:
        self._validations = int(state_dict.get("validations", 0))
