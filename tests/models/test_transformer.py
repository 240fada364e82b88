"""The token transformers: shapes, no time input, causality, bidirectionality."""

import pytest
import torch

from models.causal_lm import CausalLM
from models.transformer import MaskedTransformer


def test_masked_transformer_is_bidirectional_and_maps_v_plus_mask_to_v():
    torch.manual_seed(0)
    net = MaskedTransformer(vocab_size=11, max_len=8, d_model=32, n_layers=2, n_heads=4).eval()
    x = torch.randint(0, 12, (3, 8))
    out = net(x)
    assert out.shape == (3, 8, 11)
    y = x.clone()
    y[:, -1] = (y[:, -1] + 1) % 12
    assert not torch.allclose(net(y)[:, 0], out[:, 0])  # position 0 sees the last token


def test_causal_lm_is_causal_and_scores_sequences():
    torch.manual_seed(0)
    lm = CausalLM(vocab_size=11, max_len=9, bos_id=10, d_model=32, n_layers=2, n_heads=4).eval()
    x = torch.randint(0, 11, (2, 8))
    y = x.clone()
    y[:, -1] = (y[:, -1] + 1) % 11
    assert torch.allclose(lm(x)[:, :-1], lm(y)[:, :-1], atol=1e-6)  # no look-ahead
    nll = lm.sequence_nll(x)
    assert nll.shape == (2,) and (nll > 0).all()
    with torch.no_grad():  # by hand: sum of -log softmax at each position
        inputs = torch.cat([torch.full((2, 1), 10), x[:, :-1]], 1)
        logp = torch.log_softmax(lm(inputs), -1).gather(-1, x[..., None])[..., 0].sum(-1)
    assert torch.allclose(nll, -logp.double(), atol=1e-4)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="model.d_model=30 must be divisible by model.n_heads=4"):
        MaskedTransformer(vocab_size=5, max_len=4, d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="exceeds the model's max_len=4"):
        MaskedTransformer(vocab_size=5, max_len=4, d_model=16, n_heads=4)(torch.zeros(1, 5, dtype=torch.long))
