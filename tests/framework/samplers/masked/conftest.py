"""Shared pieces of the masked-sampler tests: the enumerable oracle and the law checks against exact answers.

`law_check` compares the empirical law of N samples with an exact law in two ways:
- Pearson's chi-square (cells with expected count < 5 pooled): p-value > ALPHA;
- total variation: TV(empirical, exact) <= tol(N) = 1/2 sum_x sqrt(p(x)(1 - p(x)) / N) + sqrt(ln(1/ALPHA) / (2N)).
  The first term bounds E[TV] (Jensen: E|p^ - p| <= sd), the second is McDiarmid's bound (one sample
  moves TV by at most 1/N), so it exceeds tol(N) with probability <= ALPHA.
A sampler with exactly the law fails the pair with probability <= 2 ALPHA (the seeds are fixed, so a
test's outcome is deterministic; the bound says how unlikely a spurious failure was when it was written).
A negative control then shows each test can fail: a wrong law at TV > 2 tol from the exact one is
rejected by the same samples (TV(empirical, wrong) > tol is then guaranteed with probability >= 1 - ALPHA).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch

import framework.samplers.masked  # noqa: F401  (registers the masked samplers)
from framework.oracles.tokens import EnumerableTokens, pooled_chi_square, total_variation

#: false-alarm probability of one law check under the exact law
ALPHA = 1e-3


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


def tv_tolerance(law: torch.Tensor, n: int, alpha: float = ALPHA) -> float:
    """TV(empirical of n draws from `law`, law) exceeds this with probability <= alpha (see the module doc)."""
    law = law.to(torch.float64)
    return 0.5 * float(torch.sqrt(law * (1 - law)).sum()) / math.sqrt(n) + math.sqrt(math.log(1 / alpha) / (2 * n))


@dataclass
class LawCheck:
    pvalue: float
    tv: float
    tol: float

    @property
    def passed(self) -> bool:
        return self.pvalue > ALPHA and self.tv <= self.tol


def law_check(samples: torch.Tensor, oracle: EnumerableTokens, law: torch.Tensor) -> LawCheck:
    """Chi-square p-value and TV of the samples' empirical law against `law`, with the TV tolerance."""
    return LawCheck(chi_square_pvalue(samples, oracle, law), total_variation(oracle.empirical(samples), law),
                    tv_tolerance(law, len(samples)))


def assert_law(samples: torch.Tensor, oracle: EnumerableTokens, exact: torch.Tensor, wrong: torch.Tensor) -> None:
    """The samples follow `exact`, and the same check rejects `wrong` (the negative control)."""
    n = len(samples)
    tol = tv_tolerance(exact, n)
    assert total_variation(exact, wrong) > 2 * tol, "the negative control is too close to tell apart at this N"
    good, bad = law_check(samples, oracle, exact), law_check(samples, oracle, wrong)
    assert good.passed, f"samples do not follow the exact law: {good}"
    assert not bad.passed and bad.pvalue < 1e-6 and bad.tv > bad.tol, f"the wrong law is not rejected: {bad}"


def all_masked(oracle: EnumerableTokens, n: int) -> torch.Tensor:
    return torch.full((n, oracle.L), oracle.mask_id, dtype=torch.long)


def conditional_law(oracle: EnumerableTokens, prompt: dict[int, int]) -> torch.Tensor:
    """The exact law of complete sequences given the tokens `prompt` {position: token} (flat, like `joint`)."""
    keep = torch.ones(len(oracle.joint), dtype=torch.bool)
    for pos, tok in prompt.items():
        keep &= oracle.configs[:, pos] == tok
    law = torch.where(keep, oracle.joint, torch.zeros_like(oracle.joint))
    return law / law.sum()


def product_law(oracle: EnumerableTokens, x: torch.Tensor) -> torch.Tensor:
    """The exact law of unmasking every mask of x [L] at once: the product of its conditional marginals."""
    marg = oracle.log_conditionals(x[None])[0].exp()  # [L, V]
    onehot = torch.nn.functional.one_hot(x.clamp_max(oracle.V - 1), oracle.V).to(torch.float64)
    per_pos = torch.where((x == oracle.mask_id)[:, None], marg, onehot)
    out = torch.ones(1, dtype=torch.float64)
    for l in range(oracle.L):
        out = (out[:, None] * per_pos[l][None]).reshape(-1)
    return out
