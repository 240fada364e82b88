"""What eval_script.py and text_eval_script.py share: perturbed weights, one `trainer.validate` on N CPU processes."""

from __future__ import annotations

from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger


def perturb(module, scale: float) -> None:
    """Seeded noise on every weight, copied into the EMA shadow too (evaluation uses the EMA weights)."""
    import torch

    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for p, shadow in zip(module.net.parameters(), module.ema.shadow):
            p.add_(scale * torch.randn(p.shape, generator=g))
            shadow.copy_(p)


def validate_once(module, datamodule, callbacks: list, out: str, devices: int) -> dict:
    """Validate with the callbacks (DDP/gloo when devices > 1); on rank 0 write and return {'world_size', 'logged'}."""
    from framework.io import write_json

    trainer = L.Trainer(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                        callbacks=callbacks, logger=CSVLogger(out, name="logs", version=""), limit_val_batches=1,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.validate(module, datamodule=datamodule)
    result = {"world_size": trainer.world_size,
              "logged": {k: float(v) for k, v in trainer.callback_metrics.items() if k.count("/") == 3}}
    if trainer.is_global_zero:
        write_json(Path(out) / "logged.json", result)
    return result
