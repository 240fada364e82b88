"""What the sampler evaluation needs to know about text: generate from a MaskedDiffusion module, score, show.

Generation goes through framework.samplers.generate.generate_tokens (sample i seeded by
(seed, i)); an entry's NFE is spent by the masked sampler's own rule (MaskedSampler.with_nfe).
Scores: framework.metrics.text_quality.TextQuality, i.e. generative perplexity under the
project's cached evaluator LM (framework.metrics.text_evaluator.build_evaluator) and the mean
per-sequence unigram entropy, always reported together.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional, Sequence

import torch

from datamodules.text import decode

from ..io import atomic_write_text
from ..metrics.text_evaluator import build_evaluator
from ..metrics.text_quality import TEXT_METRICS, TextQuality
from ..samplers.generate import generate_tokens
from .evaluator import fill_last_batch
from .settings import EvaluationSettings

class TextTask:
    """Text generation and generative perplexity + entropy for `SamplerEvaluation` (MaskedDiffusion on text data)."""

    metric_names: Sequence[str] = TEXT_METRICS
    plot_metrics: Sequence[str] = TEXT_METRICS

    def __init__(self, settings: EvaluationSettings, distributed: bool = True):
        self.settings, self.distributed = settings, distributed
        self.evaluator_config = settings.evaluator
        self.reference, self.metric_options = settings.reference, settings.metrics
        self.metric: Optional[TextQuality] = None
        self.real: Optional[torch.Tensor] = None
        self.tokenizer = None
        self.info: dict = {}

    def prepare(self, datamodule, is_writer: bool = True, barrier: Callable[[], None] = lambda: None) -> dict:
        """Load (or train once, on the writer, and cache) the evaluator LM and build the metric."""
        if self.metric is not None:
            return self.info
        if datamodule is None or not hasattr(datamodule, "blocks"):
            raise ValueError("the text evaluation needs the experiment's TextDataModule (trainer.fit(..., datamodule=...))")
        datamodule.setup()
        split = self.reference["split"]
        if split not in datamodule.blocks:
            raise ValueError(f"evaluation.reference.split={split!r} is not allowed; allowed: {', '.join(datamodule.blocks)}")
        lm = build_evaluator(self.evaluator_config, datamodule.tokenizer_json, datamodule) if is_writer else None
        barrier()
        if lm is None:
            lm = build_evaluator(self.evaluator_config, datamodule.tokenizer_json, datamodule)
        self.tokenizer = datamodule.tokenizer
        self.metric = TextQuality(lm, sync_on_compute=self.distributed, **self.metric_options)
        self.real = datamodule.blocks[split][: self.settings.num_samples]
        ev = self.evaluator_config
        self.info = {"evaluator": ev["evaluator"], "evaluator_cache_dir": str(ev["cache_dir"]), "real_data_split": split,
                     **self.metric.describe()}
        return self.info

    def start(self, module, indices: Sequence[int]) -> None:
        """Nothing to prepare per evaluation (the text metrics need no reference solution)."""

    def score(self, samples: torch.Tensor, indices: Sequence[int], sampler) -> dict:
        """gen_ppl and entropy of these sequences (all ranks' shards together); `sampler` None for real text."""
        self.metric.update(samples, indices)
        values = self.metric.compute()
        self.metric.reset()
        return values

    def held_out(self) -> torch.Tensor:
        """The held-out text of the real-data row: the first num_samples blocks of evaluation.reference.split."""
        return self.real

    def generate(self, module, sampler, nfe: int, indices: Sequence[int]) -> tuple[torch.Tensor, dict]:
        """Token sequences [len(indices), L] for these global indices (use inside module.ema_weights()), on the CPU.

        The sampler spends `nfe` by its own rule; the last batch is filled up as in ImageTask.generate
        so every call has the same batch shape.
        """
        indices = list(indices)
        padded = fill_last_batch(indices, self.settings.num_samples, self.settings.batch_size)
        tokens, stats = generate_tokens(module.net, sampler, nfe, padded, self.settings.seed, module.seq_len, module.mask_id,
                                        module.schedule, self.settings.batch_size, module.device)
        return tokens[: len(indices)], stats

    def write_grid(self, samples_by_nfe: dict[int, torch.Tensor], path: Path) -> Path:
        """The decoded first `grid_size` samples per NFE, as markdown next to where an image grid would go (.md)."""
        if self.tokenizer is None:
            raise RuntimeError("call TextTask.prepare(datamodule) before write_grid")
        n = self.settings.grid_size
        parts = [f"## nfe {k}\n\n" + "".join(f"{i}. {text}\n" for i, text in enumerate(self._lines(samples_by_nfe[k][:n])))
                 for k in sorted(samples_by_nfe)]
        return atomic_write_text(Path(path).with_suffix(".md"), "\n".join(parts))

    def _lines(self, tokens: torch.Tensor) -> list[str]:
        """Decoded sequences on one line each (a newline inside a sample would break the markdown list)."""
        return [" ".join(text.splitlines()) for text in decode(self.tokenizer, tokens)]
