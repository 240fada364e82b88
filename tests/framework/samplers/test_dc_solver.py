"""Dynamic compensation (DC-Solver) on UniPC (`dc_solver`) and DPM-Solver++ (`dc_ratios`): ratios 1 are the plain
solvers bit for bit, no evaluation is added, the interpolant is exact on polynomials, a ratio acts from its
own step on, and bad ratio settings are refused naming the setting."""

import numpy as np
import pytest
import torch

from framework.diffusion import Denoiser, build_schedule
from framework.oracles import GaussianMixture
from framework.samplers import build_sampler
from framework.samplers.dynamic_compensation import compensate, cpr_ratios, lagrange_coefficients

SCHEDULE = build_schedule("discrete_linear")
MODEL = GaussianMixture.random(components=3, dim=2, seed=1).eps_model(SCHEDULE)
X_T = torch.randn(32, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
UNIPC_CASES = [dict(order=o, variant=v, grid=g) for o in (2, 3) for v in ("bh1", "bh2") for g in ("time_uniform", "logsnr")]


@pytest.mark.parametrize("options", UNIPC_CASES, ids=lambda o: "-".join(map(str, o.values())))
@pytest.mark.parametrize("nfe", [5, 10])
def test_ratios_one_are_unipc_bit_for_bit(options, nfe):
    plain = build_sampler("unipc", **options).sample(MODEL, X_T, nfe, SCHEDULE)
    for ratios in (None, [1.0] * nfe, {nfe: [1] * nfe}):
        den = Denoiser(MODEL, SCHEDULE)
        out = build_sampler("dc_solver", ratios=ratios, **options).sample(den, X_T, nfe, SCHEDULE)
        assert torch.equal(out, plain) and den.nfe == nfe


@pytest.mark.parametrize("order", [2, 3])
@pytest.mark.parametrize("nfe", [5, 10])
def test_dc_ratios_one_are_dpmsolver_bit_for_bit(order, nfe):
    plain = build_sampler("dpmsolver++", order=order).sample(MODEL, X_T, nfe, SCHEDULE)
    den = Denoiser(MODEL, SCHEDULE)
    out = build_sampler("dpmsolver++", order=order, dc_ratios=[1.0] * nfe).sample(den, X_T, nfe, SCHEDULE)
    assert torch.equal(out, plain) and den.nfe == nfe


@pytest.mark.parametrize("name,key", [("dc_solver", "ratios"), ("dpmsolver++", "dc_ratios")])
def test_a_ratio_changes_the_run_from_its_step_on_at_the_same_nfe(name, key):
    nfe, k = 8, 4
    ratios = [1.0] * nfe
    ratios[k] = 0.8
    runs = {}
    for label, value in (("plain", [1.0] * nfe), ("dc", ratios)):
        xs, den = [], Denoiser(MODEL, SCHEDULE)
        runs[label] = (build_sampler(name, **{key: value}).sample(den, X_T, nfe, SCHEDULE,
                                                                 callback=lambda d: xs.append(d["x"])), xs)
        assert den.nfe == nfe
    (plain, xs_plain), (dc, xs_dc) = runs["plain"], runs["dc"]
    assert all(torch.equal(a, b) for a, b in zip(xs_plain[:k], xs_dc[:k]))
    assert all(not torch.equal(a, b) for a, b in zip(xs_plain[k:], xs_dc[k:])) and not torch.equal(plain, dc)


@pytest.mark.parametrize("dc_order", [1, 2, 3])
def test_compensation_is_the_lagrange_interpolant_in_time(dc_order):
    """Outputs that are a polynomial of degree dc_order in t are compensated to that polynomial at
    t_{i-1} + rho (t_i - t_{i-1}) (checked with numpy's polyfit); older outputs and the lambdas stay."""
    g = torch.Generator().manual_seed(dc_order)
    times = (0.31, 0.47, 0.66, 0.9)[: dc_order + 1]
    coef = torch.randn(dc_order + 1, 5, generator=g, dtype=torch.float64)
    poly = lambda t: sum(c * t**p for p, c in enumerate(coef))  # noqa: E731
    history = tuple((float(-3 * t), poly(t)) for t in times)
    for rho in (0.4, 1.3):
        out = compensate(history, times, rho, dc_order)
        tau = times[1] + rho * (times[0] - times[1])
        fitted = [np.polyval(np.polyfit(times, [float(poly(t)[j]) for t in times], dc_order), tau) for j in range(5)]
        torch.testing.assert_close(out[0][1], torch.tensor(fitted, dtype=torch.float64), rtol=0, atol=1e-10)
        assert out[0][0] == history[0][0] and out[1:] == history[1:]
    assert compensate(history, times, 1.0, dc_order) is history
    assert sum(lagrange_coefficients(times, 0.123)) == pytest.approx(1.0, abs=1e-12)
    rho = torch.tensor(0.7, dtype=torch.float64, requires_grad=True)  # differentiable in the ratio (the search)
    compensate(history, times, rho, dc_order)[0][1].sum().backward()
    assert rho.grad is not None and torch.isfinite(rho.grad)


def test_bad_ratio_settings_are_refused_naming_them():
    with pytest.raises(ValueError, match="ratios=.*allowed"):
        build_sampler("dc_solver", ratios="fast")
    with pytest.raises(ValueError, match="ratios has 4 entries but the run has 5 steps"):
        build_sampler("dc_solver", ratios=[1, 1, 1, 1]).sample(MODEL, X_T, 5, SCHEDULE)
    with pytest.raises(ValueError, match="first dc_order=2 steps .* ratio 1"):
        build_sampler("dc_solver", ratios=[1, 0.9, 1, 1, 1]).sample(MODEL, X_T, 5, SCHEDULE)
    with pytest.raises(ValueError, match="no ratios for nfe=6; it has nfe 5"):
        build_sampler("dc_solver", ratios={5: [1] * 5}).sample(MODEL, X_T, 6, SCHEDULE)
    with pytest.raises(ValueError, match="either ratios or cpr"):
        build_sampler("dc_solver", ratios=[1.0] * 5, cpr="x.json")
    with pytest.raises(ValueError, match="cpr='missing.json': no such file"):
        build_sampler("dc_solver", cpr="missing.json").sample(MODEL, X_T, 5, SCHEDULE)
    with pytest.raises(ValueError, match="dc_ratios needs method='multistep'"):
        build_sampler("dpmsolver++", method="singlestep", dc_ratios=[1.0] * 4)
    with pytest.raises(ValueError, match="dc_order=4"):
        build_sampler("dc_solver", dc_order=4)


def test_cpr_artefact_is_used_for_the_run_and_checked_against_the_sampler(tmp_path):
    """`cpr=<path>`: the ratios the cascade predicts for the run's step count; an artefact fitted for other
    options is refused naming them."""
    import json

    from framework.samplers.dynamic_compensation import cpr_document, grid_key, solver_key

    coeffs = [0.0] * 36
    coeffs[8], coeffs[17] = 0.9, 0.3  # c[k][2][2]: x^k g^0 n^0, so rho = 0.9 + 0.3 x at any guidance and NFE
    sampler = build_sampler("dc_solver")
    path = tmp_path / "cpr.json"
    path.write_text(json.dumps(cpr_document(coeffs, {"sampler": solver_key(sampler), "grid": grid_key(sampler)})))
    expected = cpr_ratios(coeffs, 6, 1.0)
    assert expected[:2] == [1.0, 1.0] and expected[2] == pytest.approx(0.9 + 0.3 * 3 / 6)
    via_cpr = build_sampler("dc_solver", cpr=str(path)).sample(MODEL, X_T, 6, SCHEDULE)
    assert torch.equal(via_cpr, build_sampler("dc_solver", ratios=expected).sample(MODEL, X_T, 6, SCHEDULE))
    with pytest.raises(ValueError, match="fitted for another sampler or grid: grid.grid: expected 'logsnr'"):
        build_sampler("dc_solver", cpr=str(path), grid="logsnr").sample(MODEL, X_T, 6, SCHEDULE)
    with pytest.raises(ValueError, match="sampler.variant: expected 'bh2', found 'bh1'"):
        build_sampler("dc_solver", cpr=str(path), variant="bh2").sample(MODEL, X_T, 6, SCHEDULE)
