"""An enumerable token distribution: an explicit joint over V^L sequences and its exact conditionals.

The oracle is the "perfect" masked model: for a partially masked x it returns, at every masked
position l, log p(x^l = v | unmasked tokens of x) (no time input, as Zheng et al. 2024 Prop. 3.2
says the optimum needs none). The exact laws that the masked samplers induce with this model are
computed by propagating a distribution over all (V + 1)^L partially masked states, so sampler
tests compare with exact answers, not golden numbers.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import torch

from ..diffusion.masking import MaskingSchedule


class EnumerableTokens:
    """A joint p(x) over sequences of length L with tokens 0..V-1; the mask token is V."""

    def __init__(self, joint: torch.Tensor):
        joint = joint.to(torch.float64)
        if joint.dim() < 1 or len(set(joint.shape)) != 1:
            raise ValueError(f"joint must have shape [V] * L, got {tuple(joint.shape)}")
        if (joint < 0).any() or abs(float(joint.sum()) - 1.0) > 1e-9:
            raise ValueError("joint must be non-negative and sum to 1")
        self.L, self.V = joint.dim(), joint.shape[0]
        self.mask_id = self.V
        self.joint = joint.reshape(-1)
        self.configs = torch.cartesian_prod(*[torch.arange(self.V)] * self.L).reshape(-1, self.L)

    @classmethod
    def random(cls, length: int = 4, vocab: int = 3, seed: int = 0, concentration: float = 0.5) -> "EnumerableTokens":
        """A Dirichlet(concentration) joint with full support (every sequence has probability > 0)."""
        g = torch.Generator().manual_seed(seed)
        gamma = torch._standard_gamma(torch.full((vocab**length,), float(concentration), dtype=torch.float64), generator=g)
        p = gamma.clamp_min(1e-6)
        return cls((p / p.sum()).reshape([vocab] * length))

    # --- the perfect masked model --------------------------------------------------
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log conditionals [B, L, V] (float64) for partially masked x [B, L]."""
        return self.log_conditionals(x)

    def log_conditionals(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(self.configs.device)
        visible = x != self.mask_id
        consistent = ((self.configs[None] == x[:, None]) | ~visible[:, None]).all(-1)  # [B, V^L]
        weights = consistent.to(torch.float64) * self.joint[None]
        onehot = torch.nn.functional.one_hot(self.configs, self.V).to(torch.float64)  # [V^L, L, V]
        marg = torch.einsum("bc,clv->blv", weights, onehot)
        return torch.log(marg / marg.sum(-1, keepdim=True))

    # --- indexing and counting -------------------------------------------------------
    def index(self, tokens: torch.Tensor) -> torch.Tensor:
        """Index into the flat joint of complete sequences [N, L]."""
        if (tokens >= self.V).any() or (tokens < 0).any():
            raise ValueError("sequences must be complete (no mask token) to index the joint")
        powers = self.V ** torch.arange(self.L - 1, -1, -1)
        return (tokens.long().cpu() * powers).sum(-1)

    def empirical(self, tokens: torch.Tensor) -> torch.Tensor:
        """Empirical distribution of complete sequences, as a flat vector aligned with `joint`."""
        counts = torch.bincount(self.index(tokens), minlength=self.V**self.L).to(torch.float64)
        return counts / counts.sum()

    def log_prob(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.log(self.joint[self.index(tokens)])

    # --- exact laws of the samplers ------------------------------------------------
    def _states(self) -> torch.Tensor:
        return torch.cartesian_prod(*[torch.arange(self.V + 1)] * self.L).reshape(-1, self.L)

    def _final_law(self, states: torch.Tensor, law: torch.Tensor) -> torch.Tensor:
        complete = (states != self.mask_id).all(-1)
        if law[~complete].sum() > 1e-12:
            raise RuntimeError("the propagated law still has masked tokens at the end")
        out = torch.zeros(self.V**self.L, dtype=torch.float64)
        out.index_add_(0, self.index(states[complete]), law[complete])
        return out

    def tstep_law(self, grid: Sequence[float], schedule: MaskingSchedule) -> torch.Tensor:
        """Exact output law of the T-step ancestral sampler on `grid` (1 = t_0 > ... > t_T = 0)."""
        states = self._states()
        cond = self.log_conditionals(states).exp()  # [S, L, V]
        masked = states == self.mask_id
        law = torch.zeros(len(states), dtype=torch.float64)
        law[masked.all(-1).nonzero()[0]] = 1.0
        onehot = torch.nn.functional.one_hot(states, self.V + 1).to(torch.float64)
        alphas = [float(schedule.alpha(t)) for t in grid]
        for a_t, a_s in zip(alphas[:-1], alphas[1:]):
            keep = (1.0 - a_s) / (1.0 - a_t)
            move = torch.cat([(1.0 - keep) * cond, torch.full_like(cond[..., :1], keep)], dim=-1)
            per_pos = torch.where(masked[..., None], move, onehot)  # [S, L, V+1]
            law = law @ _outer_rows(per_pos)
        return self._final_law(states, law)

    def parallel_law(self, k: int) -> torch.Tensor:
        """Exact output law of the first-hitting sampler unmasking k tokens per event (k = 1: FHS)."""
        states = self._states()
        cond = self.log_conditionals(states).exp()
        onehot = torch.nn.functional.one_hot(states, self.V + 1).to(torch.float64)
        cond_full = torch.cat([cond, torch.zeros_like(cond[..., :1])], dim=-1)
        transition = torch.zeros(len(states), len(states), dtype=torch.float64)
        for i, state in enumerate(states):
            masked = (state == self.mask_id).nonzero().flatten().tolist()
            if not masked:
                transition[i, i] = 1.0
                continue
            subsets = list(itertools.combinations(masked, min(k, len(masked))))
            for subset in subsets:
                per_pos = onehot[i].clone()
                per_pos[list(subset)] = cond_full[i, list(subset)]
                transition[i] += _outer_rows(per_pos[None])[0] / len(subsets)
        law = torch.zeros(len(states), dtype=torch.float64)
        law[(states == self.mask_id).all(-1).nonzero()[0]] = 1.0
        for _ in range(self.L):
            law = law @ transition
        return self._final_law(states, law)

    def product_of_marginals(self) -> torch.Tensor:
        """The law of unmasking every token at once from the all-mask state: prod_l p(x^l)."""
        marg = self.log_conditionals(torch.full((1, self.L), self.mask_id))[0].exp()
        out = torch.ones(1, dtype=torch.float64)
        for l in range(self.L):
            out = (out[:, None] * marg[l][None]).reshape(-1)
        return out


def _outer_rows(per_pos: torch.Tensor) -> torch.Tensor:
    """Row-wise outer product over positions: [S, L, K] -> [S, K^L], position 0 most significant."""
    out = per_pos[:, 0]
    for l in range(1, per_pos.shape[1]):
        out = (out[:, :, None] * per_pos[:, l, None, :]).reshape(per_pos.shape[0], -1)
    return out


def total_variation(p: torch.Tensor, q: torch.Tensor) -> float:
    return 0.5 * float((p - q).abs().sum())


def pooled_chi_square(observed: torch.Tensor, expected_probs: torch.Tensor, min_expected: float = 5.0) -> tuple[float, int]:
    """Pearson's chi-square of counts against probabilities, pooling cells with expected count < min_expected.

    Returns (statistic, degrees of freedom); the p-value is chi2.sf(statistic, dof).
    """
    observed, p = observed.to(torch.float64).flatten(), expected_probs.to(torch.float64).flatten()
    n = observed.sum()
    expected = n * p
    small = expected < min_expected
    obs = torch.cat([observed[~small], observed[small].sum()[None]]) if small.any() else observed
    exp = torch.cat([expected[~small], expected[small].sum()[None]]) if small.any() else expected
    keep = exp > 0
    if (obs[~keep] > 0).any():
        return float("inf"), int(keep.sum()) - 1
    obs, exp = obs[keep], exp[keep]
    return float(((obs - exp) ** 2 / exp).sum()), int(len(exp)) - 1
