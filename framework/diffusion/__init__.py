"""Noise schedules, the denoiser wrapper, and (in their own modules) the Lightning modules.

Importing this package does not import Lightning: the modules `score_module` and
`masked_module` do, and are imported only by whoever trains.
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
