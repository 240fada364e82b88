"""Fast smoke test of the benchmark functions at tiny sizes (the numbers themselves are not checked here)."""

import functools
import math

import pytest
import torch

from benchmarks import diffusers_adapter as dif
from benchmarks import ode_solvers, sampler_overhead


@functools.lru_cache(maxsize=None)
def tiny_problem() -> ode_solvers.Problem:
    return ode_solvers.make_problem(2, 8, tol=1e-6)


def test_ode_benchmark_writes_tables_and_marks_impossible_nfes(tmp_path):
    result = ode_solvers.run([2], n=8, nfes=[5, 6], out=tmp_path, with_diffusers=dif.available(),
                             only=["ddim", "PRK"], quiet=True, tol=1e-6)
    rows = result["rows"]
    ours = [r for r in rows if r["source"] == "ours"]
    assert {r["nfe"] for r in ours} == {5, 6}
    assert all(math.isfinite(r["error"]) and r["error"] > 0 for r in ours)
    for name in ("results.csv", "tables.md", "info.json", "error_2d.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "Monte Carlo" in (tmp_path / "tables.md").read_text()
    if dif.available():
        ddim = [r for r in result["comparison"] if r["diffusers"] == "ddim"]
        assert len(ddim) == 2 and all(isinstance(r["ratio_same_grid"], float) for r in ddim)
        prk = [r for r in rows if r["source"] == "diffusers" and r["solver"].startswith("pndm (PRK")]
        assert len(prk) == 2 and all(r["error"] == "" and "calls" in r["note"] for r in prk)  # PRK needs >= 13 NFE


def test_impossible_nfe_gives_a_reason():
    built, _ = ode_solvers.build_variants([ode_solvers.Variant("rk", "deis", dict(method="rho_rk", rk_method="3kutta"))])
    (row,) = ode_solvers.run_ours(tiny_problem(), built, [5])
    assert row["error"] == "" and "not allowed" in row["note"]


def test_unknown_variant_is_skipped_with_a_note():
    built, skipped = ode_solvers.build_variants([ode_solvers.Variant("x", "no-such-sampler")])
    assert built == [] and "not registered" in skipped[0]


def test_energy_distance_is_zero_for_identical_samples_and_positive_otherwise():
    a = torch.randn(50, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    assert ode_solvers.energy_distance(a, a) == pytest.approx(0.0, abs=1e-12)
    assert ode_solvers.energy_distance(a, a + 1.0) > 0.5


@pytest.mark.skipif(not dif.available(), reason="diffusers not installed")
def test_diffusers_ddim_matches_ours_on_its_grid():
    problem = tiny_problem()
    variant = dif.DIFFUSERS_VARIANTS[0]
    x, calls = dif.sample(variant, problem.eps_model(), problem.x_T, 5)
    ours = ode_solvers.build_sampler("ddim", final_denoise=False).sample(
        problem.denoiser(), problem.x_T, None, problem.schedule, timesteps=dif.nominal_grid(variant, 5))
    assert calls == 5
    assert torch.allclose(x, ours, atol=1e-5)  # diffusers keeps its schedule in float32


def test_sampler_overhead_measures_network_time_separately():
    rows = sampler_overhead.measure([ode_solvers.Variant("ddim", "ddim")], batch=2, nfe=3, repeats=1)
    (row,) = rows
    assert row["calls"] == row["nfe"] == 3
    assert 0 < row["network_ms"] <= row["total_ms"]


def test_order_rows_report_an_order_for_ddim():
    built, _ = ode_solvers.build_variants([ode_solvers.Variant("ddim", "ddim")])
    (row,) = ode_solvers.order_rows(tiny_problem(), built, nfes=(10, 20, 40))
    assert 0.5 < row["order"] < 1.5
