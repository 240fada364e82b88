"""Continuous samplers refuse inputs they cannot integrate, naming the setting (the masked family's checks
are in masked/test_interface.py)."""

from __future__ import annotations

import pytest
import torch

from framework.diffusion import build_schedule
from framework.diffusion.masking import LinearMasking
from framework.samplers import build_sampler


def zero_eps(x, t):
    return torch.zeros_like(x)


@pytest.mark.parametrize("name", ["ddim", "ddpm", "dpmsolver++", "unipc", "deis"])
def test_bad_inputs_are_refused_with_the_setting_named(name):
    sampler, schedule = build_sampler(name), build_schedule("discrete_linear")
    x = torch.randn(3, 2)
    with pytest.raises(ValueError, match="x_T must be a floating-point tensor"):
        sampler.sample(zero_eps, torch.zeros(3, 2, dtype=torch.long), 5, schedule)
    with pytest.raises(ValueError, match="x_T must be a floating-point tensor"):
        sampler.sample(zero_eps, torch.randn(3), 5, schedule)
    with pytest.raises(ValueError, match="schedule must be a VPSchedule"):
        sampler.sample(zero_eps, x, 5, LinearMasking())
    with pytest.raises(ValueError, match="got a list of 2 generators for a batch of 3"):
        sampler.sample(zero_eps, x, 5, schedule, generator=[torch.Generator(), torch.Generator()])
    assert sampler.sample(zero_eps, x, 5, schedule, generator=[torch.Generator() for _ in range(3)]).shape == x.shape
