"""The text sampler evaluation gives the same texts and the same numbers on 1 or 2 processes and any batch size.

The text counterpart of test_reproducibility.py. Three runs of tests/framework/callbacks/text_eval_script.py
(TextTask on configs/text_tiny.yaml: FHS at its L = 16 evaluations, MDLM's T-step sampler and parallel
FHS at NFE 4 and 8, on 37 samples, so the two ranks' shards and the last batches are uneven): one
process with generation batches of 64, one process with batches of 8 (in this pytest process), and
two processes with batches of 8 (Lightning DDP on CPU with gloo, in a subprocess, since
strategy="ddp" relaunches its command line). Every saved token array, every logged value, the
float64 table and the decoded sample grids must be equal, bit for bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from itertools import combinations
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "framework" / "callbacks" / "text_eval_script.py"
sys.path.insert(0, str(SCRIPT.parent))
import text_eval_script  # noqa: E402

FILES = ["fhs_nfe16.npz", "fhs_par_nfe4.npz", "fhs_par_nfe8.npz", "mdlm_tstep_nfe4.npz", "mdlm_tstep_nfe8.npz"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("text_repro")
    corpus, cache = base / "c.txt", str(base / "evaluator")
    corpus.write_text(text_eval_script.corpus_text())
    out = {"1proc_b64": base / "a", "1proc_b8": base / "b", "2proc_b8": base / "c"}
    text_eval_script.run(str(out["1proc_b64"]), 1, 64, str(corpus), cache)  # trains and caches the evaluator LM first
    text_eval_script.run(str(out["1proc_b8"]), 1, 8, str(corpus), cache)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out["2proc_b8"]), "2", "8", str(corpus), cache], cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def logged(run_dir: Path) -> dict:
    return json.loads((run_dir / "logged.json").read_text())


def step_dir(run_dir: Path) -> Path:
    return run_dir / "eval" / "step0000000"


def samples(run_dir: Path) -> dict[str, np.ndarray]:
    return {f.name: np.load(f)["samples"] for f in sorted((step_dir(run_dir) / "samples").glob("*.npz"))}


def table(run_dir: Path) -> dict:
    return json.loads((step_dir(run_dir) / "table.json").read_text())


def test_the_two_process_run_really_had_two_processes(runs):
    assert logged(runs["2proc_b8"])["world_size"] == 2 and table(runs["2proc_b8"])["info"]["world_size"] == 2
    assert logged(runs["1proc_b64"])["world_size"] == 1 and table(runs["1proc_b64"])["info"]["world_size"] == 1


@pytest.mark.parametrize("other", ["1proc_b8", "2proc_b8"])
def test_token_samples_identical_across_processes_and_batch_sizes(runs, other):
    ref, got = samples(runs["1proc_b64"]), samples(runs[other])
    assert sorted(ref) == FILES and ref.keys() == got.keys()
    for name in ref:
        assert ref[name].shape == (37, 16) and ref[name].dtype == np.int64
        assert 0 <= ref[name].min() and ref[name].max() < 300  # every mask filled (mask id = vocabulary size)
        assert np.array_equal(ref[name], got[name]), f"{name} differs between 1proc_b64 and {other}"
    for grid in ("fhs.md", "fhs_par.md", "mdlm_tstep.md"):  # the decoded texts too
        assert (step_dir(runs[other]) / "grids" / grid).read_text() == (step_dir(runs["1proc_b64"]) / "grids" / grid).read_text()


def test_samplers_really_differ(runs):
    ref = samples(runs["1proc_b64"])
    for a, b in combinations(FILES, 2):
        assert not np.array_equal(ref[a], ref[b]), f"{a} and {b} generated the same tokens"


@pytest.mark.parametrize("other", ["1proc_b8", "2proc_b8"])
def test_logged_metrics_and_table_identical_across_processes_and_batch_sizes(runs, other):
    ref, got = logged(runs["1proc_b64"])["logged"], logged(runs[other])["logged"]
    assert len(ref) == 5 * 2  # (sampler, NFE) pairs x (gen_ppl, entropy)
    assert ref == got
    assert all(np.isfinite(v) and v > 0 for v in ref.values())

    def scores(run: str) -> list[dict]:  # float64 rows, without the wall time
        return [{k: v for k, v in r.items() if k != "seconds_per_sample"} for r in table(runs[run])["rows"]]

    assert scores(other) == scores("1proc_b64")
    assert [(r["sampler"], r["nfe"], r["num_samples"]) for r in scores(other)] == [
        ("fhs", 16, 37), ("mdlm_tstep", 4, 37), ("mdlm_tstep", 8, 37), ("fhs_par", 4, 37), ("fhs_par", 8, 37),
        ("real_data", 0, 14)]  # the held-out text: all 14 test blocks of the small corpus
