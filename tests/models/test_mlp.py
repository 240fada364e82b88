"""MLPDenoiser: shapes, dtypes, class conditioning with the null label, gradients."""

from __future__ import annotations

import pytest
import torch

from models import MLPDenoiser


def _batch(dim, dtype=torch.float32, n=5):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, dim, generator=g, dtype=dtype), torch.rand(n, generator=g, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("dim", [1, 2, 8])
def test_shape_and_dtype(dim, dtype):
    model = MLPDenoiser(dim, hidden=32).to(dtype)
    x, t = _batch(dim, dtype)
    out = model(x, t)
    assert out.shape == x.shape and out.dtype == dtype
    assert torch.count_nonzero(out) == 0  # zero-initialised output layer


def test_class_conditioning_and_null_label():
    model = MLPDenoiser(2, hidden=32, num_classes=3)
    torch.nn.init.normal_(model.out[-1].weight, std=0.1)
    assert model.null_label == 3
    x, t = _batch(2, n=1)
    x, t = x.expand(2, -1), t.expand(2)
    out = model(x, t, torch.tensor([0, 2]))
    assert not torch.allclose(out[0], out[1])
    torch.testing.assert_close(model(x, t), model(x, t, torch.full((2,), model.null_label)))


def test_unconditional_has_no_null_label_and_rejects_labels():
    model = MLPDenoiser(2, hidden=32)
    assert model.null_label is None
    x, t = _batch(2)
    with pytest.raises(ValueError, match="num_classes=None"):
        model(x, t, torch.zeros(5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"shape \[B, 2\]"):
        model(torch.randn(5, 3), t)


def test_gradients_reach_every_parameter_after_one_step():
    torch.manual_seed(0)
    model = MLPDenoiser(2, hidden=16, depth=2, num_classes=2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x, t = _batch(2, n=8)
    labels = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    for _ in range(2):  # the zero output layer blocks the other gradients on the first step only
        opt.zero_grad()
        (model(x, t, labels) - x).square().mean().backward()
        opt.step()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"no gradient reaches {missing}"
