"""Error-vs-NFE helpers shared by the solver tests and the benchmarks."""

from __future__ import annotations

import math
from typing import Sequence

import torch


def mean_error(x: torch.Tensor, ref: torch.Tensor) -> float:
    """Mean over samples of the Euclidean distance between a solution and the reference."""
    return float((x.to(torch.float64) - ref.to(torch.float64)).flatten(1).norm(dim=1).mean())


def empirical_order(nfes: Sequence[float], errors: Sequence[float]) -> float:
    """Least-squares slope p of log(error) = c - p log(nfe): the observed convergence order."""
    xs = [math.log(n) for n in nfes]
    ys = [math.log(e) for e in errors]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    num = sum((a - mx) * (b - my) for a, b in zip(xs, ys))
    den = sum((a - mx) ** 2 for a in xs)
    return -num / den
