import pytest
import torch

from framework.diffusion import Denoiser, build_schedule, convert


def test_conversions_round_trip():
    s = build_schedule("linear")
    x = torch.randn(5, 3, dtype=torch.float64)
    alpha, sigma = s.alpha(torch.tensor(0.4, dtype=torch.float64)), s.sigma(torch.tensor(0.4, dtype=torch.float64))
    eps = torch.randn(5, 3, dtype=torch.float64)
    for kind in ("x0", "v"):
        back = convert(convert(eps, x, alpha, sigma, "eps", kind), x, alpha, sigma, kind, "eps")
        assert torch.allclose(back, eps, atol=1e-12)


def test_guidance_combines_and_counts_nfe():
    s = build_schedule("linear")
    model = lambda x, t, y: x * 0 + y.to(x.dtype).unsqueeze(-1)  # prediction = label value
    labels = torch.tensor([2, 2])
    batched = Denoiser(model, s, labels=labels, guidance_scale=3.0, uncond_label=0)
    out = batched.eps(torch.zeros(2, 1), 0.5)
    assert torch.allclose(out, torch.full((2, 1), 0 + 3.0 * (2 - 0)))
    assert batched.nfe == 1
    separate = Denoiser(model, s, labels=labels, guidance_scale=3.0, uncond_label=0, batch_guidance=False)
    separate.eps(torch.zeros(2, 1), 0.5)
    assert separate.nfe == 2


def test_bad_prediction_named():
    with pytest.raises(ValueError, match="prediction 'score'"):
        Denoiser(lambda x, t: x, build_schedule("linear"), prediction="score")
