"""DCCalibration: the Lightning callback that calibrates DC-Solver once training has ended.

At the end of fit, rank 0 searches the compensation ratios of `evaluation.dc_calibration` on the EMA weights,
fits the cascade when there are enough configurations, writes dc_ratios.json / dc_cpr.json next to the
checkpoints and logs dc/<sampler>/nfe<k>/ref_err_before, ref_err_after and search_seconds to the trainer's
loggers. The work is framework.tuning.dc_calibration.calibrate_dc (also behind `sample.py --calibrate-dc`).
"""

from __future__ import annotations

import time
from pathlib import Path

import lightning as L
from lightning.pytorch.callbacks import Callback

from ..tuning.dc_calibration import calibrate_dc, calibration_summary


class DCCalibration(Callback):
    """Run calibrate_dc(section) after training; `ref_err`: the evaluation's reference settings, `eval_seed`: its seed."""

    def __init__(self, section: dict, checkpoint_dir: str | Path, ref_err: dict, eval_seed: int):
        super().__init__()
        self.section, self.checkpoint_dir = dict(section), Path(checkpoint_dir)
        self.ref_err, self.eval_seed = dict(ref_err), int(eval_seed)
        self.rows: list[dict] = []

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        metrics: dict[str, float] = {}
        was_training = pl_module.training
        pl_module.eval()
        start = time.perf_counter()
        self.rows = calibrate_dc(pl_module, self.section, self.checkpoint_dir, self.ref_err, self.eval_seed,
                                 log=lambda name, value: metrics.__setitem__(name, float(value)))
        pl_module.train(was_training)
        metrics["dc/calibration_seconds"] = time.perf_counter() - start
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
            logger.save()
        print(calibration_summary(self.rows) + f"\nDC calibration: {metrics['dc/calibration_seconds']:.0f}s")
