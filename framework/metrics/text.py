"""Text metrics that are always reported together (Zheng et al. 2024, Sec. 5): generative perplexity
under an evaluator LM, and the mean per-sequence unigram entropy (a low-temperature sampler lowers both).
"""

from __future__ import annotations

import math
from typing import Optional

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
def sequence_nlls(lm, tokens: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Per-sequence NLL (nats, float64 [B]) under a causal LM exposing sequence_nll(tokens)."""
    return torch.cat([lm.sequence_nll(chunk).to(torch.float64).cpu() for chunk in tokens.split(batch_size)])


def generative_perplexity(lm, tokens: torch.Tensor, batch_size: int = 64) -> float:
    """exp(total NLL / total tokens) of the sequences under a causal LM exposing sequence_nll(tokens)."""
    return _perplexity(sequence_nlls(lm, tokens, batch_size), tokens)


def _perplexity(nll: torch.Tensor, tokens: torch.Tensor) -> float:
    return math.exp(float(nll.sum()) / max(tokens.numel(), 1))


def _standard_error(x: torch.Tensor) -> float:
    return float(x.std() / math.sqrt(len(x))) if len(x) > 1 else float("nan")


def text_metrics(lm, tokens: torch.Tensor, batch_size: int = 64, errors: bool = False) -> dict:
    """{'gen_ppl', 'entropy'} of a batch of sequences (entropy: mean per-sequence unigram entropy, nats).

    `errors=True` adds the standard errors over sequences: `entropy_se` (nats) and `log_ppl_se`
    (of log gen_ppl, so gen_ppl's relative error), to tell an effect from Monte Carlo noise.
    """
    nll = sequence_nlls(lm, tokens, batch_size)
    entropy = unigram_entropy(tokens)
    out = {"gen_ppl": _perplexity(nll, tokens), "entropy": float(entropy.mean())}
    if errors:
        out.update(entropy_se=_standard_error(entropy), log_ppl_se=_standard_error(nll / tokens.shape[-1]))
    return out


def evaluate_rows(lm, samples: dict, reference: Optional[torch.Tensor] = None, errors: bool = False) -> list[dict]:
    """One row per sampler label (gen_ppl, entropy, NFE, time) from {label: (tokens, stats)}, plus the held-out text.

    `errors=True` adds the metrics' standard errors (entropy_se, log_ppl_se; see text_metrics).
    """
    rows = []
    for label, (tokens, stats) in samples.items():
        rows.append({"sampler": label, **text_metrics(lm, tokens, errors=errors), "nfe_per_sample": stats["nfe_per_sample"],
                     "seconds_per_sample": stats["seconds_per_sample"], "num_samples": stats["num_samples"]})
    if reference is not None:
        rows.append({"sampler": "held-out text", **text_metrics(lm, reference, errors=errors), "nfe_per_sample": 0.0,
                     "seconds_per_sample": 0.0, "num_samples": len(reference)})
    return rows
