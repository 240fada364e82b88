"""DC-Solver (Zhao et al., ECCV 2024): UniPC with dynamic compensation of the newest stored model output.

UniPC's corrector refines x_t with the output m_t evaluated at the *predicted* point, and the next step
starts from the corrected point with that same m_t: the stored output and the state are misaligned. DC-Solver
replaces m_t, before each step with enough history, by the Lagrange interpolant through the last dc_order + 1
outputs at t_{i-1} + rho_i (t_i - t_{i-1}) (framework.samplers.dynamic_compensation). The ratios rho_i are
searched once per model, NFE and guidance scale on a few noises (framework.tuning.dc_search),
or predicted by the cascade polynomial regression (CPR) for a configuration that was not searched.
All ratios 1 is UniPC, bit for bit; compensation costs no network evaluation.
"""

from __future__ import annotations

from pathlib import Path

from .base import Option
from .dynamic_compensation import (DC_ORDERS, RATIO_SPEC_ALLOWED, check_ratios, cpr_ratios, grid_key, is_ratio_spec,
                                   key_differences, ratios_for_run, read_cpr_file, solver_key)
from .registry import register
from .unipc import UniPC


def _is_path(value) -> bool:
    return value is None or (isinstance(value, (str, Path)) and str(value) != "")


@register("dc_solver")
class DCSolver(UniPC):
    """UniPC (all its options and defaults) + dynamic compensation with `ratios` (one per step, or {NFE: ratios})
    or the ratios a CPR artefact `cpr` predicts for the run's step count and the denoiser's guidance scale.
    Neither: all ratios 1 (plain UniPC)."""

    OPTIONS = {
        **UniPC.OPTIONS,
        "dc_order": Option(2, choices=DC_ORDERS, doc="order of the compensation interpolant (dc_order + 1 outputs)"),
        "ratios": Option(None, check=is_ratio_spec, allowed=RATIO_SPEC_ALLOWED, doc="compensation ratio per step"),
        "cpr": Option(None, check=_is_path, allowed="None or the path of a CPR artefact (JSON)",
                      doc="predict the ratios with this cascade polynomial regression"),
    }

    def check_options(self) -> None:
        if self.options["ratios"] is not None and self.options["cpr"] is not None:
            raise ValueError(f"sampler {self.name!r}: give either ratios or cpr, not both")
        if self.options["cpr"] is not None:
            self.options["cpr"] = str(self.options["cpr"])

    def run_ratios(self, denoiser, grid) -> list[float]:
        """The ratio of every step: from `ratios`, from the CPR artefact `cpr`, or all 1."""
        n, dc_order = len(grid) - 1, self.dc_order()
        if self.options["cpr"] is None:
            return ratios_for_run(self.options["ratios"], self.nfe_for_steps(n), n, dc_order)
        cpr = read_cpr_file(self.options["cpr"])
        expected = {"sampler": solver_key(self), "grid": grid_key(self)}
        differences = key_differences(expected, cpr.key)
        if differences:
            raise ValueError(f"cpr={cpr.path!r} was fitted for another sampler or grid: {'; '.join(differences)}")
        guidance = float(getattr(denoiser, "guidance_scale", 1.0))
        return check_ratios(cpr_ratios(cpr.coefficients, n, guidance, dc_order), n, dc_order, "cpr")
