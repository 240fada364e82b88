"""Generation and evaluation for masked diffusion, outside the LightningModule.

Sample i draws all its randomness from a generator seeded by (seed, i) (framework.samplers.noise),
so the text does not depend on the batch size or the number of devices. NFE is reported per sample
as the number of sequence evaluations divided by the number of samples (a batched call of b rows
counts b), next to the batched network calls and the wall time.
"""

from __future__ import annotations

import time
from typing import Optional, Sequence

import torch

from ..samplers.masked import MaskedDenoiser
from ..samplers.noise import sample_generators


@torch.no_grad()
def generate_tokens(net, sampler, indices: Sequence[int], seed: int, length: int, mask_id: int, schedule=None,
                    batch_size: int = 64, device="cpu") -> tuple[torch.Tensor, dict]:
    """Fill all-mask sequences for the given global sample indices; return tokens [N, length] and stats."""
    indices = list(indices)
    den = MaskedDenoiser(net, mask_id)
    outs, start = [], time.perf_counter()
    for i in range(0, len(indices), batch_size):
        idx = indices[i: i + batch_size]
        x_T = torch.full((len(idx), length), mask_id, dtype=torch.long, device=device)
        outs.append(sampler.sample(den, x_T, mask_id, schedule, generator=sample_generators(seed, idx, device)).cpu())
    seconds = time.perf_counter() - start
    n = max(len(indices), 1)
    return torch.cat(outs), {"nfe_per_sample": den.rows / n, "network_calls": den.calls, "seconds": seconds,
                             "seconds_per_sample": seconds / n, "num_samples": len(indices)}


def decode(tokenizer, tokens: torch.Tensor, eot: str = "<|endoftext|>") -> list[str]:
    """Readable text: special tokens kept, end-of-text shown as ' | '."""
    return [tokenizer.decode(row, skip_special_tokens=False).replace(eot, " | ") for row in tokens.tolist()]


def label_of(cfg: dict) -> str:
    opts = {k: v for k, v in cfg.items() if k not in ("name", "label")}
    return str(cfg.get("label") or cfg["name"] + (f"({', '.join(f'{k}={v}' for k, v in opts.items())})" if opts else ""))


def evaluate_rows(lm, samples: dict, reference: Optional[torch.Tensor] = None, errors: bool = False) -> list[dict]:
    """One row per sampler label (gen_ppl, entropy, NFE, time), plus the held-out reference text.

    `errors=True` adds the metrics' standard errors (entropy_se, log_ppl_se; see text_metrics).
    """
    from ..metrics.text import text_metrics

    rows = []
    for label, (tokens, stats) in samples.items():
        rows.append({"sampler": label, **text_metrics(lm, tokens, errors=errors), "nfe_per_sample": stats["nfe_per_sample"],
                     "seconds_per_sample": stats["seconds_per_sample"], "num_samples": stats["num_samples"]})
    if reference is not None:
        rows.append({"sampler": "held-out text", **text_metrics(lm, reference, errors=errors), "nfe_per_sample": 0.0,
                     "seconds_per_sample": 0.0, "num_samples": len(reference)})
    return rows
