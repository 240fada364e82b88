"""Dynamic compensation (DC-Solver, Zhao et al. ECCV 2024) and the cascade polynomial regression
that predicts its ratios, as pure functions shared by UniPC (`dc_solver`) and DPM-Solver++.

Dynamic compensation. Before step i of a multistep solver (from t_i to t_{i+1}), the newest stored model
output m_i is replaced by the Lagrange interpolant, in time t, through the newest dc_order + 1 stored
outputs m_i, m_{i-1}, ..., evaluated at

    tau_i = t_{i-1} + rho_i (t_i - t_{i-1}),

so rho_i = 1 keeps m_i (then nothing is computed: the run is the plain solver bit for bit) and rho_i != 1
moves the output along the interpolant to compensate the misalignment between the point where m_i was
evaluated (UniPC: the predicted point) and the state the step starts from (UniPC: the corrected point).
The replaced output stays in the history, so later steps interpolate through compensated outputs (official
code: `dynamic_compensation` in dc_solver.py / scheduling_dcsolver_multistep.py). Steps with fewer than
dc_order + 1 stored outputs keep rho = 1. No network evaluation is added.

Cascade polynomial regression (CPR). The ratio of step s (1-based) of an NFE-step run at guidance scale w
is a cubic in x = s / NFE whose four coefficients are quadratics in g = w / 12, whose three coefficients are
quadratics in n = NFE / 50 (official `cascade_polynomial_regression`; 36 numbers):

    rho(s) = sum_k x^k sum_a g^(2-a) sum_b n^(2-b) c[k][a][b],   k = 0..3, a, b = 0..2,

and rho = 1 for s <= dc_order (no history yet). `c` is stored flat in that (k, a, b) order, as the official
coefficient file.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping, Optional, Sequence, Union

import torch

from .exp_integrator import schedule_coefs

#: interpolation orders (the official code caps the interpolant at 4 nodes)
DC_ORDERS = (1, 2, 3)
#: the CPR's normalisation (official code): x = step / NFE, g = guidance / 12, n = NFE / 50
CPR_GUIDANCE_SCALE = 12.0
CPR_NFE_SCALE = 50.0
CPR_SHAPE = (4, 3, 3)
CPR_FORMAT = "dc_solver.cpr.v1"

Ratio = Union[float, torch.Tensor]


# --- the compensation ------------------------------------------------------------------------------


def lagrange_coefficients(nodes: Sequence[float], at: Ratio) -> list:
    """ell_j(at) = prod_{m != j} (at - t_m) / (t_j - t_m) for the Lagrange basis on `nodes`.

    `at` may be a float or a 0-dim tensor (then the coefficients are tensors, differentiable in `at`).
    """
    nodes = [float(v) for v in nodes]
    coeffs = []
    for j, tj in enumerate(nodes):
        c = 1.0
        for m, tm in enumerate(nodes):
            if m != j:
                c = c * (at - tm) / (tj - tm)
        coeffs.append(c)
    return coeffs


def compensate(history: tuple, times: Sequence[float], ratio: Ratio, dc_order: int) -> tuple:
    """`history` ((lambda, output), ... newest first) with its newest output replaced by the interpolant
    through the newest dc_order + 1 outputs at t_{i-1} + ratio (t_i - t_{i-1}); `times` are the outputs'
    times t_i, t_{i-1}, ... (newest first). A float ratio of 1 returns `history` itself (no arithmetic).

    DC-Solver's dynamic compensation (official `dynamic_compensation`); `ratio` may be a 0-dim tensor (the ratio search).
    """
    if not isinstance(ratio, torch.Tensor) and float(ratio) == 1.0:
        return history
    if len(history) < dc_order + 1 or len(times) < dc_order + 1:
        raise ValueError(f"dynamic compensation of order dc_order={dc_order} needs {dc_order + 1} stored outputs, "
                         f"got {min(len(history), len(times))}; such a step must keep ratio 1")
    tau = float(times[1]) + ratio * (float(times[0]) - float(times[1]))
    coeffs = lagrange_coefficients(times[: dc_order + 1], tau)
    out = sum(c * h[1] for c, h in zip(coeffs, history))
    return ((history[0][0], out), *history[1:])


# --- ratio vectors ---------------------------------------------------------------------------------


def is_ratio_list(value: Any) -> bool:
    """A non-empty sequence of finite numbers (not a string)."""
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Sequence) or not len(value):
        return False
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)


def _nfe_key(key: Any) -> Optional[int]:
    try:
        value = int(key)
    except (TypeError, ValueError):
        return None
    return value if value >= 1 and str(value) == str(key).strip() else None


#: the placeholder for "the ratios a DC calibration saved for this checkpoint" (resolved by framework.tuning)
CALIBRATED = "calibrated"


def is_ratio_spec(value: Any) -> bool:
    """None, a ratio list, a mapping {NFE: ratio list} (NFE keys as int or str), or CALIBRATED."""
    if value is None or value == CALIBRATED or is_ratio_list(value):
        return True
    if isinstance(value, Mapping) and value:
        return all(_nfe_key(k) is not None and is_ratio_list(v) for k, v in value.items())
    return False


RATIO_SPEC_ALLOWED = f"None, a list of numbers (one per step), a mapping {{NFE: list of numbers}}, or {CALIBRATED!r}"


def check_ratios(ratios: Sequence[float], steps: int, dc_order: int, setting: str = "ratios") -> list[float]:
    """`ratios` as floats if they fit a `steps`-step run: one per step, and 1 for the first dc_order steps
    (they lack the dc_order + 1 outputs the interpolant needs); else a ValueError naming `setting`."""
    ratios = [float(r) for r in ratios]
    if len(ratios) != steps:
        raise ValueError(f"{setting} has {len(ratios)} entries but the run has {steps} steps; give one ratio per step")
    early = [r for r in ratios[:dc_order] if r != 1.0]
    if early:
        raise ValueError(f"{setting}: the first dc_order={dc_order} steps have too little history for dynamic "
                         f"compensation and must have ratio 1, got {ratios[:dc_order]}")
    return ratios


def ratios_for_run(spec: Any, nfe: int, steps: int, dc_order: int, setting: str = "ratios") -> list[float]:
    """The per-step ratios of an `nfe`-evaluation, `steps`-step run from an option value (see is_ratio_spec):
    all ones for None; a mapping is looked up by NFE (a missing NFE is a ValueError listing those it has)."""
    if spec is None:
        return [1.0] * steps
    if spec == CALIBRATED:
        raise ValueError(f"{setting}={CALIBRATED!r} stands for the ratios a DC calibration saved next to the checkpoint; "
                         "resolve it first (framework.tuning.dc_artifacts.resolve_calibrated: the experiments do it "
                         "for their evaluation) or give the ratios")
    if isinstance(spec, Mapping):
        table = {_nfe_key(k): v for k, v in spec.items()}
        if nfe not in table:
            raise ValueError(f"{setting} has no ratios for nfe={nfe}; it has nfe {', '.join(map(str, sorted(table)))}")
        spec = table[nfe]
    return check_ratios(spec, steps, dc_order, setting)


# --- cascade polynomial regression -------------------------------------------------------------------


def check_cpr_coefficients(coefficients: Any) -> list[float]:
    """36 finite numbers (flat, in the official (k, a, b) order), else a ValueError."""
    flat = torch.as_tensor(coefficients, dtype=torch.float64).reshape(-1) if not isinstance(coefficients, str) else None
    if flat is None or flat.numel() != math.prod(CPR_SHAPE) or not bool(torch.isfinite(flat).all()):
        raise ValueError(f"CPR coefficients must be {math.prod(CPR_SHAPE)} finite numbers (shape {CPR_SHAPE}), "
                         f"got {coefficients!r:.80}")
    return [float(v) for v in flat]


def cpr_ratio(coefficients: Sequence[float], nfe: int, guidance_scale: float, step: int) -> float:
    """The cascade polynomial at one step (1-based) of an `nfe`-step run at `guidance_scale` (official `cascade_polynomial_regression`)."""
    c = torch.as_tensor(check_cpr_coefficients(coefficients), dtype=torch.float64).reshape(CPR_SHAPE)
    x, g, n = step / nfe, guidance_scale / CPR_GUIDANCE_SCALE, nfe / CPR_NFE_SCALE
    per_guidance = c[..., 0] * n**2 + c[..., 1] * n + c[..., 2]  # [4, 3]: quadratics in n
    per_power = per_guidance[:, 0] * g**2 + per_guidance[:, 1] * g + per_guidance[:, 2]  # [4]: quadratics in g
    return float(sum(per_power[k] * x**k for k in range(CPR_SHAPE[0])))


def cpr_ratios(coefficients: Sequence[float], nfe: int, guidance_scale: float, dc_order: int = 2) -> list[float]:
    """The CPR's ratio vector of an `nfe`-step run (rho = 1 for the first dc_order steps)."""
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
        raise ValueError(f"nfe must be a positive integer, got {nfe!r}")
    return [1.0 if s <= dc_order else cpr_ratio(coefficients, nfe, float(guidance_scale), s) for s in range(1, nfe + 1)]


