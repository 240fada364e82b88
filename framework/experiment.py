"""Dispatch from a config's `kind` to the code that builds, finishes and samples that experiment.

Each kind's module provides build_experiment(cfg), after_fit(cfg, module, datamodule, out_dir)
and sample_cli(args, module); train.py and sample.py know nothing else about it.
"""

from __future__ import annotations

import importlib
from pathlib import Path

import torch

KIND_MODULES = {
    "score": "framework.diffusion.score_experiment",
    "masked": "framework.diffusion.masked_module",
}


def kind_module(kind: str):
    if kind not in KIND_MODULES:
        raise ValueError(f"unknown experiment kind {kind!r}; allowed: {', '.join(KIND_MODULES)}")
    return importlib.import_module(KIND_MODULES[kind])


def checkpoint_kind(path: str | Path) -> str:
    """The experiment kind stored in a checkpoint's hyper-parameters."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    hp = ckpt.get("hyper_parameters", {})
    config = hp.get("config", hp)
    kind = config.get("kind") if isinstance(config, dict) else None
    if kind not in KIND_MODULES:
        raise ValueError(f"checkpoint {path} holds no known experiment kind (got {kind!r}); allowed: {', '.join(KIND_MODULES)}")
    return kind


def load_module(path: str | Path, map_location="cpu"):
    """Rebuild the LightningModule of any kind from its checkpoint alone."""
    return kind_module(checkpoint_kind(path)).load_module(path, map_location=map_location)
