"""TextQuality: generative perplexity and unigram entropy of generated token sequences, for sharded generation.

A torchmetrics Metric like ImageQuality: its states are the generated sequences with their
global sample indices (concatenated across ranks by torchmetrics' sync); `compute` sorts them
by index and scores the whole set with framework.metrics.text.text_metrics in fixed chunks,
so the numbers do not depend on the number of processes, the batch size or the update order.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from .text import text_metrics

TEXT_METRICS = ("gen_ppl", "entropy")


class TextQuality(Metric):
    """Generative perplexity under `lm` (anything with sequence_nll(tokens) -> [B]) and mean unigram entropy.

    update(tokens, indices): tokens [B, L] (long) with their global sample indices.
    compute() -> {'gen_ppl', 'entropy'}; every index 0..n-1 must have been seen exactly once.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = None

    def __init__(self, lm, batch_size: int = 64, **kwargs):
        super().__init__(**kwargs)
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"evaluation.metrics.batch_size must be an integer >= 1, got {batch_size!r}")
        self.lm, self.batch_size = lm, batch_size
        self.add_state("tokens", default=[], dist_reduce_fx="cat")
        self.add_state("indices", default=[], dist_reduce_fx="cat")

    def update(self, tokens: Tensor, indices: Sequence[int] | Tensor) -> None:
        indices = torch.as_tensor(list(indices) if not isinstance(indices, Tensor) else indices, dtype=torch.long).flatten()
        if tokens.dim() != 2 or tokens.shape[0] != indices.shape[0]:
            raise ValueError(f"got tokens {tuple(tokens.shape)} with {indices.shape[0]} indices; "
                             "expected tokens [B, L] with one index per sequence")
        self.tokens.append(tokens.detach().long().cpu())
        self.indices.append(indices)

    def ordered_tokens(self) -> Tensor:
        """All sequences seen (after sync: on every rank), sorted by global index; checks the indices are 0..n-1."""
        tokens, indices = dim_zero_cat(self.tokens), dim_zero_cat(self.indices).long()
        order = torch.argsort(indices)
        if not torch.equal(indices[order], torch.arange(indices.numel(), device=indices.device)):
            raise ValueError("TextQuality needs every sample index 0..n-1 exactly once (check the sharding of indices)")
        return tokens[order].cpu()

    @torch.no_grad()
    def compute(self) -> dict[str, float]:
        return text_metrics(self.lm, self.ordered_tokens(), self.batch_size)

    def describe(self) -> dict:
        """The options every result records next to its numbers."""
        return {"metric_batch_size": self.batch_size}