@dataclass(frozen=True)
class CPRFile:
    """A CPR artefact as read from JSON: its coefficients and the key it was fitted for (plain data)."""

    coefficients: list[float]
    key: dict
    path: str = ""


def cpr_document(coefficients: Sequence[float], key: Mapping[str, Any], **extra: Any) -> dict:
    """The JSON document of a CPR artefact (the one format `read_cpr_file` reads)."""
    return {"format": CPR_FORMAT, "key": dict(key), "coefficients": check_cpr_coefficients(coefficients), **extra}


def read_cpr_file(path: Union[str, Path]) -> CPRFile:
    """A CPR artefact written by framework.tuning (a JSON document, see cpr_document)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"cpr={str(path)!r}: no such file")
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict) or doc.get("format") != CPR_FORMAT:
        raise ValueError(f"cpr={str(path)!r} is not a CPR artefact (format {CPR_FORMAT!r})")
    return CPRFile(check_cpr_coefficients(doc["coefficients"]), dict(doc.get("key", {})), str(path))


def key_differences(expected: Mapping[str, Any], found: Mapping[str, Any], prefix: str = "") -> list[str]:
    """'name: expected X, found Y' for every entry of `expected` that `found` lacks or holds otherwise; nested
    mappings are compared entry by entry ('sampler.variant: expected 'bh2', found 'bh1'')."""
    out = []
    for name in expected:
        want, got = expected[name], found.get(name) if isinstance(found, Mapping) else None
        if isinstance(want, Mapping) and isinstance(got, Mapping):
            out += key_differences(want, got, f"{prefix}{name}.")
            out += [f"{prefix}{name}.{k}: expected absent, found {got[k]!r}" for k in got if k not in want]
        elif json.dumps(want, sort_keys=True) != json.dumps(got, sort_keys=True):
            out.append(f"{prefix}{name}: expected {want!r}, found {got!r}")
    return out


# --- the multistep loop with compensation ------------------------------------------------------------


@dataclass(frozen=True)
class MultistepState:
    """A multistep run before step `i`: x at grid[i], the point `x_eval` where the newest output was evaluated
    (UniPC: the predicted point, x before correction), the history ((lambda, output), ...) and the outputs'
    times (t_i, t_{i-1}, ...), both newest first."""

    i: int
    x: torch.Tensor
    x_eval: torch.Tensor
    history: tuple
    times: tuple


def start_multistep(sampler, denoiser, x: torch.Tensor, grid: torch.Tensor) -> MultistepState:
    """A multistep run before step 0: the output at x_T (as `sampler.kind()`) is the only history."""
    lam = schedule_coefs(denoiser.schedule, grid[0])[2]
    x, out = denoiser.node(x, grid[0], sampler.kind())
    return MultistepState(0, x, x, ((lam, out),), (float(grid[0]),))


def run_multistep(sampler, denoiser, x: torch.Tensor, grid: torch.Tensor, ratios: Sequence[Ratio], callback=None,
                  steps=None) -> torch.Tensor:
    """The loop every compensated multistep sampler shares: `start_multistep` then one `sampler.dc_step` per
    step with that step's ratio (`steps`: the iterable over step indices, e.g. a progress bar)."""
    state = start_multistep(sampler, denoiser, x, grid)
    for i in steps if steps is not None else range(len(grid) - 1):
        state = sampler.dc_step(denoiser, state, grid, ratios[i], callback=callback)
    return state.x


#: options holding ratios or where to find them (not part of what a ratio vector was searched for)
RATIO_OPTIONS = ("ratios", "cpr", "dc_ratios")
#: options that define the time grid (an artefact's key records them as 'grid')
GRID_OPTIONS = ("grid", "rho")


def solver_key(sampler) -> dict:
    """The sampler and options a ratio vector belongs to: its config without the ratios and the grid."""
    return {k: v for k, v in sampler.to_config().items() if k not in RATIO_OPTIONS + GRID_OPTIONS}


def grid_key(sampler) -> dict:
    """The grid part of an artefact's key: the grid kind and the karras exponent."""
    return {k: sampler.options[k] for k in GRID_OPTIONS}
