"""Experiment configs: omegaconf YAML files plus dotted `key=value` overrides, strictly checked.

An unknown key (in an override or a user file) is an error naming the key and the keys allowed
at that level, instead of a silently ignored typo.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Optional

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

KINDS = ("score", "masked")

# Keys every experiment has; the groups' contents are checked by the code that reads them.
TOP_LEVEL = ("kind", "seed", "out_dir", "resume", "data", "model", "diffusion", "optimizer", "trainer", "sampling", "evaluation")


def load_config(path: str | Path, overrides: Optional[Iterable[str]] = None) -> DictConfig:
    """Load a YAML experiment config and apply `a.b=value` overrides; unknown keys raise ValueError."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    cfg = OmegaConf.load(path)
    if not isinstance(cfg, DictConfig):
        raise ValueError(f"config {path} must be a mapping at the top level")
    unknown = sorted(set(cfg.keys()) - set(TOP_LEVEL))
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join(unknown)} in {path}; allowed: {', '.join(TOP_LEVEL)}")
    if cfg.get("kind") not in KINDS:
        raise ValueError(f"config key 'kind' must be one of {', '.join(KINDS)}, got {cfg.get('kind')!r}")
    return apply_overrides(cfg, overrides or [])


def apply_overrides(cfg: DictConfig, overrides: Iterable[str]) -> DictConfig:
    """Apply `key=value` (the key must exist) and `+key=value` (adds a new key, e.g. +trainer.precision=bf16-mixed)."""
    overrides = list(overrides)
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value (e.g. trainer.max_steps=100)")
    # trainer.* keys are checked against lightning.Trainer's own signature when it is built
    additions = [o[1:] if o.startswith("+") else o for o in overrides if o.startswith(("+", "trainer."))]
    changes = [o for o in overrides if not o.startswith(("+", "trainer."))]
    cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(additions))
    OmegaConf.set_struct(cfg, True)
    try:
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(changes))
    except (ConfigAttributeError, ConfigKeyError) as err:
        key = getattr(err, "full_key", None) or str(err).split("\n")[0]
        parent = key.rsplit(".", 1)[0] if "." in key else ""
        node = OmegaConf.select(cfg, parent) if parent else cfg
        allowed = ", ".join(map(str, node.keys())) if isinstance(node, DictConfig) else "(none)"
        raise ValueError(
            f"unknown config key {key!r}; allowed at '{parent or '<top>'}': {allowed} (write +{key}=... to add a new key)"
        ) from None
    OmegaConf.set_struct(cfg, False)
    return cfg


def to_dict(cfg) -> dict:
    """A plain, resolved dict (for checkpoints and hyper-parameters)."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


def call_with_section(factory, section: str, options: dict, **fixed):
    """factory(**fixed, **options), but an option the factory does not take is a ValueError naming
    `section.key` and the keys it does take (instead of a TypeError deep inside)."""
    import inspect

    params = inspect.signature(factory).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        allowed = [k for k, p in params.items() if k not in fixed and k != "self" and p.kind is not inspect.Parameter.VAR_POSITIONAL]
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ValueError(f"unknown config key(s) {', '.join(section + '.' + k for k in unknown)}; allowed: {', '.join(allowed)}")
    return factory(**fixed, **options)
