"""The cached reference solution against the exact ODE solution of a Gaussian mixture, and the error metric."""

from __future__ import annotations

import torch
from torch import nn

from framework.diffusion import build_schedule
from framework.metrics.relative_error import RelativeError, relative_errors
from framework.oracles import GaussianMixture
from framework.samplers import build_sampler
from framework.samplers.noise import randn, sample_generators
from framework.tuning.reference import ReferenceSolver, reference_solution


class OracleNet(nn.Module):
    """The exact noise prediction of a mixture as a module (its parameters are buffers, so they are hashed)."""

    def __init__(self, mixture: GaussianMixture, schedule):
        super().__init__()
        self.register_buffer("means", mixture.means.clone())
        self.model = mixture.eps_model(schedule)

    def forward(self, x, t):
        return self.model(x, t)


def setup(n=24, seed=3):
    schedule = build_schedule("discrete_linear")
    mixture = GaussianMixture.random(components=3, dim=2, seed=1)
    x_T = randn((n, 2), sample_generators(seed, range(n)), dtype=torch.float64)
    return schedule, mixture, OracleNet(mixture, schedule), x_T


def test_reference_is_the_exact_ode_solution_and_is_cached(tmp_path):
    schedule, mixture, net, x_T = setup()
    solver = ReferenceSolver(cache_dir=str(tmp_path))
    ref = reference_solution(net, schedule, range(len(x_T)), 3, (2,), solver, dtype=torch.float64, batch_size=10)
    exact = mixture.ode_solution(x_T, schedule)
    err = float(relative_errors(ref.x, exact).mean())
    # the default reference (3rd-order multistep at 200 NFE) is >100x closer than DDIM at 20 NFE
    ddim = build_sampler("ddim", final_denoise=False).sample(net, x_T, 20, schedule)
    assert err < 1e-3 and err < float(relative_errors(ddim, exact).mean()) / 100
    files = list(tmp_path.glob("reference_*.pt"))
    assert len(files) == 1
    # a second call reads the file (same tensors) and does not run the network
    calls = []
    net.register_forward_hook(lambda *a: calls.append(1))
    again = reference_solution(net, schedule, range(len(x_T)), 3, (2,), solver, dtype=torch.float64, batch_size=10)
    assert not calls and torch.equal(again.x, ref.x) and torch.equal(again.x0, ref.x0) and again.key == ref.key
    # other weights, noises or solver: another key
    other = OracleNet(GaussianMixture.random(components=3, dim=2, seed=2), schedule)
    assert reference_solution(other, schedule, range(4), 3, (2,), ReferenceSolver(cache_dir=None),
                              dtype=torch.float64).key != reference_solution(net, schedule, range(4), 3, (2,),
                                                                             ReferenceSolver(cache_dir=None),
                                                                             dtype=torch.float64).key


def test_reference_end_points_match_the_samplers_convention():
    """x is the ODE state at t_min; x0 the model's denoised x0 there (what final_denoise samplers return)."""
    schedule, mixture, net, x_T = setup(n=8)
    solver = ReferenceSolver({"name": "dpmsolver++", "order": 3}, 100, cache_dir=None)
    ref = reference_solution(net, schedule, range(8), 3, (2,), solver, dtype=torch.float64)
    with_final = build_sampler("dpmsolver++", order=3, final_denoise=True).sample(net, x_T, 101, schedule)
    without = build_sampler("dpmsolver++", order=3).sample(net, x_T, 100, schedule)
    assert torch.equal(without, ref.x)
    torch.testing.assert_close(with_final, ref.x0, rtol=0, atol=1e-12)
    assert ref.target_for(build_sampler("ddim")) is ref.x0 and ref.target_for(build_sampler("unipc")) is ref.x


def test_relative_error_metric_is_ordered_and_exact():
    g = torch.Generator().manual_seed(0)
    x, r = torch.randn(10, 3, generator=g), torch.randn(10, 3, generator=g)
    expected = ((x.double() - r.double()).norm(dim=1) / r.double().norm(dim=1)).mean()
    metric = RelativeError()
    perm = torch.randperm(10, generator=g)
    metric.update(x[perm[:4]], r[perm[:4]], perm[:4])
    metric.update(x[perm[4:]], r[perm[4:]], perm[4:])
    torch.testing.assert_close(metric.compute(), expected, rtol=1e-15, atol=0)
    assert float(relative_errors(r, r).max()) == 0.0
