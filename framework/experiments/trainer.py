"""Trainer assembly shared by every experiment kind: loggers, checkpoints, resume, callbacks."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path
from typing import Optional

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO

from ..config import call_with_section, to_dict


class AtomicCheckpointIO(TorchCheckpointIO):
    """Write each checkpoint to a temporary file and move it into place: a crash never leaves a torn checkpoint."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        super().save_checkpoint(checkpoint, tmp, storage_options)
        os.replace(tmp, path)


def build_loggers(out_dir: Path):
    loggers = [CSVLogger(str(out_dir), name="logs", version="")]
    if importlib.util.find_spec("tensorboard") is not None:
        loggers.append(TensorBoardLogger(str(out_dir), name="tensorboard", version=""))
    return loggers


def build_trainer(cfg, out_dir: Path, extra_callbacks: Optional[list] = None, **overrides) -> L.Trainer:
    trainer_cfg = {"enable_progress_bar": True, "log_every_n_steps": 10, **to_dict(cfg).get("trainer", {}), **overrides}
    checkpoint = ModelCheckpoint(dirpath=str(out_dir / "checkpoints"), filename="step{step}", save_last=True,
                                 every_n_train_steps=trainer_cfg.pop("checkpoint_every_n_steps", None) or None,
                                 auto_insert_metric_name=False)
    fixed = dict(default_root_dir=str(out_dir), logger=build_loggers(out_dir),
                 callbacks=[checkpoint, *(extra_callbacks or [])], plugins=[AtomicCheckpointIO()])
    return call_with_section(L.Trainer, "trainer", trainer_cfg, **fixed)


def resume_path(cfg, out_dir: Path) -> Optional[str]:
    """'resume: true' continues from out_dir/checkpoints/last.ckpt when it exists; a path resumes from that file."""
    resume = to_dict(cfg).get("resume", False)
    if not resume:
        return None
    if resume is True or resume == "last":
        last = out_dir / "checkpoints" / "last.ckpt"
        return str(last) if last.is_file() else None
    if not Path(resume).is_file():
        raise FileNotFoundError(f"resume checkpoint not found: {resume}")
    return str(resume)
