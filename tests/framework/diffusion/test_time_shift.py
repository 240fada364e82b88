"""The time policy itself: the candidate lattice, cutoff and first node, and what 'update' and 'network' return."""

from __future__ import annotations

import torch

from framework.diffusion.denoiser import Denoiser
from framework.diffusion.schedules import DiscreteVPSchedule, LinearVPSchedule
from framework.diffusion.time_shift import TimeShift, TimeShiftedDenoiser

SCHEDULE = DiscreteVPSchedule.linear()


def _state(var: float, n: int = 5, dim: int = 512) -> torch.Tensor:
    x = torch.randn(n, dim, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return (x - x.mean(1, keepdim=True)) / x.std(1, keepdim=True) * var**0.5


def test_choice_is_the_lattice_argmin_within_the_window_above_the_cutoff():
    policy = TimeShift(window=20, cutoff=300)
    t = 0.5
    sigma2 = lambda tau: float(SCHEDULE.sigma(torch.tensor(tau, dtype=torch.float64))) ** 2  # noqa: E731
    x = _state(sigma2(0.5 + 4 / 1000))  # exactly the noise level 4 DDPM steps later
    assert torch.allclose(policy.choose(x, t, SCHEDULE), torch.full((5,), 0.504, dtype=torch.float64), atol=1e-12, rtol=0)
    x = _state(5.0)  # far noisier than anything in the window: its upper edge
    assert torch.allclose(policy.choose(x, t, SCHEDULE), torch.full((5,), 0.510, dtype=torch.float64), atol=1e-12, rtol=0)
    assert policy.choose(x, 0.301, SCHEDULE) is None  # at or below the cutoff (DDPM step 300 sits at t = 0.301)
    assert policy.choose(x, 1.0, SCHEDULE) is None  # x_T is never shifted
    assert TimeShift(window=1).choose(x, t, SCHEDULE) is None  # no neighbour on either side


def test_the_window_is_clipped_to_the_schedule_and_continuous_schedules_use_a_1000_step_lattice():
    policy = TimeShift(window=40, cutoff=0)
    x = _state(5.0)
    assert float(policy.choose(x, 0.995, SCHEDULE).max()) == 1.0
    linear = LinearVPSchedule()
    x = _state(float(linear.sigma(torch.tensor(0.45, dtype=torch.float64))) ** 2)
    assert torch.allclose(policy.choose(x, 0.44, linear), torch.full((5,), 0.45, dtype=torch.float64), atol=1e-12, rtol=0)


def test_update_moves_the_state_so_a_first_order_step_starts_from_the_shifted_time():
    """'update': x is re-labelled at tau and moved along the model's first-order path to t; then the DDIM step
    t -> u from the returned state equals the DDIM step tau -> u from the original one."""
    net = lambda x, t: 0.3 * x + 0.1 * t.reshape(-1, 1)  # noqa: E731  (any eps-network)
    den = Denoiser(net, SCHEDULE)
    x = _state(1.3)
    t, u = 0.6, 0.45
    shifted = TimeShiftedDenoiser(den, TimeShift(window=30, cutoff=0, apply="update"))
    x_new, eps = shifted.node(x, t, "eps")
    tau = shifted.last_shift
    assert bool((tau > t).all()) and den.nfe == 1
    a = lambda s: SCHEDULE.alpha(torch.as_tensor(s, dtype=torch.float64)).reshape(-1, 1)  # noqa: E731
    sg = lambda s: SCHEDULE.sigma(torch.as_tensor(s, dtype=torch.float64)).reshape(-1, 1)  # noqa: E731
    ddim = lambda x, e, s, u: a(u) * (x - sg(s) * e) / a(s) + sg(u) * e  # noqa: E731
    eps_tau = net(x, tau)
    assert torch.allclose(ddim(x_new, eps, t, u), ddim(x, eps_tau, tau, u), atol=1e-12, rtol=0)
    _, x0 = shifted.node(x, t, "x0")
    assert torch.allclose(x0, (x - sg(tau) * eps_tau) / a(tau), atol=1e-12, rtol=0)


def test_network_mode_shifts_only_the_network_input():
    net = lambda x, t: 0.3 * x + 0.1 * t.reshape(-1, 1)  # noqa: E731
    den = Denoiser(net, SCHEDULE)
    x = _state(1.3)
    shifted = TimeShiftedDenoiser(den, TimeShift(window=30, cutoff=0, apply="network"))
    x_same, x0 = shifted.node(x, 0.6, "x0")
    assert x_same is x
    tau = shifted.last_shift
    alpha, sigma = den.coefficients(x, 0.6)
    assert torch.allclose(x0, (x - sigma * net(x, tau)) / alpha, atol=1e-12, rtol=0)
