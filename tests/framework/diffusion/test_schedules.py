import math

import pytest
import torch

from framework.diffusion import CosineVPSchedule, DiscreteVPSchedule, LinearVPSchedule, build_schedule

ALL = [DiscreteVPSchedule.linear(), LinearVPSchedule(), CosineVPSchedule()]


def test_discrete_reproduces_ddpm_alphas_cumprod():
    s = DiscreteVPSchedule.linear(1e-4, 0.02, 1000)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    t = torch.arange(1, 1001, dtype=torch.float64) / 1000
    assert torch.allclose(s.alpha(t) ** 2, abar, rtol=0, atol=1e-12)
    assert torch.allclose(s.sigma(t) ** 2, 1 - abar, rtol=0, atol=1e-12)
    assert s.t_min == pytest.approx(1e-3) and s.t_max == 1.0


@pytest.mark.parametrize("schedule", ALL, ids=lambda s: type(s).__name__)
def test_log_snr_round_trip_and_monotone(schedule):
    t = torch.linspace(schedule.t_min, schedule.t_max, 997, dtype=torch.float64)
    lam = schedule.log_snr(t)
    assert torch.all(lam[1:] < lam[:-1]), "lambda must decrease with t"
    assert torch.allclose(schedule.t_from_log_snr(lam), t, rtol=0, atol=1e-6)
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    assert torch.allclose(alpha**2 + sigma**2, torch.ones_like(t), atol=1e-12)
    assert torch.allclose(lam, torch.log(alpha / sigma), atol=1e-9)


def test_linear_vp_closed_form():
    s = LinearVPSchedule(0.1, 20.0)
    t = torch.tensor([0.3, 0.7], dtype=torch.float64)
    expected = torch.exp(-0.25 * t**2 * 19.9 - 0.5 * t * 0.1)
    assert torch.allclose(s.alpha(t), expected, atol=1e-14)


def test_cosine_closed_form():
    s = CosineVPSchedule()
    t = torch.tensor([0.25], dtype=torch.float64)
    f = lambda u: math.cos((u + 0.008) / 1.008 * math.pi / 2)
    assert float(s.alpha(t)) == pytest.approx(f(0.25) / f(0.0), abs=1e-12)


def test_dtype_kept_and_computed_in_float64():
    s = DiscreteVPSchedule.linear()
    t = torch.tensor([0.5], dtype=torch.float16)
    assert s.alpha(t).dtype == torch.float16
    assert s.alpha(torch.tensor([0.5], dtype=torch.float32)).dtype == torch.float32


def test_bad_schedule_names_allowed():
    with pytest.raises(ValueError, match="discrete_linear, linear, cosine"):
        build_schedule("quadratic")
