"""Text metrics that are always reported together (Zheng et al. 2024, Sec. 5): generative perplexity
under an evaluator LM, and the mean per-sequence unigram entropy (a low-temperature sampler lowers both).
"""

from __future__ import annotations

import math

import torch


def unigram_entropy(tokens: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of each sequence's empirical token distribution, [B] float64."""
    out = []
    for row in tokens:
        counts = torch.bincount(row.flatten().cpu()).to(torch.float64)
        p = counts[counts > 0] / counts.sum()
        out.append(-(p * p.log()).sum())
    return torch.stack(out)


@torch.no_grad()
def generative_perplexity(lm, tokens: torch.Tensor, batch_size: int = 64) -> float:
    """exp(total NLL / total tokens) of the sequences under a causal LM exposing sequence_nll(tokens)."""
    total, count = 0.0, 0
    for chunk in tokens.split(batch_size):
        total += float(lm.sequence_nll(chunk).sum())
        count += chunk.numel()
    return math.exp(total / count)


def text_metrics(lm, tokens: torch.Tensor, batch_size: int = 64) -> dict:
    """{'gen_ppl', 'entropy'} of a batch of sequences (entropy: mean per-sequence unigram entropy, nats)."""
    return {"gen_ppl": generative_perplexity(lm, tokens, batch_size), "entropy": float(unigram_entropy(tokens).mean())}
