"""Experiment kinds behind one interface (framework.experiments.base.Experiment), and safe checkpoint loading.

train.py and sample.py reach an experiment only through `experiment_for(config)` and `load_checkpoint(path)`.
Checkpoints are read with `torch.load(weights_only=True)`: a checkpoint holds tensors and plain data
(the config as a dict), so a file whose pickle would run code is refused instead of executed.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

import torch

from .base import Experiment

KINDS = {
    "score": ("framework.experiments.image", "ImageExperiment"),
    "masked": ("framework.experiments.text", "TextExperiment"),
}


def experiment_for(config: Any) -> Experiment:
    """The experiment of a config's `kind` (the config's own module is imported only then)."""
    kind = config.get("kind") if hasattr(config, "get") else None
    if kind not in KINDS:
        raise ValueError(f"config key 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    module, cls = KINDS[kind]
    return getattr(importlib.import_module(module), cls)(config)


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint's contents, unpickled with weights_only=True; a file that needs more is refused."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises UnpicklingError (or a RuntimeError wrapping it) for unsafe content
        raise ValueError(f"checkpoint {path} cannot be loaded safely (weights_only=True): it holds objects other than "
                         f"tensors and plain data ({type(err).__name__}: {str(err).splitlines()[0]})") from None


def load_checkpoint(path: str | Path, map_location="cpu") -> tuple[Experiment, Any]:
    """(experiment, module) rebuilt from a checkpoint alone: the config in its hyper-parameters, then the weights."""
    ckpt = read_checkpoint(path)
    hparams = ckpt.get("hyper_parameters")
    if not isinstance(hparams, dict) or not isinstance(hparams.get("config"), dict):
        raise ValueError(f"checkpoint {path} holds no experiment config (hyper_parameters.config)")
    experiment = experiment_for(hparams["config"])
    module = experiment.module_class(**hparams)
    module.load_state_dict(ckpt["state_dict"])
    return experiment, module.to(map_location)
