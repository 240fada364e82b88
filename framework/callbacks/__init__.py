"""Lightning callbacks only: the sampler evaluation during training, and the epoch-seeded data order."""

from .data_order import EpochSeededShuffle
from .sampler_evaluation import SamplerEvaluation

__all__ = ["EpochSeededShuffle", "SamplerEvaluation"]
