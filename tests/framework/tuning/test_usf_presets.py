"""Every USF preset runs the same update as the project's own sampler: equal to 1e-10 in float64 on the exact
Gaussian-mixture oracle, on every grid, at several NFE."""

import pytest
import torch

from framework.diffusion import Denoiser, build_schedule
from framework.oracles import GaussianMixture
from framework.samplers import GRID_KINDS, build_sampler
from framework.samplers.usf_schedule import schedule_nfe
from framework.tuning.usf_presets import usf_preset

SCHEDULE = build_schedule("discrete_linear")
MIXTURE = GaussianMixture.random(3, 2, seed=5)
X_T = torch.randn(12, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))

CASES = [
    ("ddim", {}),
    ("dpmsolver++", dict(order=2)),
    ("dpmsolver++", dict(order=3)),
    ("dpmsolver++", dict(order=3, solver_type="taylor")),
    ("dpmsolver++", dict(order=2, algorithm_type="dpmsolver")),
    ("dpmsolver++", dict(order=3, lower_order_final=False)),
    ("unipc", dict(order=1)),
    ("unipc", dict(order=2)),
    ("unipc", dict(order=3)),
    ("unipc", dict(order=1, variant="bh2")),
    ("unipc", dict(order=2, variant="bh2")),
    ("unipc", dict(order=3, variant="bh2")),
    ("unipc", dict(order=2, predict_x0=False)),
    ("unipc", dict(order=3, use_corrector=False)),
    ("deis", dict(ab_order=1)),
    ("deis", dict(ab_order=2)),
    ("deis", dict(ab_order=3)),
    ("deis", dict(method="rho_ab", ab_order=2)),
    ("deis", dict(ab_order=2, lower_order_final=True)),
    ("ipndm", {}),
]


@pytest.mark.parametrize("name, options", CASES, ids=[f"{n}-{o}" for n, o in CASES])
def test_preset_equals_the_direct_implementation(name, options):
    model = MIXTURE.eps_model(SCHEDULE)
    for grid in GRID_KINDS:
        for nfe in (3, 6, 10):
            direct = build_sampler(name, **options, grid=grid, final_denoise=False)
            expected = direct.sample(model, X_T, nfe, SCHEDULE)
            preset = usf_preset(name, nfe, SCHEDULE, **options, grid=grid)
            den = Denoiser(model, SCHEDULE)
            got = build_sampler("usf", schedule=preset).sample(den, X_T, nfe, SCHEDULE)
            assert den.nfe == nfe == schedule_nfe(preset)
            torch.testing.assert_close(got, expected, rtol=0, atol=1e-10, msg=f"{name} {options} {grid} nfe={nfe}")


def test_neighbouring_presets_differ_by_far_more_than_the_tolerance():
    """The 1e-10 agreement is meaningful: the presets of different methods are >1e-3 apart."""
    model = MIXTURE.eps_model(SCHEDULE)
    outs = [build_sampler("usf", schedule=usf_preset(n, 6, SCHEDULE, **o)).sample(model, X_T, 6, SCHEDULE)
            for n, o in (("unipc", dict(order=2)), ("unipc", dict(order=2, variant="bh2")),
                         ("dpmsolver++", dict(order=2)), ("dpmsolver++", dict(order=3)), ("deis", dict(ab_order=2)))]
    for i in range(len(outs)):
        for j in range(i + 1, len(outs)):
            assert float((outs[i] - outs[j]).abs().max()) > 1e-3


def test_preset_options_are_checked():
    with pytest.raises(ValueError, match="unknown preset 'pndm'"):
        usf_preset("pndm", 5, SCHEDULE)
    with pytest.raises(ValueError, match="option order=5"):
        usf_preset("unipc", 5, SCHEDULE, order=5)
    with pytest.raises(ValueError, match="method='singlestep' is not a preset"):
        usf_preset("dpmsolver++", 6, SCHEDULE, method="singlestep")
    with pytest.raises(ValueError, match="eta must be 0"):
        usf_preset("ddim", 6, SCHEDULE, eta=1.0)
