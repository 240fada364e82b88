"""Samplers: plain PyTorch functions of a denoiser, built by name.

Importing this package does not import Lightning or any network class.
"""

from . import ddim  # noqa: F401  (registers ddpm, ddim)
from . import deis, pndm  # noqa: F401  (registers deis, ipndm, pndm)
from . import dpm_solver, unipc  # noqa: F401  (registers dpmsolver++, unipc)
from . import masked  # noqa: F401  (registers mdlm_tstep, fhs, fhs_parallel: token samplers)
from .base import Option, Sampler
from .grids import GRID_KINDS, make_grid, validate_grid
from .noise import randn, randn_like, sample_generators
from .registry import available_samplers, build_from_config, build_sampler, register, sampler_class

__all__ = [
    "Option", "Sampler", "GRID_KINDS", "make_grid", "validate_grid", "randn", "randn_like", "sample_generators",
    "available_samplers", "build_from_config", "build_sampler", "register", "sampler_class",
]
