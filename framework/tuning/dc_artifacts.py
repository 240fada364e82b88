"""DC-Solver artefacts: searched ratios and the CPR, small JSON files next to the checkpoint they belong to.

`dc_ratios.json` holds one entry per searched configuration, keyed by

    checkpoint     SHA-256 of the sampling weights (framework.tuning.reference.state_hash; EMA weights in the
                   experiments), so ratios are never used with other weights,
    sampler        the sampler and its options without ratios and grid (dynamic_compensation.solver_key),
    nfe            the NFE of the run,
    guidance_scale the classifier-free guidance scale,
    grid           the time grid's kind and karras exponent (dynamic_compensation.grid_key),

with the search's settings and the reference errors before and after. `dc_cpr.json` is the cascade fitted
to those entries (framework.samplers.dynamic_compensation.cpr_document), keyed by checkpoint, sampler and
grid; `build_sampler("dc_solver", cpr=<path>)` reads it. Loading ratios for a key the file does not hold is
refused with a message naming what differs from the closest entry.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping, Sequence, Union

from ..io import write_json
from ..samplers import build_from_config
from ..samplers.dynamic_compensation import CALIBRATED, grid_key, key_differences, solver_key
from .cascade_regression import CascadeRegression

RATIOS_FILE = "dc_ratios.json"
CPR_FILE = "dc_cpr.json"
RATIOS_FORMAT = "dc_solver.ratios.v1"
#: the option that carries the ratios, per searchable sampler
RATIO_OPTION = {"dc_solver": "ratios", "dpmsolver++": "dc_ratios"}

PathLike = Union[str, Path]


def artifact_paths(checkpoint: PathLike) -> tuple[Path, Path]:
    """(ratios file, CPR file) next to a checkpoint file, or inside a checkpoint directory."""
    checkpoint = Path(checkpoint)
    folder = checkpoint if checkpoint.is_dir() or not checkpoint.suffix else checkpoint.parent
    return folder / RATIOS_FILE, folder / CPR_FILE


def ratio_key(checkpoint_hash: str, sampler, nfe: int, guidance_scale: float = 1.0) -> dict:
    """The key of one searched configuration (see the module doc)."""
    return {"checkpoint": checkpoint_hash, "sampler": solver_key(sampler), "nfe": int(nfe),
            "guidance_scale": float(guidance_scale), "grid": grid_key(sampler)}


def cpr_key(checkpoint_hash: str, sampler) -> dict:
    """The key of a cascade: what it was fitted for, except NFE and guidance scale (it predicts those)."""
    return {"checkpoint": checkpoint_hash, "sampler": solver_key(sampler), "grid": grid_key(sampler)}


def _read(path: Path) -> dict:
    if not path.is_file():
        return {"format": RATIOS_FORMAT, "entries": []}
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict) or doc.get("format") != RATIOS_FORMAT:
        raise ValueError(f"{path} is not a DC ratios artefact (format {RATIOS_FORMAT!r})")
    return doc


def _same(a: Mapping, b: Mapping) -> bool:
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


def save_ratios(path: PathLike, key: Mapping[str, Any], ratios: Sequence[float], **info: Any) -> Path:
    """Add (or replace) the entry of `key` in the ratios file at `path`; `info`: plain data kept with it."""
    path = Path(path)
    doc = _read(path)
    entries = [e for e in doc["entries"] if not _same(e["key"], key)]
    entries.append({"key": dict(key), "ratios": [float(r) for r in ratios], **info})
    doc["entries"] = entries
    write_json(path, doc)
    return path


def entries(path: PathLike) -> list[dict]:
    """Every entry of a ratios file (none if it does not exist)."""
    return list(_read(Path(path))["entries"])


def load_ratios(path: PathLike, key: Mapping[str, Any]) -> list[float]:
    """The ratios saved for exactly `key`; else a ValueError naming what differs from the closest entry."""
    path = Path(path)
    found = entries(path)
    for entry in found:
        if _same(entry["key"], key):
            return [float(r) for r in entry["ratios"]]
    if not found:
        raise ValueError(f"no DC ratios in {path} (run the DC calibration first: sample.py --calibrate-dc)")
    closest = min((key_differences(key, e["key"]) for e in found), key=len)
    raise ValueError(f"the DC ratios in {path} were searched for another configuration; closest entry differs in "
                     + "; ".join(closest))


def save_cpr(path: PathLike, cascade: CascadeRegression, key: Mapping[str, Any]) -> Path:
    return cascade.save(path, key)


def load_cpr(path: PathLike, key: Mapping[str, Any]) -> CascadeRegression:
    """The cascade at `path` if it was fitted for `key` (cpr_key), else a ValueError naming what differs."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"no CPR artefact at {path}")
    saved = json.loads(path.read_text()).get("key", {})
    differences = key_differences(dict(key), saved)
    if differences:
        raise ValueError(f"the CPR in {path} was fitted for another configuration: " + "; ".join(differences))
    return CascadeRegression.load(path)


def is_calibrated_entry(config: Mapping[str, Any]) -> bool:
    """Whether a sampler config asks for calibrated ratios (`ratios: calibrated` / `dc_ratios: calibrated`)."""
    option = RATIO_OPTION.get(config.get("name"))
    return option is not None and config.get(option) == CALIBRATED


def resolve_calibrated(config: Mapping[str, Any], nfes: Sequence[int], path: PathLike, checkpoint_hash: str,
                       guidance_scale: float = 1.0) -> dict:
    """A sampler config with `calibrated` replaced by the saved ratios {nfe: ratios} of each NFE (key-checked)."""
    config = dict(config)
    option = RATIO_OPTION[config["name"]]
    options = {k: v for k, v in config.items() if k not in ("label", "nfe")}
    options[option] = None
    sampler = build_from_config(options)
    config[option] = {int(nfe): load_ratios(path, ratio_key(checkpoint_hash, sampler, nfe, guidance_scale))
                      for nfe in nfes}
    return config


def calibrated_sampler(config: Mapping[str, Any], nfes: Sequence[int], path: PathLike, checkpoint_hash: str,
                       guidance_scale: float = 1.0):
    """The built sampler of `config` with its saved ratios at `nfes` (see resolve_calibrated)."""
    return build_from_config({k: v for k, v in resolve_calibrated(config, nfes, path, checkpoint_hash,
                                                                 guidance_scale).items() if k not in ("label", "nfe")})
