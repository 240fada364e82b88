"""MaskedDiffusion: the LightningModule training a time-free bidirectional transformer with the
masked-diffusion ELBO (Zheng et al. 2024; MDLM), plus the experiment hooks train.py / sample.py call.

The module owns training only: the ELBO (time or count form, stratified), EMA, the optimizer and the
validation NLL bound in bits per token. The tokenizer JSON and the config live in the hyper-parameters,
so `MaskedDiffusion.load_from_checkpoint(path)` rebuilds everything. Sampling and evaluation live in
masked_generate.py and framework.metrics.
"""

from __future__ import annotations

import math
from pathlib import Path

import lightning as L
import torch

from .. import samplers as _samplers  # noqa: F401
from ..config import call_with_section, to_dict
from ..io import atomic_write_text, write_json, write_table
from ..samplers import build_from_config, build_sampler
from ..samplers import masked as _masked  # noqa: F401  (registers the masked samplers)
from .ema import EMA, EMATraining
from .masked_generate import decode, evaluate_rows, generate_tokens, label_of
from .masked_loss import LOSS_FORMS, elbo_estimate
from .masking import build_masking_schedule
from .optim import build_optimizer


class MaskedDiffusion(EMATraining, L.LightningModule):
    """Masked diffusion LM: loss = negative ELBO per token (nats); val/nll and val/bpt on EMA weights."""

    def __init__(self, config: dict, tokenizer_json: str):
        super().__init__()
        config = {**to_dict(config), "kind": "masked"}
        self.save_hyperparameters({"config": config, "tokenizer_json": tokenizer_json})
        from models.transformer import MaskedTransformer
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.vocab_size = self.tokenizer.get_vocab_size()
        self.mask_id = self.vocab_size
        self.seq_len = int(config.get("data", {}).get("seq_len", 64))
        diff = dict(config.get("diffusion", {}))
        self.schedule = build_masking_schedule(**dict(diff.get("schedule", {"kind": "linear"})))
        self.loss_form = diff.get("loss", "count")
        if self.loss_form not in LOSS_FORMS:
            raise ValueError(f"diffusion.loss={self.loss_form!r} is not allowed; allowed: {', '.join(LOSS_FORMS)}")
        self.stratified = bool(diff.get("stratified", True))
        model_cfg = {k: v for k, v in dict(config.get("model", {})).items() if k != "name"}
        self.net = call_with_section(MaskedTransformer, "model", model_cfg, vocab_size=self.vocab_size, max_len=self.seq_len)
        self.ema = EMA(self.net, decay=float(diff.get("ema_decay", 0.999)))
        self.seed = int(config.get("seed", 0))

    def _nll_per_token(self, tokens: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        est = elbo_estimate(self.net, tokens, self.mask_id, self.loss_form, self.schedule, g, self.stratified)
        return est.mean() / tokens.shape[1]

    def training_step(self, batch, batch_idx):
        loss = self._nll_per_token(batch[0], self._step_generator())
        self.log("train/loss", loss.float(), prog_bar=True, on_step=True, on_epoch=False)
        return loss.float()

    def validation_step(self, batch, batch_idx):
        with self.ema_weights():
            nll = self._nll_per_token(batch[0], self._validation_generator(batch_idx))
        n = batch[0].shape[0]
        self.log("val/nll", nll.float(), prog_bar=True, sync_dist=True, batch_size=n)
        self.log("val/bpt", (nll / math.log(2)).float(), sync_dist=True, batch_size=n)

    def configure_optimizers(self):
        return build_optimizer(self.net.parameters(), **dict(self.hparams.config.get("optimizer", {})))



# --- experiment hooks (train.py / sample.py) ---------------------------------------------
def build_datamodule(config: dict, tokenizer_json=None):
    from datamodules.text import TextDataModule

    data = {k: v for k, v in dict(config.get("data", {})).items() if k != "name"}
    return call_with_section(TextDataModule, "data", data, tokenizer_json=tokenizer_json, seed=int(config.get("seed", 0)))


def build_experiment(cfg):
    """(MaskedDiffusion, TextDataModule); the tokenizer is trained on the training split first."""
    config = to_dict(cfg)
    datamodule = build_datamodule(config)
    datamodule.setup()
    module = MaskedDiffusion(config, datamodule.tokenizer_json)
    return module, datamodule


def load_module(path, map_location="cpu") -> MaskedDiffusion:
    return MaskedDiffusion.load_from_checkpoint(str(path), map_location=map_location)


def build_evaluator(config: dict, tokenizer_json: str, datamodule, log=print):
    """The project's cached causal LM, or 'hf:<local path>' (optional extra `transformers`)."""
    from datamodules.text import EOT

    from ..metrics.text_evaluator import HFEvaluator, load_or_train_evaluator

    ev = dict(config.get("evaluation", {}))
    choice = ev.get("evaluator", "project")
    if isinstance(choice, str) and choice.startswith("hf:"):
        return HFEvaluator(choice[3:], tokenizer_json)
    if choice != "project":
        raise ValueError(f"evaluation.evaluator={choice!r} is not allowed; allowed: 'project', 'hf:<local path>'")
    datamodule.setup()
    tok = datamodule.tokenizer
    return load_or_train_evaluator(tokenizer_json, datamodule.blocks["train"], tok.get_vocab_size(), tok.token_to_id(EOT),
                                   ev.get("cache_dir", "runs/cache/evaluator"), ev.get("lm", {}), log)


def after_fit(cfg, module: MaskedDiffusion, datamodule, out_dir: Path) -> dict:
    """Sample with every configured sampler; write the texts and a table with gen. perplexity and entropy.

    With `evaluation.samplers` listed (and `evaluation.after_fit`, the default) the sampler evaluation
    runs too: eval/final/ gets the per-(sampler, NFE) table, the plot and the sample texts.
    """
    config = to_dict(cfg)
    sampling = dict(config.get("sampling", {}))
    n, seed = int(sampling.get("num_samples", 16)), int(sampling.get("seed", 0))
    samples = {}
    module.eval()
    with module.ema_weights():
        for s_cfg in sampling.get("samplers", [{"name": "fhs"}]):
            sampler = build_from_config({k: v for k, v in dict(s_cfg).items() if k != "label"})
            samples[label_of(dict(s_cfg))] = generate_tokens(
                module.net, sampler, range(n), seed, module.seq_len, module.mask_id, module.schedule,
                int(sampling.get("batch_size", 16)), module.device)
    lm = build_evaluator(config, module.hparams.tokenizer_json, datamodule)
    reference = datamodule.blocks["test"][:n]
    rows = evaluate_rows(lm, {k: (v[0], v[1]) for k, v in samples.items()}, reference)
    text = "".join(f"## {label}\n\n" + "\n\n".join(decode(module.tokenizer, tokens)) + "\n\n" for label, (tokens, _) in samples.items())
    atomic_write_text(Path(out_dir) / "samples" / "text_samples.md", text)
    write_table(rows, Path(out_dir) / "samples" / "summary.csv", Path(out_dir) / "samples" / "summary.md")
    summary = {"rows": rows}
    from ..callbacks.text_task import text_evaluation_settings

    settings = text_evaluation_settings(config)
    if settings.enabled and settings.after_fit:
        summary["evaluation"] = evaluate(config, module, datamodule, out_dir)
    return summary


def sampler_for_cli(name: str, nfe, options: dict, seq_len: int):
    """Map sample.py's --nfe onto each sampler: T for mdlm_tstep, k = ceil(L / nfe) for fhs_parallel, L for fhs."""
    options = dict(options)
    if nfe is not None:
        if name == "mdlm_tstep":
            options.setdefault("steps", int(nfe))
        elif name == "fhs_parallel":
            options.setdefault("k", -(-seq_len // int(nfe)))
        elif name == "fhs" and int(nfe) != seq_len:
            raise ValueError(f"sampler 'fhs' uses exactly L={seq_len} evaluations per sample; --nfe={nfe} is not allowed (omit it)")
    sampler = build_sampler(name, **options)
    if getattr(sampler, "data_kind", "continuous") != "masked":
        raise ValueError(f"sampler {name!r} is not a masked sampler; allowed: mdlm_tstep, fhs, fhs_parallel")
    return sampler


# the option an evaluation NFE sets, per masked sampler (fhs has none: it always uses L evaluations)
NFE_OPTION = {"mdlm_tstep": "steps", "fhs_parallel": "k"}


def masked_sampler_at(cfg: dict, nfe: int, seq_len: int):
    """An evaluation entry's masked sampler at one NFE, by sampler_for_cli's rule; the entry must not fix that option."""
    options = {k: v for k, v in dict(cfg).items() if k != "name"}
    name = str(cfg.get("name"))
    key = NFE_OPTION.get(name)
    if key in options:
        raise ValueError(f"evaluation sampler {name!r}: leave out {key!r}, the evaluation's nfe sets it "
                         f"({key} = {'nfe' if key == 'steps' else 'ceil(L / nfe)'})")
    return sampler_for_cli(name, nfe, options, seq_len)


def build_callbacks(cfg, out_dir: Path) -> list:
    """Training callbacks: the sampler evaluation (gen. perplexity + entropy) every N validation epochs, if configured.

    The `evaluation:` section is validated here (every sampler built at every NFE), so a bad entry
    fails before training starts.
    """
    from ..callbacks import SamplerEvaluation
    from ..callbacks.text_task import TextTask, text_evaluation_settings

    config = to_dict(cfg)
    settings = text_evaluation_settings(config)
    if settings.enabled and settings.every_n_val_epochs:
        return [SamplerEvaluation(settings, TextTask(settings, config), out_dir)]
    return []


def evaluate(config: dict, module: MaskedDiffusion, datamodule, out_dir: Path, tag: str = "final") -> list[dict]:
    """Run the text sampler evaluation once in this process (after training); rows of the table in <out>/eval/<tag>/."""
    from ..callbacks import Evaluator
    from ..callbacks.text_task import TextTask, text_evaluation_settings

    settings = text_evaluation_settings(config)
    task = TextTask(settings, config, distributed=False)
    task.prepare(datamodule)
    return Evaluator(settings, task, out_dir).run(module, tag, prefix=tag)


def sample_cli(args, module: MaskedDiffusion) -> None:
    """sample.py for masked models: write the decoded texts and a JSON of settings and timings into args.out.

    --evaluate scores them too (gen. perplexity + entropy, see evaluate_cli); with --sampler config it
    only runs the checkpoint's own evaluation set.
    """
    if getattr(args, "label", None) is not None or getattr(args, "guidance_scale", 1.0) != 1.0:
        raise ValueError("--label and --guidance-scale are for class-conditional image checkpoints; "
                         "a text checkpoint takes neither")
    evaluation = cli_evaluation(args, module) if getattr(args, "evaluate", False) else None  # fail before sampling
    if evaluation is not None and args.sampler == "config":
        evaluate_cli(args, module, evaluation)
        return
    sampler = sampler_for_cli(args.sampler, args.nfe, args.options, module.seq_len)
    device = torch.device(args.device)
    module.to(device).eval()
    with module.ema_weights():
        tokens, stats = generate_tokens(module.net, sampler, range(args.num_samples), args.seed, module.seq_len,
                                        module.mask_id, module.schedule, args.batch_size, device)
    out = Path(args.out)
    name = label_of(sampler.to_config()).replace(" ", "")
    atomic_write_text(out / f"{name}.txt", "\n\n".join(decode(module.tokenizer, tokens)) + "\n")
    write_json(out / f"{name}.json", {"sampler": sampler.to_config(), **stats, "seed": args.seed, "checkpoint": str(args.ckpt)})
    print(f"wrote {len(tokens)} samples ({name}, {stats['nfe_per_sample']:.1f} NFE/sample, {stats['seconds']:.2f}s) to {out / (name + '.txt')}")
    if evaluation is not None:
        evaluate_cli(args, module, evaluation)


def cli_evaluation(args, module: MaskedDiffusion) -> dict:
    """The validated `evaluation:` section that sample.py --evaluate runs.

    The checkpoint's section with --num-samples, --batch-size and --seed; unless --sampler config, its
    samplers are replaced by --sampler at --nfe (fhs at L; without --nfe the others take the section's
    NFEs). The option an NFE sets (steps, k) comes from --nfe only.
    """
    from ..callbacks.text_task import text_evaluation_settings

    config = module.hparams.config
    evaluation = {k: v for k, v in dict(config.get("evaluation") or {}).items()
                  if k not in ("every_n_val_epochs", "after_fit")}
    evaluation.update(num_samples=args.num_samples, batch_size=args.batch_size, seed=args.seed)
    if args.sampler != "config":
        key = NFE_OPTION.get(args.sampler)
        if key in args.options:
            raise ValueError(f"--option {key}={args.options[key]} cannot be used with --evaluate: the evaluation "
                             f"sets {key} from --nfe; give --nfe instead")
        sampler_for_cli(args.sampler, args.nfe, args.options, module.seq_len)  # the CLI's own errors (fhs at --nfe != L, ...)
        entry = {"name": args.sampler, **args.options}
        if args.nfe is not None:
            entry["nfe"] = [args.nfe]
        elif args.sampler == "fhs":
            entry["nfe"] = [module.seq_len]
        evaluation["samplers"] = [entry]
    if not evaluation.get("samplers"):
        raise ValueError("--sampler config needs a checkpoint whose config lists evaluation.samplers; "
                         "name a sampler instead (--sampler fhs|mdlm_tstep|fhs_parallel --nfe K --evaluate)")
    text_evaluation_settings({**config, "evaluation": evaluation})  # raises on a bad sampler, NFE or count
    return evaluation


def evaluate_cli(args, module: MaskedDiffusion, evaluation: dict) -> list[dict]:
    """sample.py --evaluate: run `evaluation` (from cli_evaluation) on the checkpoint in this process.

    Uses the checkpoint's tokenizer, data (reference split) and evaluator LM cache; writes <out>/eval/cli/
    (table, plot, decoded texts) and prints the table.
    """
    config = {**module.hparams.config, "evaluation": evaluation}
    module.to(torch.device(args.device)).eval()
    datamodule = build_datamodule(config, module.hparams.tokenizer_json)
    rows = evaluate(config, module, datamodule, Path(args.out), tag="cli")
    print((Path(args.out) / evaluation.get("out_subdir", "eval") / "cli" / "table.md").read_text())
    return rows
