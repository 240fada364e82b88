"""The slow suite: the README's main job end to end (train the digits model, evaluate the samplers, write the
table and the plot), with quality thresholds on the table it writes. About 8-10 minutes on 2 CPU cores:
`python -m pytest -m slow`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import train

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def table(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("digits")
    assert train.main([str(ROOT / "configs" / "digits.yaml"), f"out_dir={out}", "trainer.enable_progress_bar=false"]) == 0
    for name in ("table.md", "table.csv", "table.json", "quality_vs_nfe.png"):
        assert (out / "eval" / "final" / name).stat().st_size > 0, name
    assert (out / "checkpoints" / "last.ckpt").is_file()
    return json.loads((out / "eval" / "final" / "table.json").read_text())


def rows_of(table: dict, sampler: str) -> dict[int, dict]:
    return {r["nfe"]: r for r in table["rows"] if r["sampler"] == sampler}


SAMPLERS = ("ddim", "deis", "dpmsolver++", "unipc")


def test_every_sampler_reaches_the_quality_of_real_data_at_nfe_20(table):
    real = rows_of(table, "real_data")[0]
    assert real["num_samples"] == 180 and real["ref_err"] is None
    for name in SAMPLERS:
        at20 = rows_of(table, name)[20]
        assert at20["fid"] < 1.0 and at20["kid_mean"] < 0.02, (name, at20)
        assert at20["precision"] > 0.6 and at20["recall"] > 0.6, (name, at20)


def test_quality_improves_with_nfe(table):
    for name in SAMPLERS:
        r = rows_of(table, name)
        assert r[5]["fid"] > r[20]["fid"], name
        assert r[5]["ref_err"] > r[10]["ref_err"] > r[20]["ref_err"] > 0, name


def test_higher_order_solvers_are_closer_to_the_ode_solution_than_ddim(table):
    ddim = rows_of(table, "ddim")
    for name in ("deis", "dpmsolver++", "unipc"):
        for nfe in (10, 20):
            assert rows_of(table, name)[nfe]["ref_err"] < ddim[nfe]["ref_err"], (name, nfe)
