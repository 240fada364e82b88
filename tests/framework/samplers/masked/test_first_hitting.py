"""FHS and its parallel variant: exact laws on the enumerable oracle, honest NFE, the hitting-time law."""

import pytest
import torch

from framework.diffusion.masking import build_masking_schedule
from framework.oracles.tokens import total_variation
from framework.samplers import build_sampler
from framework.samplers.masked import MaskedDenoiser, uniform_time_grid

from .conftest import all_masked, chi_square_pvalue

N = 12_000


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_fhs_reproduces_the_joint_with_one_call_per_token(oracle, precision):
    assert total_variation(oracle.parallel_law(1), oracle.joint) < 1e-12  # exact in law (any-order AR)
    den = MaskedDenoiser(oracle, oracle.mask_id)
    out = build_sampler("fhs", precision=precision).sample(den, all_masked(oracle, N), oracle.mask_id,
                                                           generator=torch.Generator().manual_seed(3))
    assert den.calls == oracle.L and den.rows == N * oracle.L
    assert chi_square_pvalue(out, oracle, oracle.joint) > 1e-3


def test_parallel_variant_matches_its_exact_law_and_tends_to_the_joint_as_k_to_1(oracle):
    tvs = [total_variation(oracle.parallel_law(k), oracle.joint) for k in (1, 2, 4)]
    assert tvs[0] < 1e-12 < 0.05 < tvs[1] < tvs[2]
    assert total_variation(oracle.parallel_law(4), oracle.product_of_marginals()) < 1e-12
    for k, seed in ((2, 4), (4, 5)):
        den = MaskedDenoiser(oracle, oracle.mask_id)
        out = build_sampler("fhs_parallel", k=k).sample(den, all_masked(oracle, N), oracle.mask_id,
                                                        generator=torch.Generator().manual_seed(seed))
        assert den.calls == -(-oracle.L // k) and den.rows == N * den.calls
        assert chi_square_pvalue(out, oracle, oracle.parallel_law(k)) > 1e-3
        assert chi_square_pvalue(out, oracle, oracle.joint) < 1e-6


def test_parallel_with_k1_is_fhs_sample_for_sample(oracle):
    a = build_sampler("fhs").sample(oracle, all_masked(oracle, 64), oracle.mask_id, generator=torch.Generator().manual_seed(6))
    b = build_sampler("fhs_parallel", k=1).sample(oracle, all_masked(oracle, 64), oracle.mask_id,
                                                  generator=torch.Generator().manual_seed(6))
    assert torch.equal(a, b)


def _fhs_event_times(oracle, schedule, n):
    times = torch.zeros(n, oracle.L, dtype=torch.float64)

    def record(d):
        times[d["rows"], d["i"]] = d["s"]

    build_sampler("fhs").sample(oracle, all_masked(oracle, n), oracle.mask_id, schedule,
                                generator=torch.Generator().manual_seed(7), callback=record)
    return times


def _fine_step_event_times(oracle, schedule, n, steps):
    """The times s at which tokens unmask under the T-step sampler on a fine grid (j-th event per row)."""
    times = torch.zeros(n, oracle.L, dtype=torch.float64)
    prev = {"x": all_masked(oracle, n)}

    def record(d):
        before = (prev["x"] != oracle.mask_id).sum(-1)
        after = (d["x"] != oracle.mask_id).sum(-1)
        for j in range(oracle.L):  # events before < j + 1 <= after happened in this step
            times[(before <= j) & (j < after), j] = d["s"]
        prev["x"] = d["x"].clone()

    build_sampler("mdlm_tstep", steps=steps).sample(oracle, all_masked(oracle, n), oracle.mask_id, schedule,
                                                    generator=torch.Generator().manual_seed(8), callback=record)
    return times


def test_hitting_time_law_matches_a_fine_step_simulation(oracle):
    """Zheng et al. Eq. 8 against (a) the T-step chain with T = 400 (grid error 2.5e-3) and (b) the order statistics law."""
    from scipy.stats import ks_2samp, kstest

    schedule = build_masking_schedule("cosine")
    fhs = _fhs_event_times(oracle, schedule, 2000)
    fine = _fine_step_event_times(oracle, schedule, 2000, 400)
    for j in range(oracle.L):
        assert ks_2samp(fhs[:, j].numpy(), fine[:, j].numpy()).pvalue > 1e-3, f"event {j}"
    # first event: 1 - alpha_s is the largest of L uniforms, so P(1 - alpha_s <= y) = y^L
    first = (1.0 - schedule.alpha(fhs[:, 0])).numpy()
    assert kstest(first, lambda y: y**oracle.L).pvalue > 1e-3
    assert kstest(first, lambda y: y ** (oracle.L + 1)).pvalue < 1e-6  # a wrong law is rejected
    assert (fhs[:, 1:] <= fhs[:, :-1]).all() and (fhs[:, -1] >= 0).all()


def test_tokens_do_not_depend_on_the_schedule(oracle):
    outs = [build_sampler("fhs").sample(oracle, all_masked(oracle, 32), oracle.mask_id, build_masking_schedule(kind),
                                        generator=torch.Generator().manual_seed(9)) for kind in ("linear", "cosine")]
    assert torch.equal(*outs)


def test_conditioning_tokens_are_kept(oracle):
    x = all_masked(oracle, 100)
    x[:, 0] = 2
    out = build_sampler("fhs_parallel", k=2).sample(oracle, x, oracle.mask_id, generator=torch.Generator().manual_seed(1))
    assert (out[:, 0] == 2).all() and (out != oracle.mask_id).all()


def test_bad_options_raise(oracle):
    with pytest.raises(ValueError, match="option k=0 is not allowed"):
        build_sampler("fhs_parallel", k=0)
    with pytest.raises(ValueError, match="unknown option.*steps.*allowed: precision"):
        build_sampler("fhs", steps=10)
    with pytest.raises(ValueError, match="long tensor"):
        build_sampler("fhs").sample(oracle, torch.zeros(2, 4), oracle.mask_id)
