"""The `evaluation:` config section, validated: which samplers, at which NFEs, on how many samples, how often.

Each sampler entry is any registered sampler's config (`{name: deis, order: 3}`), optionally
with a `label` (its name in logs, files and plots) and its own `nfe` list. Every sampler is
built and every (sampler, NFE) pair checked here, so a bad entry fails before training starts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from ..config import validate_section
from ..samplers import build_from_config
from ..samplers.labels import sampler_label

#: the experiment kind whose evaluation section a sampler family's experiment has
FAMILY_KINDS = {"continuous": "score", "masked": "masked"}

@dataclass
class SamplerEntry:
    """One evaluated sampler: its label, the built sampler object, and the NFEs to evaluate it at."""

    label: str
    sampler: Any
    nfe: list[int]


@dataclass
class EvaluationSettings:
    """The validated `evaluation:` section, every default filled in from framework.schema."""

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
    ref_err: dict = field(default_factory=dict)
    #: the text evaluation's evaluator LM: {evaluator, cache_dir, lm}
    evaluator: dict = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return bool(self.entries)


def _positive_int(name: str, value: Any, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"evaluation.{name} must be an integer >= {minimum}, got {value!r}")
    return value


def _nfe_list(name: str, value: Any) -> list[int]:
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if not values:
        raise ValueError(f"{name} must list at least one NFE")
    return [_positive_int(name, v) for v in values]


def sampler_entry(cfg: Any, default_nfe: list[int], family: Optional[str] = None, length: Optional[int] = None) -> SamplerEntry:
    """Build one sampler entry of `family` and check that it accepts each of its NFEs.

    `length`: the sequence length, for masked samplers whose NFE rule depends on it.
    """
    cfg = dict(cfg)
    if "name" not in cfg:
        raise ValueError(f"every evaluation.samplers entry needs a 'name', got {cfg!r}")
    label = sampler_label(cfg)
    nfe = _nfe_list(f"evaluation.samplers[{label}].nfe", cfg.pop("nfe")) if "nfe" in cfg else list(default_nfe)
    cfg.pop("label", None)
    sampler = build_from_config(cfg, family=family)
    for k in nfe:
        try:
            sampler.check_nfe(k, length)
        except ValueError as err:
            raise ValueError(f"evaluation sampler {label!r} cannot run at nfe={k}: {err} "
                             f"(give the entry its own `nfe: [...]` list)") from None
    return SamplerEntry(label, sampler, nfe)


def evaluation_settings(section: Optional[dict], family: str = "continuous",
                        length: Optional[int] = None) -> EvaluationSettings:
    """Validate the `evaluation:` section of an experiment running `family` samplers.

    Keys, types and defaults come from the config schema (an image or a text evaluation section);
    here the samplers are built, every (sampler, NFE) pair is checked (`length`: see sampler_entry),
    labels must be distinct and counts positive. Problems raise ValueError.
    """
    s = validate_section(FAMILY_KINDS[family], "evaluation", dict(section or {}))
    nfe = _nfe_list("evaluation.nfe", s["nfe"])
    entries = [sampler_entry(c, nfe, family, length) for c in (s["samplers"] or [])]
    labels = [e.label for e in entries]
    duplicates = sorted({x for x in labels if labels.count(x) > 1})
    if duplicates:
        raise ValueError(f"evaluation samplers share the label(s) {', '.join(duplicates)}; give each a distinct `label`")
    batch_size = _positive_int("batch_size", s["batch_size"])
    for e in entries:
        if batch_size % e.sampler.population:
            raise ValueError(f"evaluation.batch_size={batch_size} must be a multiple of sampler {e.label!r}'s population "
                             f"of {e.sampler.population} samples (num_particles)")
    return EvaluationSettings(
        entries=entries, num_samples=_positive_int("num_samples", s["num_samples"], 2),
        batch_size=batch_size, seed=_positive_int("seed", s["seed"], 0),
        every_n_val_epochs=_positive_int("every_n_val_epochs", s["every_n_val_epochs"], 0), after_fit=s["after_fit"],
        grid_size=_positive_int("grid_size", s["grid_size"], 0), save_samples=s["save_samples"],
        guidance_scale=float(s.get("guidance_scale", 1.0)), out_subdir=str(s["out_subdir"]),
        reference=s["reference"], features=s.get("features", {}), metrics=s["metrics"], ref_err=s.get("ref_err", {}),
        evaluator={k: s[k] for k in ("evaluator", "cache_dir", "lm") if k in s},
    )
