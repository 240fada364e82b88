"""SMC resampling: the ESS formula, unbiased ancestor counts (E[count_i] = K w_i), the adaptive threshold."""

import math

import pytest
import torch

from framework.samplers.smc import (
    distinct_count, draw_uniforms, effective_sample_size, gather_particles, resample, resample_indices,
)

WEIGHTS = torch.tensor([0.02, 0.3, 0.05, 0.13, 0.0, 0.25, 0.2, 0.05], dtype=torch.float64)


def _counts(idx: torch.Tensor, k: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(idx, k).sum(1).to(torch.float64)  # [P, K] copies of each particle


def test_ess_formula():
    g = torch.Generator().manual_seed(0)
    log_w = 3 * torch.randn(5, 7, generator=g, dtype=torch.float64)
    w = torch.exp(log_w)
    direct = w.sum(-1) ** 2 / (w**2).sum(-1)
    assert torch.allclose(effective_sample_size(log_w), direct, rtol=1e-12)
    assert torch.allclose(effective_sample_size(log_w + 1000.0), direct, rtol=1e-12)  # offsets cancel, no overflow
    k = 7
    assert effective_sample_size(torch.zeros(1, k)).item() == pytest.approx(k)
    one_hot = torch.full((1, k), -torch.inf, dtype=torch.float64)
    one_hot[0, 3] = 0.0
    assert effective_sample_size(one_hot).item() == pytest.approx(1.0)


@pytest.mark.parametrize("method", ["systematic", "multinomial"])
def test_expected_counts_are_k_w(method):
    k, reps = len(WEIGHTS), 40_000
    log_w = torch.log(WEIGHTS).expand(reps, k)
    u = draw_uniforms(method, reps, k, torch.Generator().manual_seed(1))
    counts = _counts(resample_indices(log_w, method, u), k)
    expected = k * WEIGHTS
    # Monte Carlo tolerance: 5 standard errors of the mean count (the variance of a count is at most that of
    # the multinomial, K w (1 - w))
    se = torch.sqrt(k * WEIGHTS * (1 - WEIGHTS) / reps)
    assert torch.all((counts.mean(0) - expected).abs() <= 5 * se + 1e-12), (counts.mean(0), expected)
    assert torch.all(counts.sum(1) == k)
    assert torch.all(counts[:, 4] == 0), "a zero-weight particle is never drawn"
    if method == "systematic":  # low variance: every count is floor(K w) or ceil(K w)
        assert torch.all(counts >= torch.floor(expected) - 1e-9) and torch.all(counts <= torch.ceil(expected) + 1e-9)
    else:  # multinomial counts have the multinomial variance K w (1 - w)
        assert torch.allclose(counts.var(0), k * WEIGHTS * (1 - WEIGHTS), atol=0.03)


def test_systematic_keeps_equal_weights_in_place_and_threshold_decides():
    k = 6
    u = draw_uniforms("systematic", 3, k, torch.Generator().manual_seed(0))
    assert torch.equal(resample_indices(torch.zeros(3, k), "systematic", u), torch.arange(k).expand(3, k))
    log_w = torch.zeros(3, k, dtype=torch.float64)
    log_w[1, 0] = 5.0  # population 1 degenerates (ESS ~ 1.02), population 2 only a little (ESS ~ 5.6)
    log_w[2, 0] = 0.3
    idx, which = resample(log_w, "systematic", 0.5, u)
    assert which.tolist() == [False, True, False]
    assert torch.equal(idx[0], torch.arange(k)) and torch.equal(idx[2], torch.arange(k))
    _, which_all = resample(log_w, "systematic", 1.0, u)
    assert which_all.tolist() == [False, True, True], "threshold 1.0 resamples every population with unequal weights"


def test_gather_and_distinct_count():
    x = torch.arange(8.0).unsqueeze(1)  # 2 populations of 4
    idx = torch.tensor([[0, 0, 3, 3], [1, 2, 2, 2]])
    assert gather_particles(x, idx).squeeze(1).tolist() == [0, 0, 3, 3, 5, 6, 6, 6]
    assert distinct_count(idx).tolist() == [2, 2]


def test_population_draws_come_from_their_own_generator():
    gens = [torch.Generator().manual_seed(s) for s in (3, 4)]
    both = draw_uniforms("multinomial", 2, 5, gens)
    alone = draw_uniforms("multinomial", 1, 5, [torch.Generator().manual_seed(4)])
    assert torch.equal(both[1], alone[0])


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match="resampling 'stratified' is not allowed; allowed: systematic, multinomial"):
        resample_indices(torch.zeros(1, 3), "stratified", torch.zeros(1, 1))
    with pytest.raises(ValueError, match="needs 3 uniforms"):
        resample_indices(torch.zeros(1, 3), "multinomial", torch.zeros(1, 1))
    assert math.isfinite(effective_sample_size(torch.zeros(1, 1)).item())
