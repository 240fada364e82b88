"""MDLM's T-step sampler against the exact law of its Markov chain on the enumerable oracle."""

import pytest
import torch

from framework.diffusion.masking import build_masking_schedule
from framework.oracles.tokens import total_variation
from framework.samplers import build_sampler
from framework.samplers.masked import MaskedDenoiser, uniform_time_grid

from .conftest import all_masked, chi_square_pvalue

N = 12_000


def test_coarse_grid_matches_its_exact_law_which_is_not_the_joint(oracle):
    """T = 3: several tokens unmask in one step (a product of marginals), so the law differs from p."""
    schedule = build_masking_schedule("cosine")
    exact = oracle.tstep_law(uniform_time_grid(3), schedule)
    assert total_variation(exact, oracle.joint) > 0.05  # the test can tell the two apart
    out = build_sampler("mdlm_tstep", steps=3).sample(oracle, all_masked(oracle, N), oracle.mask_id, schedule,
                                                      generator=torch.Generator().manual_seed(0))
    assert chi_square_pvalue(out, oracle, exact) > 1e-3
    assert chi_square_pvalue(out, oracle, oracle.joint) < 1e-6


def test_many_steps_reproduce_the_joint(oracle):
    """T -> infinity: the exact law converges to the joint; at T = 256 the sampler matches it."""
    schedule = build_masking_schedule("linear")
    tvs = [total_variation(oracle.tstep_law(uniform_time_grid(T), schedule), oracle.joint) for T in (4, 32, 256)]
    assert tvs[0] > tvs[1] > tvs[2] and tvs[2] < 5e-3  # well below the Monte Carlo floor (~0.04) at N = 8k
    out = build_sampler("mdlm_tstep", steps=256).sample(oracle, all_masked(oracle, 8000), oracle.mask_id, schedule,
                                                        generator=torch.Generator().manual_seed(1))
    assert chi_square_pvalue(out, oracle, oracle.joint) > 1e-3


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_cache_evaluates_a_sequence_only_after_it_changed(oracle, precision):
    seen = []

    def model(x):
        seen.append(x.clone())
        return oracle(x)

    den = MaskedDenoiser(model, oracle.mask_id)
    out = build_sampler("mdlm_tstep", steps=200, precision=precision).sample(
        den, all_masked(oracle, 16), oracle.mask_id, generator=torch.Generator().manual_seed(2))
    assert (out != oracle.mask_id).all()
    assert den.calls == len(seen) < 200 and den.rows == sum(len(x) for x in seen)
    assert den.rows <= 16 * oracle.L  # at most one evaluation per distinct partially masked state
    states = [tuple(r.tolist()) for x in seen for r in x]
    assert len(states) == len(set(states)) or len(set(states)) >= den.rows - 16 * oracle.L


def test_per_sample_generators_make_samples_batch_independent(oracle):
    sampler = build_sampler("mdlm_tstep", steps=50)
    gens = lambda idx: [torch.Generator().manual_seed(1000 + i) for i in idx]  # noqa: E731
    batch = sampler.sample(oracle, all_masked(oracle, 8), oracle.mask_id, generator=gens(range(8)))
    alone = sampler.sample(oracle, all_masked(oracle, 3), oracle.mask_id, generator=gens([5, 6, 7]))
    assert torch.equal(batch[5:], alone)


def test_bad_settings_raise_clear_errors(oracle):
    with pytest.raises(ValueError, match="option steps=0 is not allowed; allowed: an integer >= 1"):
        build_sampler("mdlm_tstep", steps=0)
    with pytest.raises(ValueError, match="unknown option"):
        build_sampler("mdlm_tstep", k=2)
    with pytest.raises(ValueError, match="strictly decreasing"):
        build_sampler("mdlm_tstep").sample(oracle, all_masked(oracle, 2), oracle.mask_id, timesteps=[1.0, 0.5])
    with pytest.raises(ValueError, match="V = mask_id = 5"):
        build_sampler("mdlm_tstep").sample(oracle, torch.full((2, oracle.L), 5), 5)
