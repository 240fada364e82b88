"""The LightningModules: training of a score model (ScoreDiffusion) and of a masked diffusion LM
(MaskedDiffusion), with EMA weights and the optimizer; nothing about sampling or evaluation."""

from .masked import MaskedDiffusion
from .score import ScoreDiffusion, build_network

__all__ = ["MaskedDiffusion", "ScoreDiffusion", "build_network"]
