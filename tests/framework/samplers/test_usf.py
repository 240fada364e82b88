"""USF: the derivative estimators and Taylor weights against exact answers, schedule validation, NFE accounting,
the analytical first step and correctors, schedule files."""

import json
import math

import pytest
import torch

from framework.diffusion import Denoiser, build_schedule
from framework.oracles import GaussianMixture
from framework.samplers import build_sampler
from framework.samplers.exp_integrator import (
    finite_difference_weights,
    gauss_legendre,
    lagrange_exp_weights,
    taylor_update_weights,
    taylor_weights,
)
from framework.samplers.usf_schedule import normalize_schedule, save_schedule, schedule_nfe

SCHEDULE = build_schedule("discrete_linear")
MIXTURE = GaussianMixture.random(3, 2, seed=5)
MODEL = MIXTURE.eps_model(SCHEDULE)
T_MIN = SCHEDULE.t_min


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_difference_estimators_recover_derivatives_of_polynomials_in_lambda(n):
    """With n points, every derivative k <= n of a degree-n polynomial is exact (USF eq. 6)."""
    g = torch.Generator().manual_seed(n)
    coeffs = torch.randn(n + 1, generator=g, dtype=torch.float64).tolist()
    offsets = [-0.4 * j - 0.1 * j * j for j in range(1, n + 1)]  # uneven, like a real grid

    def poly(u):  # in u = lambda - lam_s, so the k-th derivative at lam_s is k! coeffs[k]
        return sum(c * u**i for i, c in enumerate(coeffs))

    for k in range(1, n + 1):
        a = finite_difference_weights(offsets, k)
        estimate = sum(w * (poly(d) - poly(0.0)) for w, d in zip(a, offsets))
        assert estimate == pytest.approx(math.factorial(k) * coeffs[k], rel=1e-9, abs=1e-9)
    # one degree higher is no longer exact: the test can fail
    a = finite_difference_weights(offsets, 1)
    assert abs(sum(w * d ** (n + 1) for w, d in zip(a, offsets))) > 1e-6


def test_estimator_needs_enough_distinct_points():
    with pytest.raises(ValueError, match="order 2 needs at least 2"):
        finite_difference_weights([-0.5], 2)
    with pytest.raises(ValueError, match="distinct"):
        finite_difference_weights([-0.5, -0.5], 1)


def _exact_integral(g, lam_s, lam_t, kind):
    sign = 1.0 if kind == "eps" else -1.0
    lam, w = gauss_legendre(lam_s, lam_t, 80)
    return float(sum(wi * math.exp(sign * (lam_t - li)) * g(li) for li, wi in zip(lam, w)))


@pytest.mark.parametrize("kind", ["eps", "x0"])
@pytest.mark.parametrize("order", [1, 2, 3, 4])
def test_taylor_update_with_exact_derivatives_converges_at_its_order(kind, order):
    """sum_k c_k f^(k)(lambda_s) with exact derivatives of f = sin has local error O(h^(order + 1))."""
    lam_s = 0.3
    derivs = [math.sin, math.cos, lambda v: -math.sin(v), lambda v: -math.cos(v)]
    errors, hs = [], [0.4, 0.2, 0.1, 0.05]
    for h in hs:
        c = taylor_weights(h, order, kind)
        approx = sum(ck * derivs[k](lam_s) for k, ck in enumerate(c))
        errors.append(abs(approx - _exact_integral(math.sin, lam_s, lam_s + h, kind)))
    slopes = [math.log(errors[i] / errors[i + 1]) / math.log(2) for i in range(len(hs) - 1)]
    assert slopes[-1] == pytest.approx(order + 1, abs=0.15), slopes


def test_taylor_update_with_all_points_is_the_lagrange_exponential_integrator():
    lams = [1.0, 0.6, 0.1, -0.5]
    for kind in ("eps", "x0"):
        start, per = taylor_update_weights(lams[0], 1.8, kind, [(lams[1:], 1.0)] * 3)
        summed = [start] + [sum(p[j] for p in per) for j in range(3)]
        assert summed == pytest.approx(lagrange_exp_weights(lams, lams[0], 1.8, kind), rel=1e-10, abs=1e-12)


def _steps(times, **decisions):
    return [{"t_next": t, **decisions} for t in times]


TIMES = [0.8, 0.5, 0.3, 0.1, 0.03, T_MIN]


