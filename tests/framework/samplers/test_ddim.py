import pytest
import torch

from framework.oracles.convergence import empirical_order, mean_error
from framework.samplers import build_sampler
from framework.samplers.noise import sample_generators


def test_ddim_first_order_on_exact_mixture(problem):
    sampler = build_sampler("ddim", final_denoise=False)
    nfes = [10, 20, 40, 80]
    errors = [mean_error(sampler.sample(problem.denoiser(), problem.x_T, n, problem.schedule), problem.reference) for n in nfes]
    assert all(a > b for a, b in zip(errors, errors[1:]))
    assert empirical_order(nfes, errors) == pytest.approx(1.0, abs=0.2)


def test_ddpm_many_steps_matches_data_distribution():
    from tests.conftest import oracle_problem  # noqa: F401  (fixture module)
    from framework.diffusion import build_schedule
    from framework.oracles import GaussianMixture

    schedule = build_schedule("discrete_linear")
    mixture = GaussianMixture.random(3, 2, seed=3)
    n = 2000
    x_T = torch.randn(n, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    x = build_sampler("ddpm").sample(mixture.eps_model(schedule), x_T, 250, schedule, generator=torch.Generator().manual_seed(1))
    true = mixture.sample(n, generator=torch.Generator().manual_seed(2))
    true2 = mixture.sample(n, generator=torch.Generator().manual_seed(3))
    # Monte Carlo floor: the distance between two independent true samples of the same size
    floor = _energy_distance(true, true2)
    assert _energy_distance(x, true) < 4 * floor + 1e-3
    assert torch.allclose(x.mean(0), true.mean(0), atol=0.15)


def _energy_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    ab = torch.cdist(a, b).mean()
    return float(2 * ab - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())


def test_ddpm_per_sample_generators_make_samples_batch_independent():
    from framework.diffusion import build_schedule
    from framework.oracles import GaussianMixture

    schedule = build_schedule("linear")
    model = GaussianMixture.random(2, 2).eps_model(schedule)
    x_T = torch.randn(6, 2, dtype=torch.float64)
    full = build_sampler("ddpm").sample(model, x_T, 10, schedule, generator=sample_generators(7, range(6)))
    half = build_sampler("ddpm").sample(model, x_T[3:], 10, schedule, generator=sample_generators(7, range(3, 6)))
    assert torch.allclose(full[3:], half, atol=1e-12)
