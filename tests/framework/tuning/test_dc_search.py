"""The DC ratio search on the exact Gaussian-mixture oracle: searched on 10 noises against the 200-step DDIM
reference, the ratios bring UniPC and DPM-Solver++ closer to the exact ODE solution on 1,000 fresh noises;
the reference trajectory passes through the grid's times and is cached; the search is deterministic."""

import pytest
import torch
from torch import nn

from framework.diffusion import Denoiser, build_schedule
from framework.oracles import GaussianMixture
from framework.samplers import build_sampler
from framework.tuning.dc_search import DC_REFERENCE, search_dc, search_dc_ratios
from framework.tuning.reference import ReferenceSolver, fine_grid, reference_trajectory

SCHEDULE = build_schedule("discrete_linear")
MIXTURE = GaussianMixture.random(components=4, dim=2, seed=1)
MODEL = MIXTURE.eps_model(SCHEDULE)
_G = torch.Generator().manual_seed(0)
SEARCH_NOISE = torch.randn(10, 2, generator=_G, dtype=torch.float64)
FRESH_NOISE = torch.randn(1000, 2, generator=_G, dtype=torch.float64)
IN_MEMORY = ReferenceSolver({"name": "ddim"}, 200, cache_dir=None)
_EXACT: dict = {}


def exact_fresh() -> torch.Tensor:
    if "x" not in _EXACT:
        _EXACT["x"] = MIXTURE.ode_solution(FRESH_NOISE, SCHEDULE)
    return _EXACT["x"]


class OracleNet(nn.Module):
    """The exact noise prediction as a module (its means are a buffer, so its weights hash)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("means", MIXTURE.means.clone())

    def forward(self, x, t):
        return MODEL(x, t)


@pytest.mark.parametrize("name,key,options", [("dc_solver", "ratios", {}), ("dc_solver", "ratios", {"variant": "bh2"}),
                                              ("dpmsolver++", "dc_ratios", {})], ids=["unipc-bh1", "unipc-bh2", "dpmsolver++"])
@pytest.mark.parametrize("nfe", [5, 10])
def test_searched_ratios_reduce_the_error_to_the_exact_solution_on_fresh_noises(name, key, options, nfe):
    sampler = build_sampler(name, **options)
    ratios = search_dc_ratios(MODEL, SCHEDULE, sampler, nfe, SEARCH_NOISE, reference=IN_MEMORY)
    assert len(ratios) == nfe and ratios[:2] == [1.0, 1.0] and any(r != 1.0 for r in ratios)
    exact = exact_fresh()
    plain = build_sampler(name, **options).sample(MODEL, FRESH_NOISE, nfe, SCHEDULE)
    den = Denoiser(MODEL, SCHEDULE)
    dc = build_sampler(name, **{key: ratios}, **options).sample(den, FRESH_NOISE, nfe, SCHEDULE)
    assert den.nfe == nfe
    before, after = ((x - exact).norm(dim=1).mean().item() for x in (plain, dc))
    # measured: UniPC bh1 0.234 -> 0.163 (NFE 5), 0.088 -> 0.077 (NFE 10); bh2 0.283 -> 0.163, 0.076 -> 0.063;
    # DPM-Solver++ 2M 0.316 -> 0.158, 0.077 -> 0.054
    assert after < 0.95 * before, (before, after)


def test_search_is_deterministic_and_records_its_losses():
    sampler = build_sampler("dc_solver")
    a = search_dc(MODEL, SCHEDULE, sampler, 6, SEARCH_NOISE, reference=IN_MEMORY, iterations=10)
    b = search_dc(MODEL, SCHEDULE, sampler, 6, SEARCH_NOISE, reference=IN_MEMORY, iterations=10)
    assert a.ratios == b.ratios and a.loss_after == b.loss_after
    assert a.loss_before[:2] == [None, None]
    assert all(after <= before for before, after in zip(a.loss_before[2:], a.loss_after[2:]))


def test_reference_trajectory_passes_through_the_grid_and_is_cached(tmp_path):
    net = OracleNet()
    grid = build_sampler("unipc").timesteps(5, SCHEDULE)
    fine, m = fine_grid(grid, 200)
    assert m == 40 and torch.equal(fine[::m], grid)
    solver = ReferenceSolver({"name": "dpmsolver++", "order": 3}, 200, cache_dir=str(tmp_path))
    den = Denoiser(net, SCHEDULE)
    states = reference_trajectory(den, SEARCH_NOISE, grid, solver)
    assert states.shape == (6, 10, 2) and torch.equal(states[0], SEARCH_NOISE)
    for k in (1, 3, 5):  # the exact flow from t_max to grid[k]
        exact = MIXTURE.ode_solution(SEARCH_NOISE, SCHEDULE, t_end=float(grid[k]))
        assert (states[k] - exact).norm(dim=1).max() < 1e-3
    assert len(list(tmp_path.glob("trajectory_*.pt"))) == 1
    calls = []
    net.register_forward_hook(lambda *a: calls.append(1))
    again = reference_trajectory(Denoiser(net, SCHEDULE), SEARCH_NOISE, grid, solver)
    assert not calls and torch.equal(again, states)


def test_search_refuses_what_it_cannot_search():
    with pytest.raises(ValueError, match="needs a built sampler of dc_solver, dpmsolver\\+\\+, got 'ddim'"):
        search_dc_ratios(MODEL, SCHEDULE, build_sampler("ddim"), 5, SEARCH_NOISE)
    with pytest.raises(ValueError, match="method='multistep'"):
        search_dc_ratios(MODEL, SCHEDULE, build_sampler("dpmsolver++", method="singlestep"), 5, SEARCH_NOISE)
    with pytest.raises(ValueError, match="iterations"):
        search_dc_ratios(MODEL, SCHEDULE, build_sampler("dc_solver"), 5, SEARCH_NOISE, iterations=0)
    assert DC_REFERENCE.sampler == {"name": "ddim"} and DC_REFERENCE.nfe == 200
