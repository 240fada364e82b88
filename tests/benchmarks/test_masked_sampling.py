"""The masked-sampling benchmark's closed-form mechanism table and its resumable sample cache."""

import torch

from benchmarks.masked_sampling import cached_samples, reveal_entropy_rows
from framework.diffusion.masking import LinearMasking

V, L = 512, 16


def peaked_net(x: torch.Tensor) -> torch.Tensor:
    """Logits with a long tail (a few likely tokens, many rare ones), fixed per position."""
    g = torch.Generator().manual_seed(0)
    base = 3.0 * torch.randn(L, V, generator=g, dtype=torch.float64)
    return base.expand(x.shape[0], -1, -1).float()


def test_float32_revealed_entropy_falls_with_T_and_float64_stays():
    blocks = torch.randint(0, V, (8, L), generator=torch.Generator().manual_seed(1))
    rows = reveal_entropy_rows(peaked_net, LinearMasking(), blocks, V, [128, 2048, 32768], n_times=8)
    by = {(r["steps"], r["precision"]): r for r in rows}
    assert all(abs(by[(T, "float64")]["entropy_drop"]) < 1e-7 and by[(T, "float64")]["reveal_rate"] > 1 - 1e-8
               for T in (128, 2048, 32768))
    drops = [by[(T, "float32")]["entropy_drop"] for T in (128, 2048, 32768)]
    rates = [by[(T, "float32")]["reveal_rate"] for T in (128, 2048, 32768)]
    assert 0 < drops[0] < drops[1] < drops[2] and drops[2] > 0.1
    assert 1 > rates[0] > rates[1] > rates[2]


def test_sample_cache_makes_once_and_reloads(tmp_path):
    calls = []

    def make():
        calls.append(1)
        return torch.arange(6).view(2, 3), {"seconds": 1.5}

    first = cached_samples(tmp_path / "s" / "x.pt", make)
    again = cached_samples(tmp_path / "s" / "x.pt", make)
    assert len(calls) == 1 and torch.equal(first[0], again[0]) and again[1] == {"seconds": 1.5}
