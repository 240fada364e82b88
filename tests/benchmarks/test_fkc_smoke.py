"""Smoke test of the FKC benchmark at tiny sizes (its numbers are checked by tests/framework/samplers/test_fkc.py)."""

import math

from benchmarks import fkc


def test_fkc_benchmark_writes_tables_and_plot(tmp_path):
    rows = fkc.run_mixtures(tmp_path, particles=[8, 16], total=32, nfe=20, seed=0, threshold=0.5,
                            names=["anneal_beta2", "product"], reference_size=256)
    measured = [r for r in rows if r["sampler"] in ("fkc", "sde")]
    assert len(measured) == 2 * 2 * 2
    assert all(math.isfinite(r["mode_rmse"]) and r["energy"] >= 0 and r["us_per_particle"] > 0 for r in measured)
    assert {r["sampler"] for r in rows} == {"fkc", "sde", "exact"}
    for name in ("mixtures.csv", "mixtures.md", "mixtures.json", "fkc_particles.png"):
        assert (tmp_path / name).stat().st_size > 0
    assert "FKC mode-weight RMSE" in (tmp_path / "mixtures.md").read_text()
