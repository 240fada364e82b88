"""The reference-solution error: how far a sampler's outputs are from a reference solution from the same noises.

mean_i ||x_i - ref_i|| / ||ref_i|| over the samples, in float64, as a torchmetrics Metric whose per-sample
values are gathered across ranks and averaged in global index order, so the number is the same on 1 or N
processes. Unlike FID on small images it does not saturate as the sampler converges.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


def relative_errors(x: Tensor, reference: Tensor) -> Tensor:
    """||x_i - ref_i|| / ||ref_i|| per sample (float64 [N]); x and reference [N, ...] of the same shape."""
    if x.shape != reference.shape:
        raise ValueError(f"samples {tuple(x.shape)} and reference {tuple(reference.shape)} must have the same shape")
    x, reference = x.to(torch.float64).flatten(1), reference.to(torch.float64).flatten(1)
    return (x - reference).norm(dim=1) / reference.norm(dim=1).clamp_min(1e-300)


class RelativeError(Metric):
    """Mean relative error to a reference; update(samples, reference, indices) with global sample indices."""

    full_state_update = False

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("errors", default=[], dist_reduce_fx="cat")
        self.add_state("indices", default=[], dist_reduce_fx="cat")

    def update(self, samples: Tensor, reference: Tensor, indices: Sequence[int] | Tensor) -> None:
        indices = torch.as_tensor(list(indices) if not isinstance(indices, Tensor) else indices, dtype=torch.long)
        errors = relative_errors(samples, reference)
        if errors.shape[0] != indices.numel():
            raise ValueError(f"got {errors.shape[0]} samples with {indices.numel()} indices")
        self.errors.append(errors)
        self.indices.append(indices.to(errors.device))

    def compute(self) -> Tensor:
        errors, indices = dim_zero_cat(self.errors), dim_zero_cat(self.indices)
        return errors[torch.argsort(indices)].mean()
