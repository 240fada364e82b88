"""The Time-Shift Sampler: exactness of the switched-off policy, NFE, the chosen times in closed form,
and the size of the shift under an exact denoiser."""

from __future__ import annotations


import pytest
import torch

from framework.diffusion.schedules import DiscreteVPSchedule
from framework.diffusion.time_shift import TimeShift
from framework.oracles import GaussianMixture
from framework.samplers import available_samplers, build_sampler, sampler_class

SCHEDULE = DiscreteVPSchedule.linear()
CONTINUOUS = [n for n in available_samplers("continuous") if not n.startswith("ts_") and n != "fkc"]
VARIANTS = ["ts_ddpm", "ts_ddim", "ts_pndm", "ts_fpndm", "ts_dpmsolver", "ts_deis"]


def _mixture(dim: int = 16) -> GaussianMixture:
    """Two isotropic components in `dim` dimensions: per-sample variance over dimensions ~ 0.25."""
    means = torch.stack([torch.full((dim,), 0.5), torch.full((dim,), -0.5)]).to(torch.float64)
    means[0, ::2] *= -1.0  # each mean has variance 0.25 over its dimensions
    covs = torch.stack([0.04 * torch.eye(dim, dtype=torch.float64)] * 2)
    return GaussianMixture(torch.tensor([0.3, 0.7]), means, covs)


