"""The masked family's interface: one option machinery with the continuous samplers, family-checked
look-ups, each sampler's own NFE rule (`with_nfe`), and a clear error for every bad input."""

import math

import pytest
import torch

from framework.diffusion import build_schedule
from framework.diffusion.denoiser import Denoiser
from framework.diffusion.masking import build_masking_schedule
from framework.samplers import (
    FAMILIES, MaskedSampler, Sampler, SamplerBase, available_samplers, build_from_config, build_sampler, sampler_class,
)
from framework.samplers.masked import MaskedDenoiser

from .conftest import all_masked

MASKED = ["fhs", "fhs_parallel", "mdlm_tstep"]

V, L = 5, 9  # a random time-free model for the NFE checks: L != V, so shapes cannot be confused
_W = torch.randn(V + 1, L, V, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


def net(x: torch.Tensor) -> torch.Tensor:
    e = _W[x, torch.arange(x.shape[1])]
    return (e + 0.3 * e.sum(1, keepdim=True)).float()


def masked_batch(b: int = 6) -> torch.Tensor:
    return torch.full((b, L), V, dtype=torch.long)


# --- families ----------------------------------------------------------------------------------
def test_every_sampler_has_a_family_and_the_families_split_the_registry():
    assert FAMILIES == ("continuous", "masked")
    assert available_samplers("masked") == MASKED
    continuous = available_samplers("continuous")
    assert "ddim" in continuous and not set(continuous) & set(MASKED)
    assert sorted(continuous + MASKED) == available_samplers()
    for name in available_samplers():
        cls = sampler_class(name)
        assert issubclass(cls, SamplerBase) and cls.family in FAMILIES and not hasattr(cls, "data_kind")
        assert issubclass(cls, MaskedSampler if cls.family == "masked" else Sampler)
        assert build_sampler(name, family=cls.family).family == cls.family


def test_a_sampler_of_the_other_family_is_refused_naming_both():
    with pytest.raises(ValueError, match=r"'fhs' is a masked sampler, but a continuous sampler is needed here; "
                                         r"allowed \(continuous\): .*ddim"):
        build_sampler("fhs", family="continuous")
    with pytest.raises(ValueError, match=r"'ddim' is a continuous sampler, but a masked sampler is needed here; "
                                         r"allowed \(masked\): fhs, fhs_parallel, mdlm_tstep$"):
        build_sampler("ddim", family="masked", eta=0.0)
    with pytest.raises(ValueError, match=r"'mdlm_tstep' is a masked sampler.*allowed \(continuous\)"):
        build_from_config({"name": "mdlm_tstep", "steps": 4}, family="continuous")
    assert build_from_config({"name": "mdlm_tstep", "steps": 4}, family="masked").options["steps"] == 4
    with pytest.raises(ValueError, match=r"unknown masked sampler 'nope'; allowed: fhs, fhs_parallel, mdlm_tstep$"):
        build_sampler("nope", family="masked")
    with pytest.raises(ValueError, match=r"family 'images' is not allowed; allowed: continuous, masked"):
        available_samplers("images")
    with pytest.raises(ValueError, match=r"needs a 'name'; allowed: fhs, fhs_parallel, mdlm_tstep"):
        build_from_config({"steps": 4}, family="masked")


# --- one option machinery ------------------------------------------------------------------------
def test_options_explicit_config_and_repr_are_shared():
    s = build_sampler("fhs_parallel", precision="float32")
    assert s.explicit == {"precision"} and s.options == {"k": 4, "precision": "float32"}
    assert s.to_config() == {"name": "fhs_parallel", "k": 4, "precision": "float32"}
    assert repr(s) == "ParallelFirstHittingSampler(k=4, precision='float32')"
    assert list(type(s).option_spec()) == ["k", "precision"]
    c = build_sampler("ddim", eta=0.5)
    assert c.explicit == {"eta"} and c.family == "continuous" and c.to_config()["eta"] == 0.5
    with pytest.raises(ValueError, match="sampler 'fhs': option precision='float16' is not allowed"):
        build_sampler("fhs", precision="float16")


# --- NFE rules -------------------------------------------------------------------------------------
def test_each_sampler_says_which_option_its_nfe_sets():
    assert {n: sampler_class(n).nfe_option for n in MASKED} == {"fhs": None, "fhs_parallel": "k", "mdlm_tstep": "steps"}


def test_with_nfe_sets_the_option_by_each_rule():
    t = build_sampler("mdlm_tstep").with_nfe(8, 64)
    assert t.options["steps"] == 8 and t.explicit == {"steps"}
    assert build_sampler("mdlm_tstep").with_nfe(8).options["steps"] == 8  # needs no length
    for nfe, k in ((8, 8), (48, 2), (64, 1), (100, 1), (1, 64)):
        p = build_sampler("fhs_parallel", precision="float32").with_nfe(nfe, 64)
        assert p.options == {"k": k, "precision": "float32"} and math.ceil(64 / k) <= nfe
    f = build_sampler("fhs")
    assert f.with_nfe(64, 64) is f


def test_with_nfe_refuses_an_explicit_option_that_disagrees_naming_both():
    with pytest.raises(ValueError, match=r"'mdlm_tstep': nfe=8 sets steps=8 \(steps = nfe\), but steps=4 was given explicitly"):
        build_sampler("mdlm_tstep", steps=4).with_nfe(8, 64)
    same = build_sampler("mdlm_tstep", steps=8)
    assert same.with_nfe(8, 64) is same
    with pytest.raises(ValueError, match=r"nfe=20 sets k=4 \(k = ceil\(L / nfe\), L = 64\), but k=2 was given explicitly"):
        build_sampler("fhs_parallel", k=2).with_nfe(20, 64)
    assert build_sampler("fhs_parallel", k=4).with_nfe(20, 64).options["k"] == 4
    with pytest.raises(ValueError, match=r"nfe=16 sets steps=16.*but steps=8"):  # a derived sampler keeps its NFE
        build_sampler("mdlm_tstep").with_nfe(8).with_nfe(16)
    with pytest.raises(ValueError, match=r"'fhs' uses exactly L = 64 evaluations per sample; nfe=8 is not allowed; allowed: nfe=64"):
        build_sampler("fhs").with_nfe(8, 64)


@pytest.mark.parametrize("name", ["fhs", "fhs_parallel"])
def test_rules_that_need_the_length_say_so(name):
    with pytest.raises(ValueError, match=rf"sampler '{name}': its NFE rule .* needs the sequence length L; got length=None"):
        build_sampler(name).check_nfe(8)
    assert not build_sampler(name).allows_nfe(8)
    with pytest.raises(ValueError, match="length .* must be a positive integer"):
        build_sampler(name).with_nfe(8, 0)


@pytest.mark.parametrize("bad", [0, -3, True, 2.0, "8", None])
def test_check_nfe_refuses_a_bad_nfe(bad):
    for name in MASKED + ["ddim"]:
        with pytest.raises(ValueError, match=r"nfe must be a positive integer, got"):
            build_sampler(name).check_nfe(bad, 64)
        assert not build_sampler(name).allows_nfe(bad, 64)


def test_check_nfe_and_allows_nfe_follow_with_nfe():
    assert build_sampler("fhs").check_nfe(64, 64) == 64 and not build_sampler("fhs").allows_nfe(63, 64)
    assert build_sampler("fhs_parallel").allows_nfe(5, 64) and build_sampler("mdlm_tstep").allows_nfe(5)
    assert not build_sampler("mdlm_tstep", steps=4).allows_nfe(5)
    ddim = build_sampler("ddim")  # continuous samplers ignore the length
    assert [ddim.allows_nfe(n, 64) for n in range(1, 6)] == [ddim.allows_nfe(n) for n in range(1, 6)]
    assert ddim.check_nfe(5, length=64) == 5


@pytest.mark.parametrize("name", MASKED)
def test_sample_with_nfe_spends_at_most_that_budget(name):
    nfes = [L] if name == "fhs" else list(range(1, L + 4))
    for nfe in nfes:
        den = MaskedDenoiser(net, V)
        out = build_sampler(name).sample(den, masked_batch(), nfe, generator=torch.Generator().manual_seed(nfe))
        assert (out != V).all() and den.rows / len(out) <= nfe and den.calls <= nfe, (name, nfe, den.rows)
    if name == "fhs":
        assert den.rows == len(out) * L


def test_sample_with_nfe_is_the_sampler_at_that_option():
    gen = lambda: torch.Generator().manual_seed(3)  # noqa: E731
    a = build_sampler("mdlm_tstep").sample(net, masked_batch(), 5, mask_id=V, generator=gen())
    b = build_sampler("mdlm_tstep", steps=5).sample(net, masked_batch(), mask_id=V, generator=gen())
    c = build_sampler("fhs_parallel").sample(net, masked_batch(), 3, mask_id=V, generator=gen())
    d = build_sampler("fhs_parallel", k=3).sample(net, masked_batch(), mask_id=V, generator=gen())
    assert torch.equal(a, b) and torch.equal(c, d)


def test_sample_refuses_an_nfe_its_explicit_option_contradicts():
    with pytest.raises(ValueError, match=r"nfe=8 sets steps=8.*but steps=4 was given explicitly"):
        build_sampler("mdlm_tstep", steps=4).sample(net, masked_batch(), 8, mask_id=V)
    with pytest.raises(ValueError, match=r"'fhs' uses exactly L = 9 evaluations per sample; nfe=8"):
        build_sampler("fhs").sample(net, masked_batch(), 8, mask_id=V)
    with pytest.raises(ValueError, match=r"nfe must be a positive integer, got '8'"):
        build_sampler("mdlm_tstep").sample(net, masked_batch(), "8", mask_id=V)


# --- bad inputs --------------------------------------------------------------------------------------
def _logits_with(value_at, rows=lambda x: torch.tensor([0])):
    """A model with zero logits except at position 1 of the input rows `rows(x)`, set there by value_at(row)."""

    def model(x):
        out = torch.zeros(*x.shape, V)
        for b in rows(x).tolist():
            value_at(out[b, 1])
        return out

    return model


@pytest.mark.parametrize("name", MASKED)
@pytest.mark.parametrize("kind", ["nan", "+inf", "all -inf"])
def test_non_finite_logits_at_a_masked_position_are_refused(name, kind):
    setter = {"nan": lambda r: r.__setitem__(2, float("nan")), "+inf": lambda r: r.__setitem__(0, float("inf")),
              "all -inf": lambda r: r.fill_(float("-inf"))}[kind]
    with pytest.raises(ValueError, match=r"non-finite logits \(NaN, \+inf, or a row of all -inf\) at 1 masked position\(s\) "
                                         r"in 1 of 6 row\(s\) \(first: row 0, position 1\)"):
        build_sampler(name).sample(_logits_with(setter), masked_batch(), mask_id=V)


@pytest.mark.parametrize("name", MASKED)
def test_some_minus_inf_and_non_finite_logits_at_given_tokens_are_fine(name):
    every_row = lambda x: torch.arange(len(x))  # noqa: E731
    partial = _logits_with(lambda r: r[:2].fill_(float("-inf")), every_row)  # tokens 0, 1 impossible at position 1
    out = build_sampler(name).sample(partial, masked_batch(), mask_id=V, generator=torch.Generator().manual_seed(0))
    assert (out[:, 1] >= 2).all() and (out != V).all()
    x = masked_batch()
    x[:, 1] = 3  # a prompt token where the logits are NaN: never sampled there, so not refused
    out = build_sampler(name).sample(_logits_with(lambda r: r.fill_(float("nan")), every_row), x, mask_id=V)
    assert (out[:, 1] == 3).all() and (out != V).all()


@pytest.mark.parametrize("name", MASKED)
@pytest.mark.parametrize("bad", [5.0, "5", True, 0, -1, None])
def test_mask_id_must_be_an_integer_of_at_least_1(name, bad):
    with pytest.raises(ValueError, match="mask_id"):
        build_sampler(name).sample(net, masked_batch(), mask_id=bad)
    if bad is not None:
        with pytest.raises(ValueError, match=r"mask_id must be an integer >= 1"):
            MaskedDenoiser(net, bad)


def test_mask_id_comes_from_the_denoiser_or_must_agree_with_it():
    with pytest.raises(ValueError, match="mask_id is required unless the model is a MaskedDenoiser"):
        build_sampler("fhs").sample(net, masked_batch())
    with pytest.raises(ValueError, match="mask_id=4 differs from the denoiser's mask_id 5"):
        build_sampler("fhs").sample(MaskedDenoiser(net, V), masked_batch(), mask_id=4)
    import numpy as np

    assert (build_sampler("fhs").sample(net, masked_batch(), mask_id=np.int64(V)) != V).all()


@pytest.mark.parametrize("name", MASKED)
@pytest.mark.parametrize("token", [-1, V + 1, 100])
def test_prompt_tokens_outside_the_vocabulary_are_refused(name, token):
    x = masked_batch()
    x[2, 4] = token
    calls = []
    with pytest.raises(ValueError, match=rf"x_T has 1 token\(s\) outside \[0, V\) = \[0, {V}\) that are not the mask id {V} "
                                         rf"\(first: {token} at row 2, position 4\)"):
        build_sampler(name).sample(lambda x: calls.append(1) or net(x), x, mask_id=V)
    assert not calls  # refused before the model saw it


@pytest.mark.parametrize("name", MASKED)
@pytest.mark.parametrize("x_T", [torch.zeros(2, L), torch.full((L,), V), torch.full((0, L), V), torch.full((2, 0), V), [[V] * L]])
def test_x_T_must_be_a_long_batch_of_sequences(name, x_T):
    with pytest.raises(ValueError, match=r"x_T must be a long tensor \[batch, length\]"):
        build_sampler(name).sample(net, x_T, mask_id=V)


@pytest.mark.parametrize("name", MASKED)
@pytest.mark.parametrize("schedule", [build_schedule("discrete_linear"), build_schedule("cosine"), "linear"])
def test_a_continuous_schedule_is_refused_naming_the_expected_kind(name, schedule):
    with pytest.raises(ValueError, match=r"schedule must be a masking schedule \(framework.diffusion.masking.MaskingSchedule"):
        build_sampler(name).sample(net, masked_batch(), schedule=schedule, mask_id=V)


@pytest.mark.parametrize("name", MASKED)
def test_logits_must_have_three_dims_even_when_the_length_equals_the_vocabulary(name):
    x = torch.full((4, V), V, dtype=torch.long)  # L = V: [B, L] logits have a last axis of V
    with pytest.raises(ValueError, match=rf"logits \[B, L, V\] \(3 dims\) with V = mask_id = {V}; got 2 dims \(4, 5\)"):
        build_sampler(name).sample(lambda t: torch.zeros(t.shape), x, mask_id=V)
    with pytest.raises(ValueError, match=r"got 3 dims \(4, 5, 6\)"):
        build_sampler(name).sample(lambda t: torch.zeros(*t.shape, V + 1), x, mask_id=V)


@pytest.mark.parametrize("name", MASKED)
def test_generators_must_be_one_or_exactly_one_per_sample(name):
    with pytest.raises(ValueError, match="generator: got a list of 2 generators for a batch of 6"):
        build_sampler(name).sample(net, masked_batch(), mask_id=V, generator=[torch.Generator()] * 2)
    with pytest.raises(ValueError, match="generator must be None, a torch.Generator or a list"):
        build_sampler(name).sample(net, masked_batch(), mask_id=V, generator=5)
    gens = [torch.Generator().manual_seed(i) for i in range(6)]
    assert (build_sampler(name).sample(net, masked_batch(), mask_id=V, generator=gens) != V).all()


def test_other_bad_arguments_name_themselves():
    with pytest.raises(ValueError, match="continuous Denoiser"):
        build_sampler("fhs").sample(Denoiser(lambda x, t: x, build_schedule("cosine")), masked_batch(), mask_id=V)
    with pytest.raises(ValueError, match="callable tokens"):
        build_sampler("fhs").sample("model", masked_batch(), mask_id=V)
    with pytest.raises(ValueError, match="callback must be callable"):
        build_sampler("fhs").sample(net, masked_batch(), mask_id=V, callback=1)
    with pytest.raises(ValueError, match="progress must be True or False"):
        build_sampler("fhs").sample(net, masked_batch(), mask_id=V, progress="yes")


@pytest.mark.parametrize("name", MASKED)
def test_progress_and_an_explicit_linear_schedule_change_nothing(name, oracle):
    gen = lambda: [torch.Generator().manual_seed(i) for i in range(6)]  # noqa: E731
    base = build_sampler(name).sample(net, masked_batch(), mask_id=V, generator=gen())
    shown = build_sampler(name).sample(net, masked_batch(), mask_id=V, generator=gen(), progress=True,
                                       schedule=build_masking_schedule("linear"))
    assert torch.equal(base, shown)
    assert torch.equal(build_sampler(name).sample(oracle, all_masked(oracle, 3), mask_id=oracle.mask_id,
                                                  generator=torch.Generator().manual_seed(1)),
                       build_sampler(name).sample(MaskedDenoiser(oracle, oracle.mask_id), all_masked(oracle, 3),
                                                  generator=torch.Generator().manual_seed(1)))
