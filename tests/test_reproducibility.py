"""The sampler evaluation gives the same samples and the same logged numbers on 1 or 2 processes and any batch size.

Three runs of tests/framework/callbacks/eval_script.py (DDIM, DDPM with its per-step noise,
DPM-Solver++ at NFE 3 and 5 on 48 samples): one process with generation batches of 64, one
process with batches of 16 (in this pytest process), and two processes with batches of 16
(Lightning DDP on CPU with gloo, in a subprocess, since strategy="ddp" relaunches its command
line). Every saved sample array and every logged value must be equal, bit for bit.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "tests" / "framework" / "callbacks" / "eval_script.py"
sys.path.insert(0, str(SCRIPT.parent))
import eval_script  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("repro")
    cache = str(base / "features")
    out = {"1proc_b64": base / "a", "1proc_b16": base / "b", "2proc_b16": base / "c"}
    eval_script.run(str(out["1proc_b64"]), 1, 64, cache)  # trains and caches the feature network first
    eval_script.run(str(out["1proc_b16"]), 1, 16, cache)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out["2proc_b16"]), "2", "16", cache], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def logged(run_dir: Path) -> dict:
    return json.loads((run_dir / "logged.json").read_text())


def samples(run_dir: Path) -> dict[str, np.ndarray]:
    files = sorted((run_dir / "eval" / "step0000000" / "samples").glob("*.npz"))
    return {f.name: np.load(f)["samples"] for f in files}


def test_the_two_process_run_really_had_two_processes(runs):
    assert logged(runs["2proc_b16"])["world_size"] == 2
    assert logged(runs["1proc_b64"])["world_size"] == 1


@pytest.mark.parametrize("other", ["1proc_b16", "2proc_b16"])
def test_samples_identical_across_processes_and_batch_sizes(runs, other):
    ref, got = samples(runs["1proc_b64"]), samples(runs[other])
    assert len(ref) == 6 and ref.keys() == got.keys()
    for name in ref:
        assert ref[name].shape == (48, 1, 8, 8)
        assert np.array_equal(ref[name], got[name]), f"{name} differs between 1proc_b64 and {other}"
    assert not np.array_equal(ref["ddim_nfe3.npz"], ref["ddpm_nfe3.npz"])  # the samplers really differ


@pytest.mark.parametrize("other", ["1proc_b16", "2proc_b16"])
def test_logged_metrics_identical_across_processes_and_batch_sizes(runs, other):
    ref, got = logged(runs["1proc_b64"])["logged"], logged(runs[other])["logged"]
    # samplers x NFEs x image metrics, plus ref_err of the two deterministic samplers (ddim, dpmpp) at 2 NFEs
    assert len(ref) == 3 * 2 * 5 + 2 * 2
    assert ref == got
    assert all(np.isfinite(v) for v in ref.values())
