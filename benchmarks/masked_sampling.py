"""Masked-diffusion sampling benchmark (Zheng et al. 2024, Sec. 4-5) on the KJV model.

Trains the default model (configs/text_kjv.yaml, or loads --ckpt), trains/loads the cached evaluator
LM, then prints two tables and writes them with a plot:

1. End to end, for FHS and the T-step sampler (--steps, float32 and float64): wall time per sample,
   NFE per sample, generative perplexity and unigram entropy with their standard errors, FHS's
   speed-up over T-step, and the held-out reference.
2. The mechanism, without Monte Carlo noise: the entropy of the token one T-step draw reveals, under
   float32 and float64 (the closed-form law `reveal_law`), averaged over the model's own conditionals
   on held-out text masked at reveal times t spread by the schedule.

Samples are cached per row under <out>/samples/, so an interrupted run resumes, and two processes
with different --steps/--precisions and --sample-only can share the sampling (then run once without).

  python benchmarks/masked_sampling.py --out runs/bench_masked [--ckpt path] [--steps 128 512 2048 8192]
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402


def train_model(cfg, out: Path):
    import lightning as L

    from framework.experiments import experiment_for

    L.seed_everything(int(cfg.seed), verbose=False)
    module, dm = experiment_for(cfg).build()
    trainer = L.Trainer(default_root_dir=str(out), logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        **{k: v for k, v in dict(cfg.trainer).items() if k not in ("enable_progress_bar",)})
    start = time.time()
    trainer.fit(module, datamodule=dm)
    metrics = trainer.validate(module, datamodule=dm, verbose=False)[0]
    trainer.save_checkpoint(str(out / "model.ckpt"))
    print(f"trained in {time.time() - start:.0f}s; val NLL bound {metrics['val/nll']:.3f} nats/token = {metrics['val/bpt']:.3f} bits/token")
    return module, dm


def _entropy(q: torch.Tensor) -> torch.Tensor:
    return -(q * q.clamp_min(1e-300).log()).sum(-1)


@torch.no_grad()
def reveal_entropy_rows(net, schedule, blocks: torch.Tensor, mask_id: int, steps, n_times: int = 32, seed: int = 0) -> list[dict]:
    """Per T and precision: the mean entropy of the token a T-step draw reveals, and how often it reveals.

    At each reveal time t (midpoints of n_times equal bins of alpha, i.e. spread as the reveal times
    are), the held-out blocks are masked with probability 1 - alpha(t) and the model's conditionals p
    at the masked positions are pushed through `reveal_law` with eps = (alpha_s - alpha_t)/(1 - alpha_t),
    s = t - 1/T (the uniform T-step grid). `reveal_rate` = P(reveal) / eps (1 for an exact draw).
    """
    from framework.samplers.masked.categorical import reveal_law

    g = torch.Generator().manual_seed(seed)
    alphas = (torch.arange(n_times, dtype=torch.float64) + 0.5) / n_times
    times = schedule.t_from_alpha(alphas)
    model_entropy = 0.0
    acc = {(T, prec): [0.0, 0.0] for T in steps for prec in ("float64", "float32")}  # revealed entropy, rate
    for t in times.tolist():
        x = blocks.clone()
        masked = torch.rand(x.shape, generator=g, dtype=torch.float64) < 1 - float(schedule.alpha(t))
        x[masked] = mask_id
        p = torch.softmax(net(x).to(torch.float64), dim=-1)[masked]
        model_entropy += float(_entropy(p).mean()) / n_times
        for T in steps:
            s = max(t - 1.0 / T, 0.0)
            eps = float((schedule.alpha(s) - schedule.alpha(t)) / (1 - schedule.alpha(t)))
            for prec in ("float64", "float32"):
                q = reveal_law(p, eps, prec)
                rate = q.sum(-1)
                a = acc[(T, prec)]
                a[0] += float(_entropy(q / rate[:, None]).mean()) / n_times
                a[1] += float(rate.mean()) / eps / n_times
    return [{"steps": T, "precision": prec, "model_entropy": model_entropy, "revealed_entropy": a[0],
             "entropy_drop": model_entropy - a[0], "reveal_rate": a[1]} for (T, prec), a in acc.items()]


def _slug(label: str) -> str:
    return label.replace("=", "").replace(" ", "_")


def cached_samples(path: Path, make):
    """(tokens, stats) from `path` if present, else make() saved atomically (a crash resumes here)."""
    from framework.io import atomic_write_bytes

    if path.exists():
        return torch.load(path, weights_only=True)
    result = make()
    buf = io.BytesIO()
    torch.save(result, buf)
    atomic_write_bytes(path, buf.getvalue())
    return result


def main(argv=None) -> int:
    from framework.config import load_config
    from datamodules.text import decode
    from framework.experiments import load_checkpoint
    from framework.io import write_table
    from framework.metrics.text import evaluate_rows
    from framework.metrics.text_evaluator import build_evaluator
    from framework.samplers import build_sampler
    from framework.samplers.generate import generate_tokens

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="configs/text_kjv.yaml")
    p.add_argument("--ckpt", default=None, help="reuse a trained model instead of training")
    p.add_argument("--out", default="runs/bench_masked")
    p.add_argument("--steps", type=int, nargs="+", default=[128, 512, 2048, 8192])
    p.add_argument("--mechanism-steps", type=int, nargs="+", default=[128, 512, 2048, 8192, 32768],
                   help="T values of the closed-form table (cheap: no sampling)")
    p.add_argument("--precisions", nargs="+", default=["float64", "float32"], choices=["float64", "float32"])
    p.add_argument("--num-samples", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--sample-only", action="store_true", help="fill the sample cache and stop (to split the work)")
    p.add_argument("overrides", nargs="*")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = load_config(args.config, args.overrides)
    ckpt = args.ckpt or ((out / "model.ckpt") if (out / "model.ckpt").exists() else None)  # a rerun reuses its model
    if ckpt:
        experiment, module = load_checkpoint(ckpt)
        dm = experiment.datamodule(module)
        dm.setup()
    else:
        module, dm = train_model(cfg, out)
    module.eval()
    configs = [("fhs", {})] + [("mdlm_tstep", {"steps": s, "precision": prec}) for s in args.steps for prec in args.precisions]
    samples = {}
    with module.ema_weights():
        for name, opts in configs:
            label = name if not opts else f"T={opts['steps']} {opts['precision']}"

            def make(name=name, opts=opts):
                return generate_tokens(module.net, build_sampler(name, **opts), None, range(args.num_samples), 0, module.seq_len,
                                       module.mask_id, module.schedule, args.batch_size)

            samples[label] = cached_samples(out / "samples" / f"{_slug(label)}_n{args.num_samples}.pt", make)
            print(f"{label}: {samples[label][1]['seconds_per_sample'] * 1e3:.1f} ms/sample, {samples[label][1]['nfe_per_sample']:.1f} NFE/sample", flush=True)
        if args.sample_only:
            return 0
        mechanism = reveal_entropy_rows(module.net, module.schedule, dm.blocks["test"][:256], module.mask_id, args.mechanism_steps)
    write_table(mechanism, out / "reveal_entropy.csv", out / "reveal_entropy.md")
    print((out / "reveal_entropy.md").read_text())
    lm = build_evaluator(module.hparams.config.get("evaluation") or {}, module.hparams.tokenizer_json, dm)
    rows = evaluate_rows(lm, samples, dm.blocks["test"][: args.num_samples], errors=True)
    fhs_time = samples["fhs"][1]["seconds_per_sample"]
    for r in rows:
        r["speedup_of_fhs"] = r["seconds_per_sample"] / fhs_time if r["seconds_per_sample"] else float("nan")
    write_table(rows, out / "masked_sampling.csv", out / "masked_sampling.md")
    print((out / "masked_sampling.md").read_text())
    with open(out / "samples.md", "w") as f:
        for label, (tokens, _) in samples.items():
            f.write(f"### {label}\n\n" + "\n\n".join(f"> {s}" for s in decode(module.tokenizer, tokens[:3])) + "\n\n")
    plot(rows, mechanism, args.steps, args.mechanism_steps, args.precisions, out / "masked_sampling.png")
    return 0


def plot(rows, mechanism, steps, mechanism_steps, precisions, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    styles = {"float64": "o-", "float32": "s--"}
    for prec in precisions:
        sel = [next(r for r in rows if r["sampler"] == f"T={s} {prec}") for s in steps]
        ppl = torch.tensor([r["gen_ppl"] for r in sel])
        err = torch.tensor([r["log_ppl_se"] for r in sel])
        axes[0].errorbar(steps, ppl, yerr=[ppl - ppl * torch.exp(-err), ppl * torch.exp(err) - ppl], fmt=styles[prec],
                         capsize=3, label=f"T-step {prec}")
        axes[1].errorbar(steps, [r["entropy"] for r in sel], yerr=[r["entropy_se"] for r in sel], fmt=styles[prec],
                         capsize=3, label=f"T-step {prec}")
        axes[2].plot(mechanism_steps, [next(m for m in mechanism if m["steps"] == s and m["precision"] == prec)["revealed_entropy"]
                                       for s in mechanism_steps], styles[prec], label=f"one T-step draw, {prec}")
    axes[2].axhline(mechanism[0]["model_entropy"], color="k", ls=":", label="model's conditionals")
    for key, ax in zip(("gen_ppl", "entropy"), axes):
        for label, c in (("fhs", "k"), ("held-out text", "g")):
            ax.axhline(next(r for r in rows if r["sampler"] == label)[key], color=c, ls=":", label=label)
    labels = ("generative perplexity", "unigram entropy per sample (nats)", "entropy of the revealed token (nats)")
    for ax, label in zip(axes, labels):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("T (steps)")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
