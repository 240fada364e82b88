"""The math of diffusion only: noise and masking schedules, the denoiser wrapper, the training losses.

No Lightning, no samplers, no networks: every other layer builds on this one.
"""

from .denoiser import PREDICTIONS, Denoiser, as_denoiser, convert
from .schedules import (
    SCHEDULE_KINDS,
    CosineVPSchedule,
    DiscreteVPSchedule,
    LinearVPSchedule,
    VPSchedule,
    build_schedule,
    schedule_from_config,
)

__all__ = [
    "PREDICTIONS", "Denoiser", "as_denoiser", "convert", "SCHEDULE_KINDS", "CosineVPSchedule",
    "DiscreteVPSchedule", "LinearVPSchedule", "VPSchedule", "build_schedule", "schedule_from_config",
]
