"""train.py and sample.py as a user runs them, on the tiny config; and their one-line errors."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args, check=True):
    proc = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny")
    run("train.py", "configs/tiny.yaml", f"out_dir={out}")
    return out


def test_train_writes_checkpoint_samples_and_table(tiny_run):
    assert (tiny_run / "checkpoints" / "last.ckpt").is_file()
    assert (tiny_run / "samples" / "summary.csv").is_file()
    assert list((tiny_run / "samples").glob("*.png"))
    assert (tiny_run / "config.json").is_file()


def test_sample_cli_writes_grid(tiny_run, tmp_path):
    proc = run("sample.py", "--ckpt", str(tiny_run / "checkpoints" / "last.ckpt"), "--sampler", "ddim", "--nfe", "3",
               "--num-samples", "4", "--out", str(tmp_path), "--option", "eta=0.5")
    assert "wrote 4 samples" in proc.stdout
    assert (tmp_path / "ddim_eta0.5_nfe3.png").is_file() and (tmp_path / "ddim_eta0.5_nfe3.npz").is_file()


def test_sample_cli_takes_a_time_shift_sampler(tiny_run, tmp_path):
    proc = run("sample.py", "--ckpt", str(tiny_run / "checkpoints" / "last.ckpt"), "--sampler", "ts_ddim", "--nfe", "3",
               "--num-samples", "4", "--out", str(tmp_path), "--option", "ts_window=10")
    assert "wrote 4 samples" in proc.stdout and (tmp_path / "ts_ddim_ts_window10_nfe3.png").is_file()


@pytest.mark.parametrize(
    "args, message",
    [
        (["sample.py", "--ckpt", "CKPT", "--sampler", "nope", "--nfe", "3"], "unknown continuous sampler 'nope'"),
        (["sample.py", "--ckpt", "CKPT", "--sampler", "ddim", "--nfe", "0"], "--nfe must be a positive integer"),
        (["sample.py", "--ckpt", "CKPT", "--sampler", "ddim", "--nfe", "3", "--option", "etaa=1"], "unknown option(s) etaa"),
        (["sample.py", "--ckpt", "/no/such.ckpt", "--sampler", "ddim", "--nfe", "3"], "checkpoint not found: /no/such.ckpt"),
        (["train.py", "configs/tiny.yaml", "diffusion.predictionn=x0"], "unknown config key 'diffusion.predictionn'"),
        (["train.py", "configs/tiny.yaml", "trainer.max_stepz=3"], "unknown config key(s) trainer.max_stepz"),
        (["train.py", "configs/tiny.yaml", "data.name=files", "+data.path=/no/such/images.npz"], "/no/such/images.npz"),
        (["train.py", "configs/nope.yaml"], "config file not found"),
    ],
)
def test_bad_input_gives_one_line_error(tiny_run, args, message):
    args = [a.replace("CKPT", str(tiny_run / "checkpoints" / "last.ckpt")) for a in args]
    proc = run(*args, check=False)
    assert proc.returncode == 2
    lines = [l for l in proc.stderr.strip().splitlines() if l.strip()]
    assert lines and lines[-1].startswith("error:") and message in lines[-1], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_sample_cli_fkc_product_of_two_checkpoints(tiny_run, tmp_path):
    ckpt = str(tiny_run / "checkpoints" / "last.ckpt")
    proc = run("sample.py", "--ckpt", ckpt, "--ckpt", ckpt, "--sampler", "fkc", "--option", "target=product",
               "--option", "num_particles=4", "--nfe", "6", "--num-samples", "8", "--batch-size", "8", "--out", str(tmp_path))
    assert "wrote 8 samples (fkc, nfe=6" in proc.stdout
    one = run("sample.py", "--ckpt", ckpt, "--ckpt", ckpt, "--sampler", "ddim", "--nfe", "3", check=False)
    assert one.returncode == 2 and "--ckpt given 2 time(s), but sampler 'ddim' with these options takes 1 model(s)" in one.stderr


@pytest.fixture(scope="module")
def tiny_conditional(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny_cond")
    run("train.py", "configs/tiny.yaml", f"out_dir={out}", "model.class_conditional=true")
    return out / "checkpoints" / "last.ckpt"


@pytest.mark.slow
def test_sample_cli_fkc_guidance_with_label(tiny_conditional, tmp_path):
    proc = run("sample.py", "--ckpt", str(tiny_conditional), "--sampler", "fkc", "--option", "target=cfg",
               "--option", "num_particles=4", "--label", "3", "--guidance-scale", "2.0", "--nfe", "4",
               "--num-samples", "8", "--batch-size", "4", "--out", str(tmp_path))
    assert "wrote 8 samples (fkc, nfe=4" in proc.stdout
    bad = run("sample.py", "--ckpt", str(tiny_conditional), "--sampler", "fkc", "--option", "target=cfg",
              "--option", "num_particles=4", "--label", "3", "--guidance-scale", "2.0", "--nfe", "4",
              "--num-samples", "8", "--batch-size", "6", "--out", str(tmp_path), check=False)
    assert bad.returncode == 2 and "batch_size=6 must be a multiple of the sampler's population of 4" in bad.stderr


@pytest.mark.slow  # three sample.py processes (~25 s)
def test_search_solver_saves_a_schedule_next_to_the_checkpoint_that_samples_and_is_tied_to_it(tiny_run, tmp_path):
    import json
    import shutil

    ckpt = tmp_path / "last.ckpt"
    shutil.copy(tiny_run / "checkpoints" / "last.ckpt", ckpt)
    proc = run("sample.py", "--ckpt", str(ckpt), "--search-solver", "--nfe", "4", "--budget", "10")
    path = tmp_path / "usf_s3_nfe4.json"
    assert "after 10 true evaluations" in proc.stdout and path.is_file()
    saved = json.loads(path.read_text())
    assert saved["meta"]["search"]["nfe"] == 4 and saved["meta"]["fitted_for"]["weights"]
    out = tmp_path / "samples"
    proc = run("sample.py", "--ckpt", str(ckpt), "--sampler", "usf", "--option", f"schedule={path}", "--num-samples", "4",
               "--out", str(out))
    assert "nfe=4" in proc.stdout
    saved["meta"]["fitted_for"]["weights"] = "0" * 64
    path.write_text(json.dumps(saved))
    proc = run("sample.py", "--ckpt", str(ckpt), "--sampler", "usf", "--option", f"schedule={path}", "--out", str(out),
               check=False)
    assert proc.returncode == 2 and "searched for another model" in proc.stderr
