"""Accuracy of every continuous ODE solver against the exact probability-flow ODE solution.

For a Gaussian mixture with full covariances (framework.oracles.GaussianMixture) the noise
prediction is exact, so the only error left is the solver's. For each solver variant and NFE
the benchmark reports

* `error`: mean Euclidean distance to the exact ODE solution from the same x_T
  (framework.oracles.convergence.mean_error; the reference is solved to ~1e-10);
* `energy`: the energy distance of the samples to an independent draw of the true mixture (4x as
  many points), next to its Monte Carlo floor (mean and sd over 10 fresh true draws of the same
  size as the run) and the exact ODE solution's own value.

All in float64 on the discrete DDPM linear schedule (1000 steps), from t_max = 1 to t_min = 1/1000,
with no final denoising step. When diffusers is installed, its schedulers run on the same model
and noise (benchmarks.diffusers_adapter), and the project's solvers are run again on diffusers'
own time grids to separate grid effects from solver effects.

    python -m benchmarks.ode_solvers [--out DIR] [--dim 2 8] [--n 500] [--nfe 5 6 8 10 15 20]
    python -m benchmarks.ode_solvers --orders [--dim 2]      # empirical convergence orders, NFE 40..320
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

import torch

from framework.diffusion import Denoiser, DiscreteVPSchedule
from framework.oracles import GaussianMixture
from framework.oracles.convergence import empirical_order, mean_error
from framework.samplers import GRID_KINDS, available_samplers, build_sampler
from framework.samplers.registry import sampler_class

from . import diffusers_adapter as dif
from .reporting import pivot, print_section, write_results

DEFAULT_NFES = (5, 6, 8, 10, 15, 20)
ORDER_NFES = (40, 80, 160, 320)
DEFAULT_OUT = "benchmarks/results/ode_solvers"
#: the true draw the energy distance compares with holds this many times the samples of a run
TRUE_FACTOR = 4
#: independent true draws of a run's size that estimate the Monte Carlo floor
FLOOR_DRAWS = 10


@dataclass(frozen=True)
class Variant:
    """One of the project's solvers in one setting: a label, a registered name and its options."""

    label: str
    sampler: str
    options: dict = field(default_factory=dict)


def _variants() -> list[Variant]:
    v = [Variant("ddim", "ddim")]
    v += [Variant(f"deis tab{r}", "deis", dict(method="t_ab", ab_order=r)) for r in (1, 2, 3)]
    v += [Variant(f"deis rhoab{r}", "deis", dict(method="rho_ab", ab_order=r)) for r in (1, 2, 3)]
    v += [Variant(f"deis rhork {m}", "deis", dict(method="rho_rk", rk_method=m)) for m in ("2heun", "3kutta")]
    v += [Variant("ipndm", "ipndm"), Variant("pndm F-PNDM", "pndm", dict(method="F-PNDM")),
          Variant("pndm S-PNDM", "pndm", dict(method="S-PNDM"))]
    v += [Variant(f"dpm++ {k}{m[0].upper()}", "dpmsolver++", dict(order=k, method=m))
          for m in ("multistep", "singlestep") for k in (2, 3)]
    v += [Variant("dpm++ 3M taylor", "dpmsolver++", dict(order=3, method="multistep", solver_type="taylor"))]
    v += [Variant(f"unipc {b} order {k}", "unipc", dict(variant=b, order=k)) for b in ("bh1", "bh2") for k in (2, 3)]
    return v


VARIANTS: list[Variant] = _variants()


# --- the problem ------------------------------------------------------------------------------------


@dataclass
class Problem:
    """A mixture on the DDPM schedule, starting noise, the exact ODE solution and true draws."""

    name: str
    mixture: GaussianMixture
    schedule: DiscreteVPSchedule
    x_T: torch.Tensor
    reference: torch.Tensor
    true: torch.Tensor
    floor_seed: int

    def eps_model(self):
        return self.mixture.eps_model(self.schedule)

    def denoiser(self) -> Denoiser:
        return Denoiser(self.eps_model(), self.schedule)


