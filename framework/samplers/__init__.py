"""Samplers: plain PyTorch functions of a denoiser, built by name.

Two families share one option machinery (base.SamplerBase): "continuous" (Sampler: ODE/SDE solvers
for VP-schedule denoisers) and "masked" (masked.MaskedSampler: token samplers for masked diffusion
LMs); `build_sampler(name, family=...)` refuses the other family.
Importing this package does not import Lightning or any network class.
"""

from . import ddim  # noqa: F401  (registers ddpm, ddim)
from . import deis, pndm  # noqa: F401  (registers deis, ipndm, pndm)
from . import dpm_solver, unipc, usf  # noqa: F401  (registers dpmsolver++, unipc, usf)
from . import dc_solver  # noqa: F401  (registers dc_solver: UniPC with dynamic compensation)
from . import fkc  # noqa: F401  (registers fkc: Feynman-Kac correctors with SMC resampling)
from . import masked  # noqa: F401  (registers mdlm_tstep, fhs, fhs_parallel: token samplers)
from . import time_shift  # noqa: F401  (registers ts_ddpm, ts_ddim, ts_pndm, ts_fpndm, ts_dpmsolver, ts_deis)
from .base import FAMILIES, Option, Sampler, SamplerBase
from .grids import GRID_KINDS, make_grid, validate_grid
from .masked import MaskedDenoiser, MaskedSampler
from .noise import randn, randn_like, sample_generators
from .registry import available_samplers, build_from_config, build_sampler, register, sampler_class

__all__ = [
    "FAMILIES", "Option", "Sampler", "SamplerBase", "MaskedDenoiser", "MaskedSampler",
    "GRID_KINDS", "make_grid", "validate_grid", "randn", "randn_like", "sample_generators",
    "available_samplers", "build_from_config", "build_sampler", "register", "sampler_class",
]
