"""The `evaluation:` config section, validated: which samplers, at which NFEs, on how many samples, how often.

Each sampler entry is any registered sampler's config (`{name: deis, order: 3}`), optionally
with a `label` (its name in logs, files and plots) and its own `nfe` list. Every sampler is
built and every (sampler, NFE) pair checked here, so a bad entry fails before training starts.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from ..samplers import build_from_config

KEYS = {
    "samplers": [],          # empty: no evaluation
    "nfe": [5, 10, 20],
    "num_samples": 1000,
    "batch_size": 500,
    "seed": 0,
    "every_n_val_epochs": 0,  # 0: never during training
    "after_fit": True,
    "grid_size": 16,
    "save_samples": False,
    "guidance_scale": 1.0,
    "out_subdir": "eval",
    "reference": {},
    "features": {},
    "metrics": {},
}
_LABEL = re.compile(r"^[A-Za-z0-9_.,+=-]+$")
# (sampler config without label/nfe, nfe) -> None, raising ValueError when that sampler cannot run at that NFE
NfeCheck = Callable[[dict, int], None]


@dataclass
class SamplerEntry:
    """One evaluated sampler: its label, the built sampler object, and the NFEs to evaluate it at."""

    label: str
    sampler: Any
    nfe: list[int]

    def config(self) -> dict:
        return self.sampler.to_config()


@dataclass
class EvaluationSettings:
    """The validated `evaluation:` section (see KEYS for the defaults)."""

    entries: list[SamplerEntry]
    num_samples: int
    batch_size: int
    seed: int
    every_n_val_epochs: int
    after_fit: bool
    grid_size: int
    save_samples: bool
    guidance_scale: float
    out_subdir: str
    reference: dict = field(default_factory=dict)
    features: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.entries)


def entry_label(cfg: dict) -> str:
    """`label` if given, else the name plus its options: {name: deis, order: 3} -> 'deis_order3'."""
    if "label" in cfg:
        label = str(cfg["label"])
        if not _LABEL.match(label):
            raise ValueError(f"evaluation sampler label {label!r} may only use letters, digits and _ . , + = -")
        return label
    opts = {k: v for k, v in cfg.items() if k not in ("name", "nfe")}
    parts = [str(cfg["name"])] + [f"{k}{json.dumps(v, separators=(',', ':')) if isinstance(v, (dict, list)) else v}"
                                  for k, v in opts.items()]
    return re.sub(r"[^A-Za-z0-9_.,+=-]", "", "_".join(parts))


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"evaluation.{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _nfe_list(name: str, value: Any) -> list[int]:
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ValueError(f"{name} must list at least one NFE")
    return [_positive_int(name, v) for v in values]


def sampler_entry(cfg: Any, default_nfe: list[int], check_nfe: Optional[NfeCheck] = None) -> SamplerEntry:
    """Build one sampler entry and check that it accepts each of its NFEs.

    `check_nfe` replaces the sampler's own check_nfe for samplers whose NFE depends on more
    than their options (masked samplers: the sequence length); the image path leaves it None.
    """
    cfg = dict(cfg)
    if "name" not in cfg:
        raise ValueError(f"every evaluation.samplers entry needs a 'name', got {cfg!r}")
    label = entry_label(cfg)
    nfe = _nfe_list(f"evaluation.samplers[{label}].nfe", cfg.pop("nfe")) if "nfe" in cfg else list(default_nfe)
    cfg.pop("label", None)
    sampler = build_from_config(cfg)
    for k in nfe:
        try:
            sampler.check_nfe(k) if check_nfe is None else check_nfe(dict(cfg), k)
        except ValueError as err:
            raise ValueError(f"evaluation sampler {label!r} cannot run at nfe={k}: {err} "
                             f"(give the entry its own `nfe: [...]` list)") from None
    return SamplerEntry(label, sampler, nfe)


def evaluation_settings(section: Optional[dict], check_nfe: Optional[NfeCheck] = None) -> EvaluationSettings:
    """Validate the `evaluation:` section; unknown keys, bad values and duplicate labels raise ValueError.

    `check_nfe`: see sampler_entry (None: each sampler checks its own NFEs).
    """
    section = dict(section or {})
    unknown = sorted(set(section) - set(KEYS))
    if unknown:
        raise ValueError(f"unknown evaluation key(s) {', '.join(unknown)}; allowed: {', '.join(KEYS)}")
    s = {**KEYS, **section}
    nfe = _nfe_list("evaluation.nfe", s["nfe"])
    entries = [sampler_entry(c, nfe, check_nfe) for c in (s["samplers"] or [])]
    labels = [e.label for e in entries]
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise ValueError(f"evaluation samplers share the label(s) {', '.join(duplicates)}; give each a distinct `label`")
    for key in ("reference", "features", "metrics"):
        if not isinstance(s[key], dict):
            raise ValueError(f"evaluation.{key} must be a mapping, got {s[key]!r}")
    for key in ("after_fit", "save_samples"):
        if not isinstance(s[key], bool):
            raise ValueError(f"evaluation.{key} must be true or false, got {s[key]!r}")
    return EvaluationSettings(
        entries=entries, num_samples=_positive_int("num_samples", s["num_samples"], 2),
        batch_size=_positive_int("batch_size", s["batch_size"]), seed=_positive_int("seed", s["seed"], 0),
        every_n_val_epochs=_positive_int("every_n_val_epochs", s["every_n_val_epochs"], 0), after_fit=s["after_fit"],
        grid_size=_positive_int("grid_size", s["grid_size"], 0), save_samples=s["save_samples"],
        guidance_scale=float(s["guidance_scale"]), out_subdir=str(s["out_subdir"]),
        reference=dict(s["reference"]), features=dict(s["features"]), metrics=dict(s["metrics"]),
    )