def make_problem(dim: int, n: int, seed: int = 0, tol: float = 1e-11) -> Problem:
    """A random full-covariance mixture (4 components in 2-D, 3 otherwise) and its exact ODE solution (rtol = atol = tol)."""
    schedule = DiscreteVPSchedule.linear()
    mixture = GaussianMixture.random(components=4 if dim == 2 else 3, dim=dim, seed=seed)
    x_T = torch.randn(n, dim, generator=torch.Generator().manual_seed(seed + 1), dtype=torch.float64)
    reference = mixture.ode_solution(x_T, schedule, rtol=tol, atol=tol)
    true = mixture.sample(TRUE_FACTOR * n, generator=torch.Generator().manual_seed(seed + 2))
    return Problem(f"{dim}-D", mixture, schedule, x_T, reference, true, seed + 3)


def energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Energy distance 2 E|A - B| - E|A - A'| - E|B - B'| (V-statistic; >= 0, zero iff equal samples)."""
    a, b = a.to(torch.float64), b.to(torch.float64)
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())


def floors(problem: Problem, draws: int = FLOOR_DRAWS) -> dict:
    """Monte Carlo floor: mean and sd of the energy distance of `draws` fresh true draws of a run's size to
    the reference true draw; and the exact ODE solution's own distance (its t_min = 1e-3 blur included)."""
    g = torch.Generator().manual_seed(problem.floor_seed)
    values = torch.tensor([energy_distance(problem.mixture.sample(len(problem.x_T), generator=g), problem.true)
                           for _ in range(draws)])
    return {"mc_floor": float(values.mean()), "mc_floor_sd": float(values.std()),
            "exact_ode": energy_distance(problem.reference, problem.true)}


# --- runs ----------------------------------------------------------------------------------------------


def row(problem: Problem, source: str, solver: str, nfe: int, x: Optional[torch.Tensor], note: str = "") -> dict:
    """One result row; x=None marks a combination that cannot run (note says why)."""
    error = "" if x is None else mean_error(x, problem.reference)
    energy = "" if x is None else energy_distance(x, problem.true)
    if x is not None and not bool(torch.isfinite(x).all()):
        note = (note + "; " if note else "") + "non-finite output"
    return dict(problem=problem.name, source=source, solver=solver, nfe=nfe, error=error, energy=energy, note=note)


def build_variants(variants: Sequence[Variant], grid: Optional[str] = None,
                   full_order_final: bool = False) -> tuple[list[tuple[Variant, object]], list[str]]:
    """Build the registered variants (final_denoise off; `grid` overrides their default grid;
    `full_order_final` sets lower_order_final=False where a sampler has it); the rest come back as
    notes saying why not."""
    built, skipped, names = [], [], set(available_samplers())
    extra = {"final_denoise": False, **({"grid": grid} if grid else {})}
    for v in variants:
        if v.sampler not in names:
            skipped.append(f"{v.label}: sampler {v.sampler!r} is not registered")
            continue
        own = dict(v.options)
        if full_order_final and "lower_order_final" in sampler_class(v.sampler).OPTIONS:
            own["lower_order_final"] = False
        try:
            built.append((v, build_sampler(v.sampler, **{**own, **extra})))
        except ValueError as exc:
            skipped.append(f"{v.label}: {exc}")
    return built, skipped


def run_ours(problem: Problem, built, nfes: Sequence[int]) -> list[dict]:
    """Every built variant at every NFE on its own default grid; '-' with the reason where it cannot."""
    rows = []
    for variant, sampler in built:
        for nfe in nfes:
            try:
                sampler.steps_for_nfe(nfe)
            except ValueError as exc:
                rows.append(row(problem, "ours", variant.label, nfe, None, str(exc)))
                continue
            x = sampler.sample(problem.denoiser(), problem.x_T, nfe, problem.schedule)
            rows.append(row(problem, "ours", variant.label, nfe, x))
    return rows


def selected(label: str, only: Optional[Sequence[str]]) -> bool:
    """True when `only` is None or one of its strings occurs in `label`."""
    return only is None or any(s in label for s in only)