@pytest.mark.parametrize("spec, match", [
    ({"steps": _steps(TIMES[:1]) + [{"t_next": T_MIN, "ordr": 2}]}, r"step 1: unknown decision\(s\) ordr"),
    ({"steps": _steps(TIMES[:2]) + [{"t_next": T_MIN, "order": 4}]}, r"step 2: order=4 is higher than the history allows"),
    ({"steps": _steps(TIMES, order=5)}, r"step 0: order=5 is not allowed; allowed: an integer 1..4"),
    ({"steps": [{"t_next": 0.5}, {"t_next": T_MIN, "order": 2, "derivatives": [{"points": [1]}]}]},
     r"step 1 derivatives\[0\]: points=\[1\] is not allowed"),
    ({"steps": _steps(TIMES[:3]) + [{"t_next": T_MIN, "order": 3, "derivatives": [{}, {"relaxation": "linear"}]}]},
     r"step 3 derivatives\[1\]: relaxation='linear' applies to the first derivative only"),
    ({"steps": _steps(TIMES[:3]) + [{"t_next": T_MIN, "order": 3, "derivatives": [{}, {"points": [-1]}]}]},
     r"derivative of order 2 needs at least 2 points"),
    ({"steps": [{"t_next": 0.5, "prediction": "velocity"}]}, r"step 0: prediction='velocity' is not allowed"),
    ({"steps": [{"t_next": 0.5, "corrector": {"type": "pseudo", "order": 3}}]},
     r"step 0 corrector: order=3 is higher than the history allows"),
    ({"steps": [{"t_next": 0.5}, {"t_next": 0.6}]}, r"step 1: t_next=0.6 must be below"),
    ({"first_step": "random", "steps": _steps(TIMES)}, r"first_step='random' is not allowed"),
    ({"steps": [{"t_next": 0.5, "order": 1, "derivatives": [], "corrector": {"type": "none", "order": 2}}]},
     r"type 'none' takes no order"),
])
def test_schedule_errors_name_the_step_and_decision(spec, match):
    with pytest.raises(ValueError, match=match):
        build_sampler("usf", schedule=spec)


def test_nfe_mismatch_and_time_range_are_refused():
    sampler = build_sampler("usf", schedule=_steps(TIMES))
    with pytest.raises(ValueError, match="nfe=5 is not allowed; allowed: 6"):
        sampler.sample(MODEL, torch.zeros(2, 2), 5, SCHEDULE)
    with pytest.raises(ValueError, match="last t_next=0.03 must be t_min"):
        build_sampler("usf", schedule=_steps(TIMES[:-1])).sample(MODEL, torch.zeros(2, 2), None, SCHEDULE)
    with pytest.raises(ValueError, match="timesteps= cannot be given"):
        sampler.sample(MODEL, torch.zeros(2, 2), None, SCHEDULE, timesteps=torch.tensor([1.0, T_MIN]))
    with pytest.raises(ValueError, match="grid and rho apply only without a schedule"):
        build_sampler("usf", schedule=_steps(TIMES), grid="logsnr")
    with pytest.raises(ValueError, match="needs a data mean"):
        build_sampler("usf", schedule={"first_step": "mean_x0", "steps": _steps(TIMES)})


@pytest.mark.parametrize("first", ["none", "zero_x0", "mean_x0"])
@pytest.mark.parametrize("corrector", ["none", "pseudo", "implicit"])
@pytest.mark.parametrize("last_corrector", [False, True])
def test_nfe_is_counted_from_the_schedule(first, corrector, last_corrector):
    steps = [{"t_next": t, "order": min(i + 1, 2), "corrector": {"type": corrector, "order": 2} if corrector != "none" else "none"}
             for i, t in enumerate(TIMES)]
    steps[-1]["corrector"] = {"type": "pseudo", "order": 2} if last_corrector else "none"
    spec = {"first_step": first, "steps": steps}
    expected = (first == "none") + 5 + int(last_corrector) + (5 if corrector == "implicit" else 0)
    assert schedule_nfe(normalize_schedule(spec)) == expected
    for final in (False, True):
        sampler = build_sampler("usf", schedule=spec, data_mean=[0.1, -0.2], final_denoise=final)
        den = Denoiser(MODEL, SCHEDULE)
        out = sampler.sample(den, torch.randn(4, 2, dtype=torch.float64), expected + final, SCHEDULE)
        assert den.nfe == expected + final and torch.isfinite(out).all()


