"""DCCalibration through train.py's run(): after training it searches the ratios, writes the artefacts next to
the checkpoint, logs the reference error before and after; the final evaluation then runs dc_solver with
the saved ratios (and leaves it out during training); sample.py --calibrate-dc does the same from a checkpoint."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

import sample
import train
from framework.config import load_config

ROOT = Path(__file__).resolve().parents[3]
DC = {"enabled": True, "nfe": [4, 5, 6], "num_noises": 4, "iterations": 3, "eval_noises": 8, "cpr_min_records": 3,
      "reference": {"nfe": 40}}
SAMPLERS = [{"name": "unipc"}, {"name": "dc_solver", "ratios": "calibrated", "label": "dc", "nfe": [4, 6]}]


def config(out: Path, **dc):
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [f"out_dir={out}", "trainer.max_steps=2", "+trainer.limit_train_batches=1"])
    cfg.evaluation = OmegaConf.create({
        "samplers": SAMPLERS, "nfe": [4], "num_samples": 16, "batch_size": 16, "seed": 1, "every_n_val_epochs": 1,
        "after_fit": True, "grid_size": 0, "features": {"cache_dir": str(out / "features"), "epochs": 1},
        "metrics": {"kid_subsets": 2, "kid_subset_size": 8}, "ref_err": {"cache_dir": str(out / "reference"), "nfe": 40,
                                                                        "num_samples": 8},
        "dc_calibration": {**DC, **dc},
    })
    return cfg


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dcrun")
    assert train.run(config(out)) == 0
    return out


def test_calibration_writes_key_checked_artefacts_and_logs_before_and_after(run_dir):
    doc = json.loads((run_dir / "checkpoints" / "dc_ratios.json").read_text())
    assert sorted(e["key"]["nfe"] for e in doc["entries"]) == [4, 5, 6]
    for entry in doc["entries"]:
        assert len(entry["ratios"]) == entry["key"]["nfe"] and entry["ratios"][:2] == [1.0, 1.0]
        assert entry["key"]["sampler"]["name"] == "dc_solver" and len(entry["key"]["checkpoint"]) == 64
        assert entry["search"]["noises"] == 4 and entry["ref_err"]["eval_noises"] == 8
    assert (run_dir / "checkpoints" / "dc_cpr.json").is_file()  # 3 configurations: the cascade is fitted
    with open(run_dir / "logs" / "metrics.csv") as f:
        logged = [r for r in csv.DictReader(f) if r.get("dc/dc_solver/nfe5/ref_err_after")]
    assert len(logged) == 1 and float(logged[0]["dc/dc_solver/nfe5/ref_err_before"]) > 0


def test_final_evaluation_runs_the_calibrated_sampler_and_training_evaluations_leave_it_out(run_dir):
    final = json.loads((run_dir / "eval" / "final" / "table.json").read_text())
    assert [(r["sampler"], r["nfe"]) for r in final["rows"] if r["sampler"] != "real_data"] == [
        ("unipc", 4), ("dc", 4), ("dc", 6)]
    during = [p for p in (run_dir / "eval").iterdir() if p.name.startswith("step")]
    assert during and all("dc" not in {r["sampler"] for r in json.loads((p / "table.json").read_text())["rows"]}
                          for p in during)


def test_sample_py_calibrates_and_evaluates_from_a_checkpoint(run_dir, tmp_path, capsys):
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    ckpt.parent.mkdir()
    ckpt.write_bytes((run_dir / "checkpoints" / "last.ckpt").read_bytes())
    assert sample.main(["--ckpt", str(ckpt), "--sampler", "config", "--evaluate", "--num-samples", "16",
                        "--batch-size", "16", "--out", str(tmp_path / "out")]) == 2
    assert "no DC ratios" in capsys.readouterr().err  # not calibrated next to this copy yet
    assert sample.main(["--ckpt", str(ckpt), "--calibrate-dc"]) == 0
    assert (ckpt.parent / "dc_ratios.json").is_file() and "DC calibration dc_solver nfe=4" in capsys.readouterr().out
    out = tmp_path / "samples"
    assert sample.main(["--ckpt", str(ckpt), "--sampler", "dc_solver", "--option", "ratios=calibrated", "--nfe", "5",
                        "--num-samples", "4", "--out", str(out)]) == 0
    written = json.loads(next(out.glob("*.json")).read_text())["sampler"]
    saved = json.loads((ckpt.parent / "dc_ratios.json").read_text())["entries"]
    assert written["ratios"] == {"5": next(e["ratios"] for e in saved if e["key"]["nfe"] == 5)}


def test_calibrated_entries_need_the_calibration(tmp_path):
    with pytest.raises(ValueError, match="asks for calibrated DC ratios but evaluation.dc_calibration.enabled is false"):
        train.run(config(tmp_path, enabled=False))
    with pytest.raises(ValueError, match=r"at nfe \[6\], which evaluation.dc_calibration.nfe \[4, 5\]"):
        train.run(config(tmp_path, nfe=[4, 5]))