def run_diffusers(problem: Problem, nfes: Sequence[int], built, only: Optional[Sequence[str]] = None) -> list[dict]:
    """diffusers' schedulers at every NFE, and the project's counterpart on diffusers' nominal grid."""
    ours = {v.label: s for v, s in built}
    rows = []
    for variant in dif.DIFFUSERS_VARIANTS:
        if not selected(variant.label, only):
            continue
        for nfe in nfes:
            try:
                steps = dif.steps_for_nfe(variant, nfe)
            except ValueError as exc:
                rows.append(row(problem, "diffusers", variant.label, nfe, None, str(exc)))
                continue
            x, calls = dif.sample(variant, problem.eps_model(), problem.x_T, steps)
            rows.append(row(problem, "diffusers", variant.label, nfe, x, f"num_inference_steps={steps}"))
            assert calls == nfe, (variant.label, calls, nfe)
            if variant.grid_comparable and variant.ours in ours:
                rows.append(_ours_on_grid(problem, ours[variant.ours], variant, steps, nfe))
    return rows


def _ours_on_grid(problem: Problem, sampler, variant, steps: int, nfe: int) -> dict:
    grid = dif.nominal_grid(variant, steps)
    label = f"{variant.ours} @ {variant.label} grid"
    cost = sampler.nfe_for_steps(len(grid) - 1)
    if cost != nfe:
        return row(problem, "ours@diffusers-grid", label, nfe, None, f"diffusers' grid costs ours {cost} NFE")
    x = sampler.sample(problem.denoiser(), problem.x_T, None, problem.schedule, timesteps=grid)
    return row(problem, "ours@diffusers-grid", label, nfe, x)


def comparison(rows: Sequence[dict]) -> list[dict]:
    """Per diffusers variant and NFE: its error, ours (default grid), ours on its grid, and the ratios ours / diffusers."""
    index = {(r["problem"], r["source"], r["solver"], r["nfe"]): r["error"] for r in rows}
    out = []
    for r in rows:
        if r["source"] != "diffusers":
            continue
        variant = next(v for v in dif.DIFFUSERS_VARIANTS if v.label == r["solver"])
        ours = index.get((r["problem"], "ours", variant.ours, r["nfe"]), "")
        grid = index.get((r["problem"], "ours@diffusers-grid", f"{variant.ours} @ {variant.label} grid", r["nfe"]), "")
        d = r["error"]
        out.append(dict(problem=r["problem"], diffusers=variant.label, ours=variant.ours or "", nfe=r["nfe"],
                        diffusers_error=d, ours_error=ours, ours_on_their_grid=grid,
                        ratio=_ratio(ours, d), ratio_same_grid=_ratio(grid, d)))
    return out


def _ratio(a, b):
    return a / b if isinstance(a, float) and isinstance(b, float) and b > 0 else ""


# --- convergence orders ----------------------------------------------------------------------------


def allowed_nfe(sampler, nfe: int) -> Optional[int]:
    """`nfe`, or the nearest larger NFE (up to +3) the sampler can spend exactly."""
    return next((c for c in range(nfe, nfe + 4) if sampler.allows_nfe(c)), None)


def order_rows(problem: Problem, built, nfes: Sequence[int] = ORDER_NFES) -> list[dict]:
    """Error at each of `nfes` (nudged up to an NFE the solver allows) and the least-squares order over all but the first."""
    rows = []
    for variant, sampler in built:
        used = [n for n in (allowed_nfe(sampler, n) for n in nfes) if n is not None]
        errors = [mean_error(sampler.sample(problem.denoiser(), problem.x_T, n, problem.schedule), problem.reference)
                  for n in used]
        r = dict(problem=problem.name, solver=variant.label, grid=sampler.options["grid"])
        r.update({f"err@{n}": e for n, e in zip(nfes, errors)})
        r["nfes_used"] = " ".join(map(str, used))
        r["order"] = empirical_order(used[1:], errors[1:])
        rows.append(r)
    return rows


# --- command line --------------------------------------------------------------------------------------


