"""Masked-diffusion samplers (Zheng et al. 2024; MDLM): registered as 'mdlm_tstep', 'fhs', 'fhs_parallel'.

They take a time-free model tokens -> logits and fill the mask tokens of x_T; see base.MaskedSampler.sample.
Importing this package does not import Lightning or any network class.
"""

from . import first_hitting, tstep  # noqa: F401  (registers the samplers)
from .base import MaskedDenoiser, MaskedSampler, as_masked_denoiser
from .categorical import PRECISIONS, sample_categorical, sample_without_replacement
from .first_hitting import FirstHittingSampler, ParallelFirstHittingSampler, first_hitting_solve
from .tstep import TStepSampler, tstep_solve, uniform_time_grid

__all__ = [
    "MaskedDenoiser", "MaskedSampler", "as_masked_denoiser", "PRECISIONS", "sample_categorical",
    "sample_without_replacement", "FirstHittingSampler", "ParallelFirstHittingSampler", "first_hitting_solve",
    "TStepSampler", "tstep_solve", "uniform_time_grid",
]
