"""Masked-diffusion sampling benchmark (Zheng et al. 2024, Sec. 4-5) on the KJV model.

Trains the default model (configs/text_kjv.yaml, or loads --ckpt), trains/loads the cached evaluator
LM, then prints for FHS and the T-step sampler (128/512/2048 steps, float32 and float64): wall time
per sample, NFE per sample, generative perplexity and unigram entropy, FHS's speed-up over T-step,
and the held-out reference. Writes a markdown table, a CSV and a plot.

  python benchmarks/masked_sampling.py --out runs/bench_masked [--ckpt path] [--steps 128 512 2048]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def train_model(cfg, out: Path):
    import lightning as L

    from framework.diffusion.masked_module import build_experiment

    L.seed_everything(int(cfg.seed), verbose=False)
    module, dm = build_experiment(cfg)
    trainer = L.Trainer(default_root_dir=str(out), logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        **{k: v for k, v in dict(cfg.trainer).items() if k not in ("enable_progress_bar",)})
    start = time.time()
    trainer.fit(module, datamodule=dm)
    metrics = trainer.validate(module, datamodule=dm, verbose=False)[0]
    trainer.save_checkpoint(str(out / "model.ckpt"))
    print(f"trained in {time.time() - start:.0f}s; val NLL bound {metrics['val/nll']:.3f} nats/token = {metrics['val/bpt']:.3f} bits/token")
    return module, dm


def main(argv=None) -> int:
    import torch

    from framework.config import load_config
    from framework.diffusion.masked_generate import decode, evaluate_rows, generate_tokens
    from framework.diffusion.masked_module import build_datamodule, build_evaluator, load_module
    from framework.io import write_table
    from framework.samplers import build_sampler

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/text_kjv.yaml")
    p.add_argument("--ckpt", default=None, help="reuse a trained model instead of training")
    p.add_argument("--out", default="runs/bench_masked")
    p.add_argument("--steps", type=int, nargs="+", default=[128, 512, 2048])
    p.add_argument("--num-samples", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(args.config, args.overrides)
    if args.ckpt:
        module = load_module(args.ckpt)
        dm = build_datamodule(module.hparams.config, module.hparams.tokenizer_json)
        dm.setup()
    else:
        module, dm = train_model(cfg, out)
    module.eval()
    configs = [("fhs", {})] + [("mdlm_tstep", {"steps": s, "precision": prec}) for s in args.steps for prec in ("float64", "float32")]
    samples, texts = {}, {}
    with module.ema_weights():
        for name, opts in configs:
            sampler = build_sampler(name, **opts)
            label = name if not opts else f"T={opts['steps']} {opts['precision']}"
            samples[label] = generate_tokens(module.net, sampler, range(args.num_samples), 0, module.seq_len, module.mask_id,
                                             module.schedule, args.batch_size)
            texts[label] = decode(module.tokenizer, samples[label][0][:3])
            print(f"{label}: {samples[label][1]['seconds_per_sample'] * 1e3:.1f} ms/sample, {samples[label][1]['nfe_per_sample']:.1f} NFE/sample", flush=True)
    lm = build_evaluator(module.hparams.config, module.hparams.tokenizer_json, dm)
    rows = evaluate_rows(lm, samples, dm.blocks["test"][: args.num_samples])
    fhs_time = samples["fhs"][1]["seconds_per_sample"]
    for r in rows:
        r["speedup_of_fhs"] = r["seconds_per_sample"] / fhs_time if r["seconds_per_sample"] else float("nan")
    write_table(rows, out / "masked_sampling.csv", out / "masked_sampling.md")
    print((out / "masked_sampling.md").read_text())
    with open(out / "samples.md", "w") as f:
        for label, t in texts.items():
            f.write(f"### {label}\n\n" + "\n\n".join(f"> {s}" for s in t) + "\n\n")
    plot(rows, args.steps, out / "masked_sampling.png")
    return 0


def plot(rows, steps, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for prec, style in (("float64", "o-"), ("float32", "s--")):
        sel = [next(r for r in rows if r["sampler"] == f"T={s} {prec}") for s in steps]
        axes[0].plot(steps, [r["gen_ppl"] for r in sel], style, label=f"T-step {prec}")
        axes[1].plot(steps, [r["entropy"] for r in sel], style, label=f"T-step {prec}")
    for key, ax in zip(("gen_ppl", "entropy"), axes):
        for label, c in (("fhs", "k"), ("held-out text", "g")):
            ax.axhline(next(r for r in rows if r["sampler"] == label)[key], color=c, ls=":", label=label)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("T (steps)")
        ax.set_ylabel({"gen_ppl": "generative perplexity", "entropy": "unigram entropy (nats)"}[key])
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