def run(dims: Sequence[int], n: int, nfes: Sequence[int], out: Path, with_diffusers: bool = True,
        only: Optional[Sequence[str]] = None, seed: int = 0, plot: bool = True, quiet: bool = False, tol: float = 1e-11,
        grid: Optional[str] = None, full_order_final: bool = False) -> dict:
    """Run the whole benchmark and write tables, JSON and plots under `out`; return the rows."""
    variants = [v for v in VARIANTS if selected(v.label, only)]
    built, skipped = build_variants(variants, grid, full_order_final)
    use_diffusers = with_diffusers and dif.available()
    rows, info = [], {"skipped": skipped, "floors": {}, "diffusers": dif.version() if use_diffusers else None}
    for dim in dims:
        t0 = time.perf_counter()
        problem = make_problem(dim, n, seed, tol)
        info["floors"][problem.name] = floors(problem)
        rows += run_ours(problem, built, nfes)
        if use_diffusers:
            rows += run_diffusers(problem, nfes, built, only)
        info.setdefault("seconds", {})[problem.name] = time.perf_counter() - t0
    comp = comparison(rows)
    write_results(out, rows, comp, info, nfes, plot=plot)
    if not quiet:
        _print(rows, comp, info, nfes, out)
    return {"rows": rows, "comparison": comp, "info": info}


def _print(rows, comp, info, nfes, out) -> None:
    for problem, fl in info["floors"].items():
        print_section(f"{problem}: energy distance floors: Monte Carlo (true draws) {fl['mc_floor']:.3g} "
                      f"+- {fl['mc_floor_sd']:.2g}, exact ODE solution vs true {fl['exact_ode']:.3g}")
        for metric in ("error", "energy"):
            print(f"\n### {problem}, {metric}\n")
            print(pivot(rows, problem, metric, nfes), end="")
    if comp:
        print_section("ours / diffusers error ratios (< 1: ours more accurate)")
        from framework.io import markdown_table

        print(markdown_table(comp), end="")
    if info["skipped"]:
        print_section("skipped variants")
        print("\n".join(info["skipped"]))
    print(f"\nresults in {out}")


def run_orders(dims: Sequence[int], out: Path, only=None, seed: int = 0, n: int = 32, grid: Optional[str] = None,
               full_order_final: bool = False) -> list[dict]:
    """Empirical convergence orders of every variant; written to orders.csv / orders.md under `out`."""
    from framework.io import markdown_table, write_table

    built, _ = build_variants([v for v in VARIANTS if selected(v.label, only)], grid, full_order_final)
    rows = []
    for dim in dims:
        rows += order_rows(make_problem(dim, n, seed, tol=1e-12), built)
    write_table(rows, Path(out) / "orders.csv", Path(out) / "orders.md")
    print(markdown_table(rows), end="")
    return rows


def main(argv: Optional[Sequence[str]] = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=Path(DEFAULT_OUT), help="output folder")
    p.add_argument("--dim", type=int, nargs="+", default=[2, 8], choices=[2, 8], help="mixture dimensions")
    p.add_argument("--n", type=int, default=500, help="samples per problem")
    p.add_argument("--nfe", type=int, nargs="+", default=list(DEFAULT_NFES))
    p.add_argument("--only", nargs="+", default=None,
                   help="run only the variants (ours and diffusers') whose label contains one of these strings")
    p.add_argument("--no-diffusers", action="store_true", help="skip diffusers even when installed")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--grid", default=None, choices=GRID_KINDS, help="run all of our solvers on this grid kind")
    p.add_argument("--full-order-final", action="store_true",
                   help="lower_order_final=False for our solvers that have it (they keep their order to the last step)")
    p.add_argument("--orders", action="store_true",
                   help=f"instead: empirical convergence orders at NFE {ORDER_NFES} on 32 samples")
    a = p.parse_args(argv)
    torch.set_num_threads(max(1, min(torch.get_num_threads(), 2)))
    if a.orders:
        run_orders(a.dim, a.out, only=a.only, seed=a.seed, grid=a.grid, full_order_final=a.full_order_final)
        return
    run(a.dim, a.n, a.nfe, a.out, with_diffusers=not a.no_diffusers, only=a.only, seed=a.seed, plot=not a.no_plot,
        grid=a.grid, full_order_final=a.full_order_final)


if __name__ == "__main__":
    main()
