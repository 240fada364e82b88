import lightning as L
import torch

from framework.experiments import experiment_for
from omegaconf import OmegaConf

CONFIG = {
    "kind": "score", "seed": 0,
    "data": {"name": "gmm", "dim": 2, "components": 3, "n_train": 4096, "n_val": 256, "batch_size": 256},
    "model": {"name": "mlp", "hidden": 64, "depth": 2},
    "diffusion": {"schedule": {"kind": "linear"}, "prediction": "eps", "ema_decay": 0.9},
    "optimizer": {"lr": 3e-3, "warmup_steps": 5},
}


def test_training_loss_finite_and_decreasing():
    cfg = OmegaConf.create(CONFIG)
    module, dm = experiment_for(cfg).build()
    losses = []

    class Record(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer = L.Trainer(max_steps=120, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[Record()], limit_val_batches=0)
    trainer.fit(module, datamodule=dm)
    assert all(torch.isfinite(torch.tensor(losses)))
    first, last = sum(losses[:20]) / 20, sum(losses[-20:]) / 20
    assert last < 0.8 * first, (first, last)
    assert int(module.ema.num_updates) == 120


class _GatherNoise(L.Callback):
    """Each rank draws from its own training-noise generator; rank 0 saves what all ranks drew."""

    def __init__(self, path):
        self.path = path

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        drawn = torch.randn(4, generator=pl_module._step_generator())
        gathered = pl_module.all_gather(drawn)
        if trainer.is_global_zero:
            torch.save(gathered.cpu(), self.path)


def test_training_noise_differs_between_ddp_ranks(tmp_path):
    module, dm = experiment_for(OmegaConf.create(CONFIG)).build()
    path = tmp_path / "noise.pt"
    trainer = L.Trainer(max_steps=1, accelerator="cpu", devices=2, strategy="ddp_spawn", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                        limit_val_batches=0, callbacks=[_GatherNoise(path)])
    trainer.fit(module, datamodule=dm)
    gathered = torch.load(path, weights_only=True)
    assert gathered.shape == (2, 4)
    assert not torch.allclose(gathered[0], gathered[1]), "ranks must not train on the same noise"
