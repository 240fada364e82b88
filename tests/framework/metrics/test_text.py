"""Text metrics against hand-computed values."""

import math

import pytest
import torch

from framework.metrics.text import generative_perplexity, text_metrics, unigram_entropy


def test_unigram_entropy_by_hand():
    tokens = torch.tensor([[1, 1, 1, 1], [0, 1, 2, 3], [5, 5, 7, 7]])
    assert unigram_entropy(tokens).tolist() == pytest.approx([0.0, math.log(4), math.log(2)])


class _UniformLM:
    """p(x_i | .) = 1/V for every token: perplexity V exactly."""

    def __init__(self, v):
        self.v = v

    def sequence_nll(self, tokens):
        return torch.full((tokens.shape[0],), tokens.shape[1] * math.log(self.v), dtype=torch.float64)


def test_generative_perplexity_of_a_uniform_lm_is_v():
    tokens = torch.randint(0, 50, (10, 7))
    assert generative_perplexity(_UniformLM(50), tokens, batch_size=3) == pytest.approx(50.0)
    m = text_metrics(_UniformLM(50), tokens)
    assert set(m) == {"gen_ppl", "entropy"} and m["entropy"] > 0
