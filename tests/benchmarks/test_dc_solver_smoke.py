"""The DC-Solver benchmark end to end on a seconds-long checkpoint: every row, the CPR row at its NFE only,
search times for the searched rows, and nothing written next to the checkpoint."""

import json
from pathlib import Path

import pytest

import train
from benchmarks.dc_solver import main
from framework.config import load_config

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_benchmark_runs_on_a_tiny_checkpoint(tmp_path):
    run = tmp_path / "run"
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [f"out_dir={run}", "trainer.max_steps=2",
                                                      "evaluation.features.epochs=1",
                                                      f"evaluation.features.cache_dir={tmp_path / 'features'}",
                                                      f"evaluation.ref_err.cache_dir={tmp_path / 'reference'}",
                                                      "evaluation.ref_err.nfe=40", "evaluation.ref_err.num_samples=8",
                                                      "evaluation.metrics.kid_subsets=2", "evaluation.metrics.kid_subset_size=8"])
    assert train.run(cfg) == 0
    out = tmp_path / "bench"
    main(["--ckpt", str(run / "checkpoints" / "last.ckpt"), "--nfe", "4", "5", "6", "--cpr-nfe", "5",
          "--num-samples", "16", "--noises", "2", "--out", str(out)])
    result = json.loads((out / "dc_solver.json").read_text())
    cells = {(r["sampler"], r["nfe"]) for r in result["rows"]}
    assert cells == {(s, n) for s in ("unipc", "dc_solver", "dpmsolver++", "dpmsolver++_dc") for n in (4, 5, 6)} | {
        ("dc_solver_cpr", 5)}
    assert result["cpr"]["fitted_on"] == [4, 6] and len(result["cpr"]["ratios"]) == 5
    assert all((r["search_seconds"] is not None) == (r["sampler"] in ("dc_solver", "dpmsolver++_dc"))
               for r in result["rows"])
    assert not (run / "checkpoints" / "dc_ratios.json").exists()
