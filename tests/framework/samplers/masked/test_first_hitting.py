"""FHS and its parallel variant: exact laws on the enumerable oracle, honest NFE, the hitting-time law.

Law checks (conftest.assert_law): chi-square p > 1e-3 and TV(empirical, exact) <= tol(N) (about 0.05
at N = 12,000), and the same samples reject a wrong law at TV > 2 tol (the negative control).
"""

import pytest
import torch

from framework.diffusion.masking import build_masking_schedule
from framework.oracles.tokens import total_variation
from framework.samplers import build_sampler
from framework.samplers.masked import MaskedDenoiser

from .conftest import all_masked, assert_law, conditional_law, law_check, product_law

N = 12_000


@pytest.mark.parametrize("precision", ["float64", "float32"])
def test_fhs_reproduces_the_joint_with_one_call_per_token(oracle, precision):
    assert total_variation(oracle.parallel_law(1), oracle.joint) < 1e-12  # exact in law (any-order AR)
    den = MaskedDenoiser(oracle, oracle.mask_id)
    out = build_sampler("fhs", precision=precision).sample(den, all_masked(oracle, N),
                                                           generator=torch.Generator().manual_seed(3))
    assert den.calls == oracle.L and den.rows == N * oracle.L
    assert_law(out, oracle, oracle.joint, wrong=oracle.parallel_law(2))


def test_fhs_law_check_rejects_a_wrong_model(oracle):
    """Negative control on the sampler side: FHS with tempered conditionals (logits / 2) is not the joint."""
    tempered = build_sampler("fhs").sample(lambda x: oracle(x) / 2, all_masked(oracle, N), mask_id=oracle.mask_id,
                                           generator=torch.Generator().manual_seed(3))
    check = law_check(tempered, oracle, oracle.joint)
    assert not check.passed and check.pvalue < 1e-6 and check.tv > check.tol, check


def test_parallel_variant_matches_its_exact_law_and_tends_to_the_joint_as_k_to_1(oracle):
    tvs = [total_variation(oracle.parallel_law(k), oracle.joint) for k in (1, 2, 4)]
    assert tvs[0] < 1e-12 < 0.05 < tvs[1] < tvs[2]
    assert total_variation(oracle.parallel_law(4), oracle.product_of_marginals()) < 1e-12
    for k, seed in ((1, 3), (2, 4), (4, 5)):
        den = MaskedDenoiser(oracle, oracle.mask_id)
        out = build_sampler("fhs_parallel", k=k).sample(den, all_masked(oracle, N),
                                                        generator=torch.Generator().manual_seed(seed))
        assert den.calls == -(-oracle.L // k) and den.rows == N * den.calls
        wrong = oracle.parallel_law(2) if k == 1 else oracle.joint
        assert_law(out, oracle, oracle.parallel_law(k), wrong)


@pytest.mark.parametrize("name, options", [("fhs", {}), ("fhs_parallel", {"k": 1})])
def test_fhs_on_a_prompt_follows_the_exact_conditional(oracle, name, options):
    """Prompt tokens are kept and the rest follows p(x | prompt), computed from the joint (not p(x))."""
    prompt = {0: 2, 2: 0}
    x = all_masked(oracle, N)
    for pos, tok in prompt.items():
        x[:, pos] = tok
    den = MaskedDenoiser(oracle, oracle.mask_id)
    out = build_sampler(name, **options).sample(den, x, generator=torch.Generator().manual_seed(11))
    assert den.rows == N * 2  # one call per masked token, not per position
    assert all((out[:, pos] == tok).all() for pos, tok in prompt.items())
    assert_law(out, oracle, conditional_law(oracle, prompt), wrong=product_law(oracle, x[0]))


def test_parallel_with_k_at_least_the_masks_draws_the_product_of_conditionals(oracle):
    """k >= number of masks: one call, every mask drawn from its own conditional given the prompt."""
    x = all_masked(oracle, N)
    x[:, 1] = 1
    den = MaskedDenoiser(oracle, oracle.mask_id)
    out = build_sampler("fhs_parallel", k=3).sample(den, x, generator=torch.Generator().manual_seed(12))
    assert den.calls == 1 and den.rows == N
    assert_law(out, oracle, product_law(oracle, x[0]), wrong=conditional_law(oracle, {1: 1}))


def _fhs_event_times(oracle, schedule, n):
    times = torch.zeros(n, oracle.L, dtype=torch.float64)

    def record(d):
        times[d["rows"], d["i"]] = d["s"]

    build_sampler("fhs").sample(oracle, all_masked(oracle, n), schedule=schedule, mask_id=oracle.mask_id,
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

    build_sampler("mdlm_tstep", steps=steps).sample(oracle, all_masked(oracle, n), schedule=schedule,
                                                    mask_id=oracle.mask_id, generator=torch.Generator().manual_seed(8),
                                                    callback=record)
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


def test_fhs_tokens_do_not_depend_on_the_schedule(oracle):
    """FHS only: the schedule changes the event times, not the tokens (the T-step sampler's do change)."""
    outs = [build_sampler("fhs").sample(oracle, all_masked(oracle, 32), schedule=build_masking_schedule(kind),
                                        mask_id=oracle.mask_id, generator=torch.Generator().manual_seed(9))
            for kind in ("linear", "cosine")]
    assert torch.equal(*outs)


def test_bad_options_raise(oracle):
    with pytest.raises(ValueError, match="option k=0 is not allowed"):
        build_sampler("fhs_parallel", k=0)
    with pytest.raises(ValueError, match="unknown option.*steps.*allowed: precision"):
        build_sampler("fhs", steps=10)
    with pytest.raises(ValueError, match="x_T must be a long tensor"):
        build_sampler("fhs").sample(oracle, torch.zeros(2, 4), mask_id=oracle.mask_id)
    with pytest.raises(ValueError, match="sampler 'fhs' takes no timesteps"):
        build_sampler("fhs").sample(oracle, all_masked(oracle, 2), mask_id=oracle.mask_id, timesteps=[1.0, 0.0])
