"""Lightning callbacks only: the sampler evaluation during training, the epoch-seeded data order, and
DC-Solver's calibration after training."""

from .data_order import EpochSeededShuffle
from .dc_calibration import DCCalibration
from .sampler_evaluation import SamplerEvaluation

__all__ = ["DCCalibration", "EpochSeededShuffle", "SamplerEvaluation"]
