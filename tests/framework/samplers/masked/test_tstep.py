"""MDLM's T-step sampler against the exact law of its Markov chain on the enumerable oracle.

Law checks (conftest.assert_law): chi-square p > 1e-3 and TV(empirical, exact) <= tol(N), and the same
samples reject a wrong law at TV > 2 tol (the negative control).
"""

import pytest
import torch

from framework.diffusion.masking import build_masking_schedule
from framework.oracles.tokens import total_variation
from framework.samplers import build_sampler
from framework.samplers.masked import MaskedDenoiser, uniform_time_grid

from .conftest import all_masked, assert_law, chi_square_pvalue

N = 12_000


def test_coarse_grid_matches_its_exact_law_which_is_not_the_joint(oracle):
    """T = 3: several tokens unmask in one step (a product of marginals), so the law differs from p."""
    schedule = build_masking_schedule("cosine")
    exact = oracle.tstep_law(uniform_time_grid(3), schedule)
    assert total_variation(exact, oracle.joint) > 0.05  # the test can tell the two apart
    out = build_sampler("mdlm_tstep", steps=3).sample(oracle, all_masked(oracle, N), schedule=schedule,
                                                      mask_id=oracle.mask_id, generator=torch.Generator().manual_seed(0))
    assert_law(out, oracle, exact, wrong=oracle.joint)


def test_explicit_grid_matches_its_exact_law(oracle):
    """A non-uniform grid given as `timesteps` (nfe = its 3 steps): the exact law of the chain on that grid."""
    schedule, grid = build_masking_schedule("linear"), [1.0, 0.6, 0.25, 0.0]
    den = MaskedDenoiser(oracle, oracle.mask_id)
    out = build_sampler("mdlm_tstep").sample(den, all_masked(oracle, N), 3, schedule, timesteps=grid,
                                             generator=torch.Generator().manual_seed(4))
    assert den.calls <= 3
    assert_law(out, oracle, oracle.tstep_law(grid, schedule), wrong=oracle.joint)


def test_tstep_law_depends_on_the_schedule(oracle):
    """The T-step tokens depend on alpha(t) (unlike FHS's): exact TV(linear, polynomial-3) = 0.066 at T = 2
    (0.034 at T = 6); 50,000 samples under polynomial-3 follow its exact law and reject the linear one."""
    grid = uniform_time_grid(2)
    linear, cubic = build_masking_schedule("linear"), build_masking_schedule("polynomial", power=3.0)
    law_linear, law_cubic = oracle.tstep_law(grid, linear), oracle.tstep_law(grid, cubic)
    assert total_variation(law_linear, law_cubic) > 0.06
    assert total_variation(oracle.tstep_law(uniform_time_grid(6), linear), oracle.tstep_law(uniform_time_grid(6), cubic)) > 0.03
    out = build_sampler("mdlm_tstep", steps=2).sample(oracle, all_masked(oracle, 50_000), schedule=cubic,
                                                      mask_id=oracle.mask_id, generator=torch.Generator().manual_seed(5))
    assert_law(out, oracle, law_cubic, wrong=law_linear)


def test_many_steps_reproduce_the_joint(oracle):
    """T -> infinity: the exact law converges to the joint; at T = 256 the sampler matches it."""
    schedule = build_masking_schedule("linear")
    tvs = [total_variation(oracle.tstep_law(uniform_time_grid(T), schedule), oracle.joint) for T in (4, 32, 256)]
    assert tvs[0] > tvs[1] > tvs[2] and tvs[2] < 5e-3  # well below the Monte Carlo floor (~0.04) at N = 8k
    out = build_sampler("mdlm_tstep", steps=256).sample(oracle, all_masked(oracle, 8000), schedule=schedule,
                                                        mask_id=oracle.mask_id, generator=torch.Generator().manual_seed(1))
    assert chi_square_pvalue(out, oracle, oracle.joint) > 1e-3


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_cache_evaluates_a_sequence_exactly_when_it_changed(oracle, precision):
    """The model sees, at each step, exactly the rows that still have a mask and changed since their last
    evaluation (first step: every row with a mask), reconstructed from the trajectory the callback reports."""
    seen, states = [], []

    def model(x):
        seen.append(x.clone())
        return oracle(x)

    x0 = all_masked(oracle, 16)
    x0[:4, 0] = 1  # a prompt in four rows
    x0[4] = torch.tensor([0, 1, 2, 0])  # a row with nothing to fill: never evaluated
    states.append(x0.clone())
    den = MaskedDenoiser(model, oracle.mask_id)
    out = build_sampler("mdlm_tstep", steps=200, precision=precision).sample(
        den, x0, generator=torch.Generator().manual_seed(2), callback=lambda d: states.append(d["x"].clone()))
    assert (out != oracle.mask_id).all() and torch.equal(out[4], x0[4])

    expected, evaluated_at, no_cache = [], [None] * len(x0), 0
    for state in states[:-1]:  # the state at the start of each step that ran
        active = (state == oracle.mask_id).any(-1)
        need = [b for b in range(len(x0)) if active[b] and (evaluated_at[b] is None or not torch.equal(evaluated_at[b], state[b]))]
        for b in need:
            evaluated_at[b] = state[b].clone()
        if need:
            expected.append(state[need])
        no_cache += int(active.sum())
    assert len(seen) == len(expected) == den.calls and all(torch.equal(a, b) for a, b in zip(seen, expected))
    assert den.rows == sum(len(x) for x in seen) <= int((x0 == oracle.mask_id).sum())  # <= one call per masked token
    assert no_cache > 3 * den.rows  # negative control: re-evaluating every active row would be seen


def test_per_sample_generators_make_samples_batch_independent(oracle):
    sampler = build_sampler("mdlm_tstep", steps=50)
    gens = lambda idx: [torch.Generator().manual_seed(1000 + i) for i in idx]  # noqa: E731
    batch = sampler.sample(oracle, all_masked(oracle, 8), mask_id=oracle.mask_id, generator=gens(range(8)))
    alone = sampler.sample(oracle, all_masked(oracle, 3), mask_id=oracle.mask_id, generator=gens([5, 6, 7]))
    assert torch.equal(batch[5:], alone)


def test_bad_settings_raise_clear_errors(oracle):
    with pytest.raises(ValueError, match="option steps=0 is not allowed; allowed: an integer >= 1"):
        build_sampler("mdlm_tstep", steps=0)
    with pytest.raises(ValueError, match="unknown option"):
        build_sampler("mdlm_tstep", k=2)
    with pytest.raises(ValueError, match="strictly decreasing"):
        build_sampler("mdlm_tstep").sample(oracle, all_masked(oracle, 2), mask_id=oracle.mask_id, timesteps=[1.0, 0.5])
    with pytest.raises(ValueError, match="V = mask_id = 5"):
        build_sampler("mdlm_tstep").sample(oracle, torch.full((2, oracle.L), 5), mask_id=5)
    with pytest.raises(ValueError, match="timesteps given have 3 steps, but steps=4"):
        build_sampler("mdlm_tstep", steps=4).sample(oracle, all_masked(oracle, 2), mask_id=oracle.mask_id,
                                                    timesteps=[1.0, 0.5, 0.2, 0.0])
    with pytest.raises(ValueError, match="timesteps given have 3 steps, but steps=5"):
        build_sampler("mdlm_tstep").sample(oracle, all_masked(oracle, 2), 5, mask_id=oracle.mask_id,
                                           timesteps=[1.0, 0.5, 0.2, 0.0])
