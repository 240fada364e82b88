"""UNet: shapes, dtypes, class conditioning with the null label, gradients, and clear errors."""

from __future__ import annotations

import pytest
import torch

from models import UNet

SMALL = dict(base_channels=8, channel_mults=(1, 2))


def _batch(shape, dtype=torch.float32, n=3):
    g = torch.Generator().manual_seed(0)
    return torch.randn(n, *shape, generator=g, dtype=dtype), torch.rand(n, generator=g, dtype=dtype)


def _randomise_output(model: UNet) -> None:
    """The output conv starts at zero; give it weights so that tests can see the input's influence."""
    torch.nn.init.normal_(model.conv_out[-1].weight, std=0.1)


@pytest.mark.parametrize("in_channels,image_size,mults,attn", [
    (1, 8, (1, 2), (4,)),
    (3, 16, (1, 2, 2), (8, 4)),
    (3, 32, (1, 2), (16,)),
])
def test_output_shape_matches_input(in_channels, image_size, mults, attn):
    model = UNet(in_channels=in_channels, base_channels=8, channel_mults=mults, attention_resolutions=attn,
                 image_size=image_size)
    x, t = _batch((in_channels, image_size, image_size))
    assert model(x, t).shape == x.shape


def test_output_starts_at_zero():
    model = UNet(**SMALL)
    x, t = _batch((1, 8, 8))
    assert torch.count_nonzero(model(x, t)) == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_is_kept(dtype):
    model = UNet(**SMALL, num_classes=3).to(dtype)
    x, t = _batch((1, 8, 8), dtype)
    assert model(x, t, torch.tensor([0, 1, 2])).dtype == dtype


def test_float64_agrees_with_float32():
    model = UNet(**SMALL)
    _randomise_output(model)
    x, t = _batch((1, 8, 8))
    out32 = model(x, t)
    out64 = model.double()(x.double(), t.double())
    torch.testing.assert_close(out64.float(), out32, rtol=1e-4, atol=1e-5)


def test_class_conditioning_and_null_label():
    model = UNet(**SMALL, num_classes=4)
    _randomise_output(model)
    assert model.null_label == 4 and model.cond.class_emb.num_embeddings == 5
    x, t = _batch((1, 8, 8), n=2)
    x, t = x[:1].expand(2, -1, -1, -1), t[:1].expand(2)
    out = model(x, t, torch.tensor([0, 1]))
    assert not torch.allclose(out[0], out[1]), "different labels must change the prediction"
    null = model(x, t, torch.full((2,), model.null_label))
    torch.testing.assert_close(model(x, t), null)  # labels=None means the null label


def test_time_changes_prediction_and_scalar_time_broadcasts():
    model = UNet(**SMALL)
    _randomise_output(model)
    x, _ = _batch((1, 8, 8), n=1)
    assert not torch.allclose(model(x, torch.tensor([0.1])), model(x, torch.tensor([0.9])))
    torch.testing.assert_close(model(x.expand(2, -1, -1, -1), 0.3), model(x.expand(2, -1, -1, -1), torch.full((2,), 0.3)))


def test_gradients_reach_every_parameter():
    model = UNet(**SMALL, num_classes=2)
    x, t = _batch((1, 8, 8), n=3)
    loss = (model(x, t, torch.tensor([0, 1, 2])) - x).square().mean()
    loss.backward()
    # with a zero output conv only it gets a gradient at first; one step later all do
    with torch.no_grad():
        for p in model.parameters():
            p -= 0.1 * p.grad if p.grad is not None else 0.0
    model.zero_grad()
    (model(x, t, torch.tensor([0, 1, 2])) - x).square().mean().backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not torch.any(p.grad != 0)]
    assert not missing, f"no gradient reaches {missing}"


@pytest.mark.parametrize("kwargs,message", [
    (dict(attention_resolutions=(2,)), "attention_resolutions"),
    (dict(image_size=10, channel_mults=(1, 2, 2)), "image_size"),
    (dict(channel_mults=()), "channel_mults"),
    (dict(num_heads=3), "num_heads"),
])
def test_bad_settings_name_the_setting(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UNet(**{**SMALL, **kwargs})


def test_bad_inputs_are_rejected():
    model = UNet(**SMALL)
    x, t = _batch((1, 8, 8))
    with pytest.raises(ValueError, match="expects x of shape"):
        model(torch.randn(3, 1, 16, 16), t)
    with pytest.raises(ValueError, match="t must be"):
        model(x, t[:2])
    with pytest.raises(ValueError, match="num_classes=None"):
        model(x, t, torch.zeros(3, dtype=torch.long))
    conditional = UNet(**SMALL, num_classes=2)
    with pytest.raises(ValueError, match="labels must lie"):
        conditional(x, t, torch.tensor([0, 1, 3]))