def _sample(name: str, nfe: int, seed: int = 0, model=None, batch: int = 6, dim: int = 16, **options):
    sampler = build_sampler(name, **options)
    model = model or _mixture(dim).eps_model(SCHEDULE)
    x_T = torch.randn(batch, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    generator = [torch.Generator().manual_seed(100 + i) for i in range(batch)]
    return sampler.sample(model, x_T, nfe, SCHEDULE, generator=generator)


def _nfe_for(name: str) -> int:
    sampler = build_sampler(name)
    return next(n for n in (10, 12, 13, 15, 16) if sampler.allows_nfe(n))


@pytest.mark.parametrize("name", CONTINUOUS)
@pytest.mark.parametrize("off", [{"ts_window": 0}, {"ts_cutoff": 1000}, {"ts_window": 1}])
def test_switched_off_shift_is_the_base_sampler_bit_for_bit(name, off):
    """Window 0 (or 1: no neighbour either side) or a cutoff at t_max change nothing, for every continuous sampler."""
    nfe = _nfe_for(name)
    base = _sample(name, nfe)
    shifted = _sample(name, nfe, time_shift=True, **off)
    assert torch.equal(base, shifted)


@pytest.mark.parametrize("name", VARIANTS)
def test_variants_spend_the_same_nfe_and_shift_some_times(name):
    """The registered variants are their base sampler with time_shift on: same NFE, shifted times reported."""
    sampler = build_sampler(name)
    assert sampler.options["time_shift"] is True
    nfe = _nfe_for(name)
    calls = []

    def model(x, t):
        calls.append(1)
        return _mixture().eps_model(SCHEDULE)(x, t)

    seen = []
    x_T = torch.randn(4, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    gens = [torch.Generator().manual_seed(i) for i in range(4)]
    sampler.sample(model, x_T, nfe, SCHEDULE, generator=gens, callback=seen.append)
    assert len(calls) == nfe == sampler.nfe_for_steps(len(seen))
    assert all(info["t_shift"].shape == (4,) and info["t_shift"].dtype == torch.float64 for info in seen)
    moved = [bool((info["t_shift"] != info["t"]).any()) for info in seen]
    assert any(moved), "a 16-dim mixture with variance 0.25 per sample is always shifted by the 'noise' rule"


def test_variant_defaults_follow_the_official_runs():
    o = build_sampler("ts_dpmsolver").options
    assert (o["algorithm_type"], o["order"], o["method"], o["grid"], o["ts_window"], o["ts_cutoff"]) == (
        "dpmsolver", 2, "multistep", "time_uniform", 30, 300)
    o = build_sampler("ts_deis").options
    assert (o["method"], o["ab_order"], o["ts_window"], o["ts_cutoff"]) == ("t_ab", 2, 30, 300)
    assert build_sampler("ts_pndm").options["method"] == "S-PNDM"
    assert build_sampler("ts_fpndm").options["method"] == "F-PNDM"
    assert sampler_class("ts_ddim").__mro__[1] is sampler_class("ddim")


# --- the chosen time in closed form -----------------------------------------------------------------


def _biased_gaussian_model(v: float, delta: float):
    """Gaussian data N(0, v I): the exact noise prediction sigma x / (alpha^2 v + sigma^2), scaled by (1 + delta)."""

    def model(x, t):
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1, *([1] * (x.ndim - 1)))
        a, s = SCHEDULE.alpha(t), SCHEDULE.sigma(t)
        return ((1 + delta) * s * x / (a**2 * v + s**2)).to(x.dtype)

    return model


def _closed_form_shift(v: float, delta: float, s: float, t: float, policy: TimeShift) -> tuple[float, float]:
    """The lattice time the policy must pick at t after one DDIM step s -> t from x_s ~ N(0, I), and the margin
    (gap between the best and second-best distance, over the best distance's sampling noise scale)."""
    a_s, sg_s = float(SCHEDULE.alpha(torch.tensor(s))), float(SCHEDULE.sigma(torch.tensor(s)))
    a_t, sg_t = float(SCHEDULE.alpha(torch.tensor(t))), float(SCHEDULE.sigma(torch.tensor(t)))
    gain = (1 + delta) * sg_s / (a_s**2 * v + sg_s**2)  # eps_hat = gain x_s
    k = a_t / a_s * (1 - sg_s * gain) + sg_t * gain  # x_t = k x_s (DDIM eq. 12)
    var = k**2
    half = policy.window // 2
    taus = torch.tensor([t + d / 1000 for d in range(-half, half + 1)], dtype=torch.float64)
    expected = SCHEDULE.sigma(taus) ** 2 + (policy.data_var * SCHEDULE.alpha(taus) ** 2 if policy.reference == "data" else 0)
    dist = (var - expected).abs()
    order = torch.argsort(dist)
    return float(taus[order[0]]), float(dist[order[1]] - dist[order[0]]) / var


@pytest.mark.parametrize("reference,delta", [("noise", 0.05), ("noise", -0.1), ("data", 0.05), ("data", -0.08)])
def test_chosen_time_equals_the_closed_form_for_gaussian_data_and_a_biased_denoiser(reference, delta):
    """Gaussian data, a denoiser whose noise prediction is (1 + delta) times the exact one: after one DDIM step the
    state is k x_T with k in closed form, so the shifted time at the next node is an argmin over known numbers."""
    v, dim, s, t = 0.3, 256, 1.0, 0.3
    sampler = build_sampler("ddim", time_shift=True, ts_window=40, ts_cutoff=100, ts_reference=reference,
                            ts_data_var=v if reference == "data" else 0.0, final_denoise=False)
    expected, margin = _closed_form_shift(v, delta, s, t, sampler.time_policy)
    assert margin > 1e-6  # the answer is clear of floating-point ties
    seen = []
    x_T = torch.randn(3, dim, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    x_T = (x_T - x_T.mean(1, keepdim=True)) / x_T.std(1, keepdim=True)  # sample variance exactly 1, as in the closed form
    grid = torch.tensor([s, t, 0.1], dtype=torch.float64)
    sampler.sample(_biased_gaussian_model(v, delta), x_T, None, SCHEDULE, timesteps=grid, callback=seen.append)
    assert torch.equal(seen[0]["t_shift"], torch.full((3,), s, dtype=torch.float64))  # x_T is never shifted
    assert torch.allclose(seen[1]["t_shift"], torch.full((3,), expected, dtype=torch.float64), atol=1e-12, rtol=0)
    assert expected != t  # the bias did move it


def test_exact_denoiser_small_window_changes_little_and_the_shift_follows_the_sample_variance():
    """With the exact mixture denoiser there is no exposure bias to correct. A window of 10 DDPM steps (the official
    F-PNDM example) then changes DDIM's result by under 5% of DDIM's own distance to the exact ODE solution (measured
    2.3%). The rule still moves every node above the cutoff: in 64 dimensions the per-sample variance of x_T alone
    spreads by ~18% and the flow keeps that spread, far more than the noise level changes within the window
    (sigma^2 moves by < 1% over 15 DDPM steps above t = 0.4), so the sign of var(x_T) - 1 decides the direction."""
    mixture, dim, nfe = _mixture(64), 64, 10
    model = mixture.eps_model(SCHEDULE)
    x_T = torch.randn(16, dim, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    exact = mixture.ode_solution(x_T, SCHEDULE)
    v = float(mixture.sample(20000, torch.Generator().manual_seed(0)).var(dim=1).mean())
    seen = []

    def run(callback=None, **options):
        return build_sampler("ddim", final_denoise=False, **options).sample(model, x_T, nfe, SCHEDULE, callback=callback)

    base = run()
    small = run(time_shift=True, ts_window=10, ts_reference="data", ts_data_var=v, callback=seen.append)
    assert (small - base).norm() < 0.05 * (base - exact).norm()
    above = [info for info in seen if 0.301 < float(info["t"]) < 1.0]
    assert above and all(((info["t_shift"] - info["t"]).abs() * 1000).round().eq(5).all() for info in above)
    up = x_T.var(dim=1) > 1.0  # noisier than expected: shifted to the later (noisier) edge of the window
    assert all(torch.equal(info["t_shift"] > info["t"], up) for info in above)


# --- errors ---------------------------------------------------------------------------------------


def test_bad_time_shift_options_name_the_setting():
    with pytest.raises(ValueError, match="ts_window.*need time_shift=True"):
        build_sampler("ddim", ts_window=10)
    with pytest.raises(ValueError, match="ts_reference='data' needs ts_data_var > 0"):
        build_sampler("ddim", time_shift=True, ts_reference="data")
    with pytest.raises(ValueError, match="ts_apply='both' is not allowed; allowed: 'update', 'network'"):
        build_sampler("ts_ddim", ts_apply="both")
    with pytest.raises(ValueError, match="ts_window=-1 is not allowed"):
        build_sampler("ts_ddim", ts_window=-1)
    with pytest.raises(ValueError, match="sampler 'fkc': option time_shift=True is not allowed"):
        build_sampler("fkc", time_shift=True)
