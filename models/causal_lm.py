"""The evaluator: a small causal transformer LM (the generative-perplexity judge trained by the project)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .transformer import TokenTransformer


class CausalLM(TokenTransformer):
    """Next-token model over V tokens; `bos_id` (the end-of-text token) starts every scored sequence."""

    def __init__(self, vocab_size: int, max_len: int, bos_id: int, d_model: int = 128, n_layers: int = 2,
                 n_heads: int = 4, mlp_ratio: int = 4, dropout: float = 0.0):
        super().__init__(vocab_size, vocab_size, max_len, d_model, n_layers, n_heads, mlp_ratio, dropout, causal=True)
        self.vocab_size, self.bos_id = vocab_size, int(bos_id)

    def sequence_nll(self, tokens: torch.Tensor) -> torch.Tensor:
        """sum_i -log p(x_i | bos, x_<i) per sequence (float64 [B]); the whole sequence is scored."""
        inputs = torch.cat([torch.full_like(tokens[:, :1], self.bos_id), tokens[:, :-1]], dim=1)
        nll = F.cross_entropy(self(inputs).transpose(1, 2), tokens, reduction="none")
        return nll.to(torch.float64).sum(-1)

    def next_token_loss(self, block: torch.Tensor) -> torch.Tensor:
        """Mean training loss on a packed block: predict block[1:] from block[:-1]."""
        logits = self(block[:, :-1])
        return F.cross_entropy(logits.transpose(1, 2), block[:, 1:])
