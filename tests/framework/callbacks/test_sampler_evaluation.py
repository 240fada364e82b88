"""SamplerEvaluation through train.py's run(): when it runs, what it logs, and that its files hold the logged numbers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import train
from framework.evaluation import evaluation_settings, gather_ordered, metric_key
from framework.samplers.labels import sampler_label
from framework.config import load_config
from framework.metrics import IMAGE_METRICS

ROOT = Path(__file__).resolve().parents[3]
SAMPLERS = [{"name": "ddim"}, {"name": "deis", "ab_order": 2, "nfe": [4]}]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """Tiny training: 4 one-batch epochs, validation every epoch, the evaluation every 2nd one, and after fit."""
    out = tmp_path_factory.mktemp("evalrun")
    cfg = load_config(ROOT / "configs" / "tiny.yaml", [f"out_dir={out}", "trainer.max_steps=4", "+trainer.limit_train_batches=1"])
    cfg.evaluation = OmegaConf.create({
        "samplers": SAMPLERS, "nfe": [3], "num_samples": 32, "batch_size": 16, "seed": 1, "every_n_val_epochs": 2,
        "after_fit": True, "grid_size": 4, "features": {"cache_dir": str(out / "features"), "epochs": 2},
        "metrics": {"kid_subsets": 4, "kid_subset_size": 16}, "ref_err": {"cache_dir": str(out / "reference")},
    })
    assert train.run(cfg) == 0
    return out


def logged_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "logs" / "metrics.csv") as f:
        return [r for r in csv.DictReader(f) if r.get(metric_key("ddim", 3, "fid"))]


def table(run_dir: Path, tag: str) -> dict:
    return json.loads((run_dir / "eval" / tag / "table.json").read_text())


def test_evaluates_every_second_validation_and_after_fit(run_dir):
    tags = sorted(p.name for p in (run_dir / "eval").iterdir())
    assert tags == ["final", "step0000002", "step0000004"]
    assert [int(r["step"]) for r in logged_rows(run_dir)] == [1, 3]  # logged at the validation ending steps 2 and 4


def test_files_exist_and_hold_the_logged_numbers(run_dir):
    rows = logged_rows(run_dir)
    for tag, logged in zip(["step0000002", "step0000004"], rows):
        out = run_dir / "eval" / tag
        for name in ["table.csv", "table.md", "quality_vs_nfe.png", "grids/ddim.png", "grids/deis_ab_order2.png"]:
            assert (out / name).is_file() and (out / name).stat().st_size > 0, name
        result = table(run_dir, tag)
        assert [(r["sampler"], r["nfe"]) for r in result["rows"]] == [("ddim", 3), ("deis_ab_order2", 4), ("real_data", 0)]
        for r in result["rows"][:2]:
            for m in (*IMAGE_METRICS, "ref_err"):
                assert np.float32(r[m]) == np.float32(logged[metric_key(r["sampler"], r["nfe"], m)])
            assert 0 < r["ref_err"] < 1  # a 3-4 step sampler is near, not at, the 100-step reference solution
        real = result["rows"][2]
        assert real["ref_err"] is None and real["num_samples"] == 180  # the held-out (val) digits
        assert np.float32(real["fid"]) == np.float32(logged["val/real_data/fid"])
        assert real["fid"] < min(r["fid"] for r in result["rows"][:2])  # real digits are closer than a 4-step model's
        with open(out / "table.csv") as f:
            assert [float(r["fid"]) for r in csv.DictReader(f)] == pytest.approx([r["fid"] for r in result["rows"]], rel=1e-12)
        info = result["info"]
        assert info["num_samples"] == 32 and len(info["feature_sha256"]) == 64 and info["reference_count"] > 1000
        assert info["feature_sha256"] in (out / "table.md").read_text()


def test_after_fit_evaluation_equals_the_last_in_training_one(run_dir):
    final, last = table(run_dir, "final")["rows"], table(run_dir, "step0000004")["rows"]
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds_per_sample"} for r in rows]  # noqa: E731
    assert strip(final) == strip(last)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert strip(summary["evaluation"]) == strip(final)


def test_gather_ordered_reassembles_uneven_shards():
    total, world = 7, 3
    shards = {r: list(range(r, total, world)) for r in range(world)}  # sizes 3, 2, 2
    data = torch.arange(total, dtype=torch.float32)[:, None] * 10
    padded = []

    def fake_all_gather(t):  # what every rank would receive: the stacked padded shards of all ranks
        padded.append(t)
        return torch.stack([_pad(data[shards[r]] if t.dtype == torch.float32 else torch.tensor(shards[r]), t) for r in range(world)])

    out = gather_ordered(data[shards[1]], shards[1], total, world, fake_all_gather)
    assert torch.equal(out, data)


def _pad(x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    fill = -1 if like.dtype == torch.long else 0
    out = torch.full(like.shape, fill, dtype=like.dtype)
    out[: x.shape[0]] = x.reshape(x.shape[0], *like.shape[1:])
    return out


@pytest.mark.parametrize("section, message", [
    ({"samplers": [{"name": "ddim"}], "nfes": [3]}, "unknown config key 'evaluation.nfes' in evaluation; allowed at 'evaluation': samplers, nfe"),
    ({"samplers": [{"name": "nope"}]}, "unknown continuous sampler 'nope'"),
    ({"samplers": [{"name": "ddim", "etaa": 1}]}, "unknown option(s) etaa"),
    ({"samplers": [{"name": "fhs"}]}, "'fhs' is a masked sampler, but a continuous sampler is needed"),
    ({"samplers": [{"name": "ddim"}, {"name": "ddim"}]}, "share the label(s) ddim"),
    ({"samplers": [{"name": "ddim", "label": "a/b"}]}, "label 'a/b' may only use"),
    ({"samplers": [{"name": "ddim"}], "num_samples": 1}, "evaluation.num_samples must be an integer >= 2"),
    ({"samplers": [{"name": "ddim"}], "nfe": [0]}, "evaluation.nfe must be an integer >= 1"),
    ({"samplers": [{"name": "ddim"}], "after_fit": "maybe"}, "config key 'evaluation.after_fit' in evaluation must be bool"),
])
def test_bad_settings_name_the_setting(section, message):
    with pytest.raises(ValueError) as err:
        evaluation_settings(section)
    assert message in str(err.value)


def test_labels_and_per_sampler_nfe():
    s = evaluation_settings({"samplers": [{"name": "deis", "ab_order": 3}, {"name": "ddim", "label": "ddim-eta1", "eta": 1.0, "nfe": [7]}]})
    assert [(e.label, e.nfe) for e in s.entries] == [("deis_ab_order3", [5, 10, 20]), ("ddim-eta1", [7])]
    assert sampler_label({"name": "x", "grid": [0.9, 0.5]}) == "x_grid0.9,0.5"
    assert not evaluation_settings({}).enabled


def test_sample_py_evaluate_scores_the_checkpoints_evaluation_set(run_dir, tmp_path, capsys):
    import sample

    ckpt = run_dir / "checkpoints" / "last.ckpt"
    assert sample.main(["--ckpt", str(ckpt), "--sampler", "config", "--evaluate", "--num-samples", "32",
                        "--batch-size", "16", "--seed", "1", "--out", str(tmp_path)]) == 0
    rows = json.loads((tmp_path / "eval" / "cli" / "table.json").read_text())["rows"]
    final = table(run_dir, "final")["rows"]
    assert [r["fid"] for r in rows] == [r["fid"] for r in final]  # same checkpoint, seed and n: same numbers
    assert "| ddim | 3 | 32 |" in capsys.readouterr().out
