"""The conformance test every registered continuous-data sampler must pass: honest NFE, dtype and shape kept,
the grid respected, finite down to sigma = 0, stateless, bad options named."""

import pytest
import torch

from framework.diffusion import build_schedule
from framework.oracles import GaussianMixture
from framework.samplers import available_samplers, build_sampler

from .checks import assert_finite_and_honest


def continuous_samplers():
    return available_samplers("continuous")


def _valid_nfes(sampler, upto=20):
    return [n for n in range(1, upto + 1) if sampler.allows_nfe(n)]


SCHEDULE = build_schedule("discrete_linear")
MODEL = GaussianMixture.random(3, 2, seed=5).eps_model(SCHEDULE)


@pytest.mark.parametrize("name", continuous_samplers())
@pytest.mark.parametrize("final_denoise", [False, True])
def test_every_nfe_finite_honest_dtype_kept(name, final_denoise):
    sampler = build_sampler(name, final_denoise=final_denoise)
    nfes = _valid_nfes(sampler)
    assert nfes, f"{name} accepts no NFE up to 20"
    x_T = torch.randn(8, 2, dtype=torch.float32)
    assert_finite_and_honest(sampler, MODEL, SCHEDULE, x_T, nfes, name, seed=0)


@pytest.mark.parametrize("name", continuous_samplers())
def test_grid_respected_and_stateless(name):
    sampler = build_sampler(name)
    nfe = _valid_nfes(sampler)[-1]
    seen = []
    grid = sampler.timesteps(nfe, SCHEDULE)
    x_T = torch.randn(4, 2, dtype=torch.float64)
    out1 = sampler.sample(MODEL, x_T, nfe, SCHEDULE, generator=torch.Generator().manual_seed(0), callback=lambda d: seen.append(float(d["t_next"])))
    assert seen and seen[-1] == pytest.approx(float(grid[-1]))
    assert set(round(s, 12) for s in seen) <= set(round(float(t), 12) for t in grid)
    out2 = sampler.sample(MODEL, x_T, nfe, SCHEDULE, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out1, out2), "a second call must give the same result (no state between calls)"
    custom = torch.tensor([1.0, 0.7, 0.3, 0.1, 0.05, 0.02, 0.01, 0.001], dtype=torch.float64)
    explicit = sampler.sample(MODEL, x_T, None, SCHEDULE, generator=torch.Generator().manual_seed(0), timesteps=custom)
    assert torch.isfinite(explicit).all()


@pytest.mark.parametrize("name", continuous_samplers())
def test_bad_options_raise_naming_the_setting(name):
    with pytest.raises(ValueError, match="no_such_option"):
        build_sampler(name, no_such_option=1)
    with pytest.raises(ValueError, match="nfe"):
        build_sampler(name).sample(MODEL, torch.zeros(2, 2), 0, SCHEDULE)
    with pytest.raises(ValueError, match="grid"):
        build_sampler(name, grid="nope")


def test_unknown_sampler_lists_allowed():
    with pytest.raises(ValueError, match="unknown sampler 'nope'.*ddim"):
        build_sampler("nope")


def test_a_masked_sampler_is_refused_where_a_continuous_one_is_needed():
    with pytest.raises(ValueError, match=r"'fhs' is a masked sampler, but a continuous sampler is needed here; allowed \(continuous\): .*ddim"):
        build_sampler("fhs", family="continuous")


def test_choice_options_check_types():
    with pytest.raises(ValueError, match="final_denoise=1"):
        build_sampler("ddim", final_denoise=1)
