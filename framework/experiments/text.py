"""The text (masked diffusion) experiment: data and module from a config, the after-training report, sample.py."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import torch

from datamodules.text import decode

from ..evaluation import EvaluationSettings, TextTask, evaluation_settings
from ..io import atomic_write_text, write_json, write_table
from ..metrics.text import evaluate_rows
from ..metrics.text_evaluator import build_evaluator
from ..modules.masked import MaskedDiffusion
from ..samplers import build_from_config, sampler_class
from ..samplers.generate import generate_tokens
from ..samplers.labels import sampler_label
from .base import Experiment


def build_datamodule(config: dict, tokenizer_json=None):
    """The text data module of a config; `tokenizer_json`: a trained tokenizer (from a checkpoint) to reuse."""
    from datamodules.text import TextDataModule

    return TextDataModule(**config["data"], tokenizer_json=tokenizer_json, seed=int(config["seed"]))


class TextExperiment(Experiment):
    """MaskedDiffusion on text with the masked samplers; quality = generative perplexity with entropy."""

    kind = "masked"
    family = "masked"
    module_class = MaskedDiffusion
    seeded_data_order = False

    def build(self):
        """(MaskedDiffusion, TextDataModule); the tokenizer is trained on the training split first."""
        datamodule = self.datamodule()
        datamodule.setup()
        return MaskedDiffusion(self.config, datamodule.tokenizer_json), datamodule

    def datamodule(self, module=None):
        return build_datamodule(self.config, None if module is None else module.hparams.tokenizer_json)

    def evaluation_settings(self, section: dict) -> EvaluationSettings:
        return evaluation_settings(section, family=self.family, length=int(self.config["data"]["seq_len"]))

    def task(self, settings: EvaluationSettings, distributed: bool = True) -> TextTask:
        return TextTask(settings, distributed=distributed)

    def sampling_summary(self, module: MaskedDiffusion, datamodule, out_dir: Path) -> dict:
        """Sample with every sampler of `sampling:`; write the texts and a table with gen. perplexity and entropy."""
        sampling = self.config["sampling"]
        n, seed = int(sampling["num_samples"]), int(sampling["seed"])
        samples = {}
        module.eval()
        with module.ema_weights():
            for s_cfg in sampling["samplers"]:
                sampler = build_from_config({k: v for k, v in dict(s_cfg).items() if k != "label"}, family=self.family)
                samples[sampler_label(s_cfg)] = generate_tokens(
                    module.net, sampler, None, range(n), seed, module.seq_len, module.mask_id, module.schedule,
                    int(sampling["batch_size"]), module.device)
        lm = build_evaluator(self.config["evaluation"], module.hparams.tokenizer_json, datamodule)
        rows = evaluate_rows(lm, samples, datamodule.blocks["test"][:n])
        text = "".join(f"## {label}\n\n" + "\n\n".join(decode(module.tokenizer, tokens)) + "\n\n"
                       for label, (tokens, _) in samples.items())
        atomic_write_text(Path(out_dir) / "samples" / "text_samples.md", text)
        write_table(rows, Path(out_dir) / "samples" / "summary.csv", Path(out_dir) / "samples" / "summary.md")
        return {"rows": rows}

    def check_cli(self, args) -> None:
        if args.label is not None or args.guidance_scale != 1.0:
            raise ValueError("--label and --guidance-scale are for class-conditional image checkpoints; "
                             "a text checkpoint takes neither")

    def write_samples(self, args, module: MaskedDiffusion, sampler) -> None:
        """The decoded texts and a JSON of the settings and timings (--nfe spent by the sampler's own rule)."""
        if args.nfe is not None:
            sampler = sampler.with_nfe(args.nfe, module.seq_len)
        device = torch.device(args.device)
        module.to(device).eval()
        with module.ema_weights():
            tokens, stats = generate_tokens(module.net, sampler, None, range(args.num_samples), args.seed, module.seq_len,
                                            module.mask_id, module.schedule, args.batch_size, device)
        out = Path(args.out)
        name = sampler_label({"name": args.sampler, **args.options}) + (f"_nfe{args.nfe}" if args.nfe else "")
        atomic_write_text(out / f"{name}.txt", "\n\n".join(decode(module.tokenizer, tokens)) + "\n")
        write_json(out / f"{name}.json", {"sampler": sampler.to_config(), **stats, "seed": args.seed,
                                          "checkpoint": str(args.ckpt)})
        print(f"wrote {len(tokens)} samples ({name}, {stats['nfe_per_sample']:.1f} NFE/sample, "
              f"{stats['seconds']:.2f}s) to {out / (name + '.txt')}")

    def natural_nfe(self, name: str) -> Optional[list[int]]:
        """A sampler whose NFE no option sets (fhs: one evaluation per token) runs at the sequence length."""
        if sampler_class(name).nfe_option is None:
            return [int(self.config["data"]["seq_len"])]
        return None
