"""The one categorical draw: correct law, per-sample reproducibility, and the float32 truncation effect."""

import functools
import math

import pytest
import torch

from framework.samplers.masked.categorical import (
    exponential_from_uniform, reveal_law, sample_categorical, sample_without_replacement, uniform, uniform_rows,
)

from .conftest import EnumerableTokens  # noqa: F401

P = torch.tensor([0.5, 0.2, 0.15, 0.1, 0.05], dtype=torch.float64)


def gumbel_from_uniform(u: torch.Tensor) -> torch.Tensor:
    """Gumbel noise -log(-log u) in u's dtype: the log of the exponential race's key for w = 1."""
    return -torch.log(exponential_from_uniform(u))


def _entropy(q: torch.Tensor) -> float:
    q = q[q > 0]
    return float(-(q * q.log()).sum())


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_draw_matches_probabilities(precision):
    from scipy.stats import chi2

    n = 200_000
    draws = sample_categorical(P.expand(n, -1), torch.Generator().manual_seed(1), precision)
    counts = torch.bincount(draws, minlength=len(P)).to(torch.float64)
    stat = float(((counts - n * P) ** 2 / (n * P)).sum())
    assert chi2.sf(stat, len(P) - 1) > 1e-3


def test_precision_is_checked_and_uniforms_have_that_precision():
    with pytest.raises(ValueError, match="precision 'float16' is not allowed; allowed: float64, float32"):
        sample_categorical(P[None], precision="float16")
    u32 = uniform((100_000,), torch.Generator().manual_seed(0), dtype=torch.float32)
    assert torch.equal(u32.double() * 2**24, (u32.double() * 2**24).round())  # the 2^-24 grid
    u64 = uniform((100_000,), torch.Generator().manual_seed(0), dtype=torch.float64)
    assert not torch.equal(u64 * 2**24, (u64 * 2**24).round())


def test_top1_without_replacement_is_the_categorical_draw():
    probs = torch.rand(64, 7, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    a = sample_categorical(probs, torch.Generator().manual_seed(9))
    b = sample_without_replacement(probs, 1, torch.Generator().manual_seed(9))[:, 0]
    assert torch.equal(a, b)
    top3 = sample_without_replacement(probs, 3, torch.Generator().manual_seed(9))
    assert all(len(set(r.tolist())) == 3 for r in top3)


def test_per_sample_generators_make_draws_batch_independent():
    gens = lambda: [torch.Generator().manual_seed(100 + i) for i in range(4)]  # noqa: E731
    owners = torch.tensor([0, 0, 1, 3, 3, 3])
    full = uniform_rows((6, 5), owners, gens())
    alone = uniform_rows((3, 5), torch.tensor([3, 3, 3]), gens())
    assert torch.equal(full[3:], alone)


@functools.lru_cache(maxsize=1)
def _float32_gumbel_values() -> torch.Tensor:
    """The Gumbel noise of all 2^24 float32 uniforms k 2^-24 (float64), increasing in k, hence sorted."""
    grid = torch.arange(2**24, dtype=torch.float32) * 2.0**-24
    g = gumbel_from_uniform(grid)
    assert (g[1:] >= g[:-1]).all(), "the float32 Gumbel transform must be monotone for the enumeration"
    return g.to(torch.float64)


def _float32_conditional_law(eps: float, p: torch.Tensor) -> torch.Tensor:
    """Exact law of the draw over [1 - eps, eps p] given index != 0, for float32 uniforms.

    float32 uniforms take the 2^24 values k 2^-24 with equal probability, so the law of the Gumbel
    noise is enumerated exactly; P(j wins) = sum_v P(G = v) prod_{i != j} P(G < c_j + v - c_i).
    """
    g = _float32_gumbel_values()
    c = torch.log(torch.cat([torch.tensor([1 - eps]), eps * p]).to(torch.float32)).to(torch.float64)
    wins = []
    for j in range(1, len(c)):
        v = g[g > c[0] - c[j] - 3.0]  # below this, index 0 wins with probability > 1 - exp(-e^3) = 1 - 2e-9
        prob = torch.full_like(v, 2.0**-24)
        for i in range(len(c)):
            if i != j:
                prob = prob * torch.searchsorted(g, c[j] + v - c[i]).to(torch.float64) / 2**24
        wins.append(prob.sum())
    q = torch.stack(wins)
    return q / q.sum()


def test_float32_lowers_the_conditional_entropy_and_float64_does_not():
    """Zheng et al. Sec. 5: for small eps, float32 Gumbel-max under-samples the rare entries of p."""
    p = 1.0 / torch.arange(1, 9, dtype=torch.float64) ** 1.5
    p = p / p.sum()
    h = _entropy(p)
    gaps = [h - _entropy(_float32_conditional_law(eps, p)) for eps in (1e-3, 1e-5, 1e-6)]
    assert gaps[0] < 1e-3  # large eps: float32 is fine
    assert gaps[1] > 0.02 and gaps[2] > 0.2  # small eps: the entropy falls, more so as eps shrinks
    # float64: the largest Gumbel value the draw can produce leaves every entry of eps p reachable
    top64 = float(gumbel_from_uniform(torch.tensor(1 - 2.0**-53, dtype=torch.float64)))
    top32 = float(gumbel_from_uniform(torch.tensor(1 - 2.0**-24, dtype=torch.float32)))
    assert top32 == pytest.approx(16.64, abs=0.01) and top64 == pytest.approx(36.74, abs=0.01)
    assert top64 - 10.0 > -math.log(1e-6 * float(p.min()))  # P(truncation matters) < exp(-e^10)


@pytest.mark.parametrize("eps", [1e-3, 1e-5, 1e-6, 1e-7])
def test_reveal_law_closed_form_matches_the_float32_enumeration(eps):
    """reveal_law's eps p_v r/(e^r - 1) equals the exact float32 law, and float64 leaves p unchanged."""
    p = 1.0 / torch.arange(1, 9, dtype=torch.float64) ** 1.5
    p = p / p.sum()
    closed = reveal_law(p, eps, "float32")
    exact = _float32_conditional_law(eps, p)
    assert float((closed / closed.sum() - exact).abs().sum()) / 2 < 2e-6
    assert float(closed.sum()) < eps * (1 - 1e-5 if eps < 1e-4 else 1)  # float32 also reveals less often
    assert torch.allclose(reveal_law(p, eps, "float64"), eps * p, rtol=1e-6, atol=0)
