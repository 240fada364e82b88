"""MaskedDiffusion end to end on a tiny corpus: train, checkpoint alone rebuilds it, after_fit and sample_cli write text."""

import argparse

import lightning as L
import pytest
import torch

from framework.config import load_config
from framework.diffusion.masked_module import MaskedDiffusion, after_fit, build_experiment, sample_cli, sampler_for_cli


@pytest.fixture()
def cfg(tmp_path):
    text = "\n\n".join(f"Verse {i}: and the word was with them, and they went unto the city." for i in range(300))
    (tmp_path / "c.txt").write_text(text)
    return load_config("configs/text_tiny.yaml", [f"out_dir={tmp_path / 'run'}", "data.source=files",
                                                  f"+data.paths=[{tmp_path / 'c.txt'}]",
                                                  f"evaluation.cache_dir={tmp_path / 'cache'}"])


def test_train_reload_sample(cfg, tmp_path):
    module, dm = build_experiment(cfg)
    trainer = L.Trainer(max_steps=3, accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        limit_val_batches=1, enable_model_summary=False, default_root_dir=str(tmp_path))
    trainer.fit(module, datamodule=dm)
    assert int(module.ema.num_updates) == 3
    metrics = trainer.validate(module, datamodule=dm, verbose=False)[0]
    assert 0 < metrics["val/bpt"] < 2 * 9  # bits per token, at most about log2(V = 300) for an untrained model
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(str(ckpt))
    again = MaskedDiffusion.load_from_checkpoint(str(ckpt))
    assert again.hparams.config["kind"] == "masked" and again.tokenizer.to_str() == module.tokenizer.to_str()
    x = torch.randint(0, module.vocab_size + 1, (2, 16))
    assert torch.equal(again.net.eval()(x), module.net.eval()(x))
    summary = after_fit(cfg, module, dm, tmp_path / "run")
    labels = [r["sampler"] for r in summary["rows"]]
    assert labels == ["fhs", "mdlm_tstep(steps=8)", "held-out text"]
    assert summary["rows"][0]["nfe_per_sample"] == 16  # one evaluation per token
    assert (tmp_path / "run" / "samples" / "text_samples.md").read_text().count("## ") == 2
    args = argparse.Namespace(ckpt=str(ckpt), sampler="fhs_parallel", nfe=4, num_samples=3, batch_size=2, seed=1,
                              out=str(tmp_path / "s"), options={}, device="cpu")
    sample_cli(args, again)
    out = (tmp_path / "s" / "fhs_parallel(k=4,precision=float64).txt").read_text()
    assert len(out.strip().split("\n\n")) == 3


def test_cli_mapping_and_errors():
    assert sampler_for_cli("mdlm_tstep", 512, {}, 64).options["steps"] == 512
    assert sampler_for_cli("fhs_parallel", 16, {}, 64).options["k"] == 4
    with pytest.raises(ValueError, match="--nfe=10 is not allowed"):
        sampler_for_cli("fhs", 10, {}, 64)
    with pytest.raises(ValueError, match="not a masked sampler"):
        sampler_for_cli("ddim", None, {}, 64)
