"""A run that crashes and resumes from its last checkpoint ends with bit-identical weights to an uninterrupted one.

Tiny config on CPU, 3 batches per epoch, checkpoints at epoch boundaries, a simulated crash
two steps after the end-of-epoch-0 checkpoint. What makes it exact: training noise seeded by
(seed, step, rank) in ScoreDiffusion, EMA and optimizer state in the checkpoint, and
EpochSeededShuffle making the data order of epoch k a function of (seed, k) only.

Two ways to checkpoint at the epoch boundary: Lightning's default end-of-epoch checkpoint,
and `checkpoint_every_n_steps` equal to the batches per epoch, which is saved in
ModelCheckpoint.on_train_batch_end; both are exact because ScoreDiffusion updates its EMA in
`optimizer_step`, before any end-of-batch hook can save the step.
"""

from __future__ import annotations

from pathlib import Path

import lightning as L
import pytest
import torch

from framework.config import load_config
from framework.experiments import experiment_for
from framework.experiments.trainer import build_trainer, resume_path

ROOT = Path(__file__).resolve().parents[1]


class Crash(L.Callback):
    """Stand-in for a killed process: raise once `global_step` reaches `step`."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step >= self.step:
            raise RuntimeError("simulated crash")


def train(out: Path, max_steps: int, resume: bool = False, crash_at: int | None = None,
          every_n_steps: int | None = None) -> L.LightningModule:
    """train.py's run() with an optional crash callback."""
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [
        f"out_dir={out}", f"trainer.max_steps={max_steps}", f"resume={str(resume).lower()}",
        "+trainer.limit_train_batches=3", "trainer.limit_val_batches=1",
    ] + ([f"+trainer.checkpoint_every_n_steps={every_n_steps}"] if every_n_steps else []))
    L.seed_everything(int(cfg.seed), workers=True, verbose=False)
    experiment = experiment_for(cfg)
    module, datamodule = experiment.build()
    callbacks = experiment.callbacks(out) + ([Crash(crash_at)] if crash_at else [])
    trainer = build_trainer(cfg, out, callbacks)
    trainer.fit(module, datamodule=datamodule, ckpt_path=resume_path(cfg, out), weights_only=True)
    return module


def weights(module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> dict[str, torch.Tensor]:
    return weights(train(tmp_path_factory.mktemp("straight"), max_steps=9))


@pytest.mark.parametrize("every_n_steps", [
    None,
    3,
], ids=["epoch-end-checkpoint", "step-checkpoint"])
def test_resumed_run_matches_uninterrupted_bit_for_bit(tmp_path, uninterrupted, every_n_steps):
    reference = uninterrupted
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(tmp_path, max_steps=9, crash_at=5, every_n_steps=every_n_steps)
    last = torch.load(tmp_path / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == 3  # the crash lost steps 4 and 5
    resumed = weights(train(tmp_path, max_steps=9, resume=True, every_n_steps=every_n_steps))

    assert reference.keys() == resumed.keys()
    different = [k for k in reference if not torch.equal(reference[k], resumed[k])]
    assert not different, f"weights differ after resuming: {different[:5]}"
    L.seed_everything(0, verbose=False)
    initial = weights(experiment_for(load_config(ROOT / "configs" / "tiny.yaml")).build()[0])
    assert any(not torch.equal(initial[k], reference[k]) for k in reference), "training did not change the weights"
