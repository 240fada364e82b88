"""Shared pieces of the masked-sampler tests: the enumerable oracle and a chi-square p-value."""

from __future__ import annotations

import pytest
import torch

import framework.samplers.masked  # noqa: F401  (registers the masked samplers)
from framework.oracles.tokens import EnumerableTokens, pooled_chi_square


@pytest.fixture(scope="module")
def oracle() -> EnumerableTokens:
    """L = 4 tokens, V = 3: an explicit joint over 81 sequences with full support."""
    return EnumerableTokens.random(length=4, vocab=3, seed=0, concentration=1.0)


def chi_square_pvalue(samples: torch.Tensor, oracle: EnumerableTokens, law: torch.Tensor) -> float:
    """p-value of the samples' counts against `law` (cells with expected count < 5 pooled)."""
    from scipy.stats import chi2

    counts = torch.bincount(oracle.index(samples), minlength=len(law))
    stat, dof = pooled_chi_square(counts, law)
    return float(chi2.sf(stat, dof))


def all_masked(oracle: EnumerableTokens, n: int) -> torch.Tensor:
    return torch.full((n, oracle.L), oracle.mask_id, dtype=torch.long)