def test_analytical_first_step_is_a_ddim_step_from_the_guessed_x0():
    x_T = torch.randn(5, 2, dtype=torch.float64)
    mean = [0.3, -1.2]
    a = {t: (float(SCHEDULE.alpha(torch.tensor(t, dtype=torch.float64))), float(SCHEDULE.sigma(torch.tensor(t, dtype=torch.float64))))
         for t in (1.0, 0.5)}
    seen = []
    for first, x0 in (("zero_x0", torch.zeros(2, dtype=torch.float64)), ("mean_x0", torch.tensor(mean, dtype=torch.float64))):
        for prediction in ("noise", "data"):
            sampler = build_sampler("usf", schedule={"first_step": first, "steps": [
                {"t_next": 0.5, "prediction": prediction}, {"t_next": T_MIN}]}, data_mean=mean)
            sampler.sample(MODEL, x_T, 1, SCHEDULE, callback=lambda d: seen.append(d["x"]))
            expected = a[0.5][0] * x0 + a[0.5][1] * (x_T - a[1.0][0] * x0) / a[1.0][1]
            torch.testing.assert_close(seen[-2], expected, rtol=1e-12, atol=1e-12)


def test_correctors_improve_a_first_order_solver_and_implicit_costs_one_more():
    """On the exact mixture oracle, a corrector on order-1 steps approaches the exact ODE solution more closely."""
    x_T = torch.randn(64, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = MIXTURE.ode_solution(x_T, SCHEDULE)
    grid = build_sampler("ddim", grid="logsnr", final_denoise=False).timesteps(8, SCHEDULE)
    errors = {}
    for kind in ("none", "pseudo", "implicit"):
        steps = [{"t_next": float(t), "order": 1, "corrector": {"type": kind, "order": 2} if kind != "none" else "none"}
                 for t in grid[1:]]
        steps[-1]["corrector"] = "none"
        sampler = build_sampler("usf", schedule=steps)
        den = Denoiser(MODEL, SCHEDULE)
        out = sampler.sample(den, x_T, None, SCHEDULE)
        errors[kind] = float((out - exact).norm(dim=1).mean())
        assert den.nfe == 8 + (7 if kind == "implicit" else 0)
    # measured 0.44, 0.28, 0.14 (NFE 8 and 15): each corrector earns its place
    assert errors["pseudo"] < 0.75 * errors["none"] and errors["implicit"] < 0.6 * errors["pseudo"], errors


def test_default_schedule_is_the_exact_weight_third_order_multistep():
    x_T = torch.randn(16, 2, dtype=torch.float64)
    for nfe in (1, 4, 9):
        a = build_sampler("usf", grid="logsnr").sample(MODEL, x_T, nfe, SCHEDULE)
        b = build_sampler("dpmsolver++", order=3, solver_type="taylor", grid="logsnr").sample(MODEL, x_T, nfe, SCHEDULE)
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_schedule_files_round_trip(tmp_path, suffix):
    spec = {"first_step": "zero_x0", "steps": [
        {"t_next": 0.4, "prediction": "noise"},
        {"t_next": 0.1, "order": 2, "derivatives": [{"points": [-1], "relaxation": "linear", "coefficient": 0.3}],
         "corrector": {"type": "implicit", "order": 3}},
        {"t_next": T_MIN, "order": 3, "derivatives": [{"points": [-1, -2], "relaxation": "unipc-bh1"}, {"points": [-2, -1]}]}]}
    path = tmp_path / f"s{suffix}"
    if suffix == ".json":
        save_schedule(spec, path, meta={"note": "test"})
        assert json.loads(path.read_text())["meta"] == {"note": "test"}
    else:
        import yaml

        path.write_text(yaml.safe_dump(spec))
    x_T = torch.randn(8, 2, dtype=torch.float64)
    from_path = build_sampler("usf", schedule=str(path)).sample(MODEL, x_T, None, SCHEDULE)
    from_dict = build_sampler("usf", schedule=spec).sample(MODEL, x_T, None, SCHEDULE)
    assert torch.equal(from_path, from_dict)
    assert build_sampler("usf", schedule=str(path)).to_config()["schedule"] == str(path)
