"""The text experiment end to end on a tiny corpus: train, the checkpoint alone rebuilds it, after_fit and
sample() write text, sample.py --evaluate scores a text checkpoint."""

import argparse
import json
from types import SimpleNamespace

import lightning as L
import pytest
import torch

import sample
from framework.config import load_config
from framework.experiments import experiment_for, load_checkpoint


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """3 training steps on a tiny corpus, the checkpoint, a validation and after_fit (eval/final with 3 rows)."""
    tmp = tmp_path_factory.mktemp("masked")
    text = "\n\n".join(f"Verse {i}: and the word was with them, and they went unto the city." for i in range(300))
    (tmp / "c.txt").write_text(text)
    cfg = load_config("configs/text_tiny.yaml", [f"out_dir={tmp / 'run'}", "data.source=files",
                                                 f"+data.paths=[{tmp / 'c.txt'}]", f"evaluation.cache_dir={tmp / 'cache'}"])
    experiment = experiment_for(cfg)
    module, dm = experiment.build()
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        limit_val_batches=1, enable_model_summary=False, default_root_dir=str(tmp))
    trainer.fit(module, datamodule=dm)
    metrics = trainer.validate(module, datamodule=dm, verbose=False)[0]
    ckpt = tmp / "m.ckpt"
    trainer.save_checkpoint(str(ckpt))
    summary = experiment.after_fit(module, dm, tmp / "run")
    return SimpleNamespace(tmp=tmp, module=module, ckpt=ckpt, metrics=metrics, summary=summary)


def test_train_reload_sample(trained, tmp_path):
    module, ckpt = trained.module, trained.ckpt
    assert int(module.ema.num_updates) == 3
    assert 0 < trained.metrics["val/bpt"] < 2 * 9  # bits per token, at most about log2(V = 300) for an untrained model
    experiment, again = load_checkpoint(ckpt)
    assert again.hparams.config["kind"] == "masked" and again.tokenizer.to_str() == module.tokenizer.to_str()
    x = torch.randint(0, module.vocab_size + 1, (2, 16))
    assert torch.equal(again.net.eval()(x), module.net.eval()(x))
    labels = [r["sampler"] for r in trained.summary["rows"]]
    assert labels == ["fhs", "mdlm_tstep_steps8", "held-out text"]
    assert trained.summary["rows"][0]["nfe_per_sample"] == 16  # one evaluation per token
    assert (trained.tmp / "run" / "samples" / "text_samples.md").read_text().count("## ") == 2
    args = argparse.Namespace(ckpt=str(ckpt), sampler="fhs_parallel", nfe=4, num_samples=3, batch_size=2, seed=1,
                              out=str(tmp_path / "s"), options={}, device="cpu", evaluate=False, label=None,
                              guidance_scale=1.0)
    experiment.sample(args, again)
    out = (tmp_path / "s" / "fhs_parallel_nfe4.txt").read_text()
    assert len(out.strip().split("\n\n")) == 3


def scores(table_json) -> list[tuple]:
    return [(r["sampler"], r["nfe"], r["num_samples"], r["gen_ppl"], r["entropy"])
            for r in json.loads(table_json.read_text())["rows"]]


def test_sample_py_evaluate_scores_a_text_checkpoint(trained, tmp_path, capsys):
    ckpt = str(trained.ckpt)
    # --sampler config: the checkpoint's evaluation set; same weights, seed and n as after_fit, so the same numbers
    assert sample.main(["--ckpt", ckpt, "--sampler", "config", "--evaluate", "--num-samples", "8", "--batch-size", "3",
                        "--seed", "0", "--out", str(tmp_path / "all")]) == 0
    final = scores(trained.tmp / "run" / "eval" / "final" / "table.json")
    assert [r[:2] for r in final] == [("fhs", 16), ("mdlm_tstep", 4), ("mdlm_tstep", 8), ("real_data", 0)]
    assert scores(tmp_path / "all" / "eval" / "cli" / "table.json") == final
    assert "| fhs | 16 | 8 |" in capsys.readouterr().out  # the table is printed
    assert not list((tmp_path / "all").glob("*.txt"))  # config mode only evaluates
    # one sampler at one NFE: the texts as without --evaluate, plus a one-row table
    assert sample.main(["--ckpt", ckpt, "--sampler", "fhs_parallel", "--nfe", "4", "--evaluate", "--num-samples", "5",
                        "--batch-size", "2", "--seed", "1", "--out", str(tmp_path / "one")]) == 0
    assert (tmp_path / "one" / "fhs_parallel_nfe4.txt").is_file()
    row, real = scores(tmp_path / "one" / "eval" / "cli" / "table.json")
    assert real[:3] == ("real_data", 0, 5)
    assert row[:3] == ("fhs_parallel", 4, 5) and row[3] > 1 and row[4] > 0
    assert "| fhs_parallel | 4 | 5 |" in capsys.readouterr().out


@pytest.mark.parametrize("name, nfes", [("fhs", [16]), ("mdlm_tstep", [4, 8])])
def test_sample_py_evaluate_without_nfe(trained, tmp_path, name, nfes):
    """fhs at its L evaluations; the others at the checkpoint's evaluation NFEs (text_tiny: 4 and 8)."""
    assert sample.main(["--ckpt", str(trained.ckpt), "--sampler", name, "--evaluate", "--num-samples", "4",
                        "--out", str(tmp_path)]) == 0
    assert [r[:3] for r in scores(tmp_path / "eval" / "cli" / "table.json")] == [(name, k, 4) for k in nfes] + [("real_data", 0, 4)]


@pytest.mark.parametrize("extra, message", [
    (["--sampler", "mdlm_tstep", "--option", "steps=8"], "steps"),
    (["--sampler", "mdlm_tstep", "--nfe", "8", "--option", "steps=4"], "steps=4"),
    (["--sampler", "ddim", "--nfe", "8"], "continuous"),
    (["--sampler", "fhs", "--nfe", "4"], "nfe=4 is not allowed"),
    (["--sampler", "config", "--num-samples", "1"], "evaluation.num_samples must be an integer >= 2"),
    (["--sampler", "fhs", "--label", "3"], "--label and --guidance-scale are for class-conditional image checkpoints"),
])
def test_sample_py_evaluate_bad_requests_name_the_option(trained, tmp_path, capsys, extra, message):
    assert sample.main(["--ckpt", str(trained.ckpt), "--evaluate", "--out", str(tmp_path), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())  # nothing was sampled or written


def test_sampler_config_needs_an_evaluation_section(trained, tmp_path):
    experiment, module = load_checkpoint(trained.ckpt)
    experiment.config["evaluation"] = {"evaluator": "project"}
    args = argparse.Namespace(ckpt=str(trained.ckpt), sampler="config", nfe=None, num_samples=8, batch_size=8, seed=0,
                              out=str(tmp_path), options={}, device="cpu", evaluate=True, label=None, guidance_scale=1.0)
    with pytest.raises(ValueError, match="--sampler config needs a checkpoint whose config lists evaluation.samplers"):
        experiment.sample(args, module)

