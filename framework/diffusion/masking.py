"""Masking schedules alpha(t) of absorbing-state (masked) diffusion, t in [0, 1].

alpha(t) is the probability that a token is still unmasked at time t, decreasing from
alpha(0) = 1 to alpha(1) = 0 (MDLM, Sahoo et al. 2024, Sec. 3; Zheng et al. 2024, Sec. 2).
A schedule gives alpha, its derivative (the ELBO weight -alpha'/(1 - alpha)) and the inverse
t(alpha) that the first-hitting sampler needs. All arithmetic in float64.
"""

from __future__ import annotations

import math
from typing import Union

import torch

TimeLike = Union[float, torch.Tensor]

MASKING_SCHEDULE_KINDS = ("linear", "cosine", "polynomial")


def _f64(t: TimeLike) -> torch.Tensor:
    return t.to(torch.float64) if isinstance(t, torch.Tensor) else torch.tensor(float(t), dtype=torch.float64)


class MaskingSchedule:
    """Base class: subclasses define alpha(t), dalpha(t) and t_from_alpha(a), all on float64 tensors."""

    kind = "base"

    def alpha(self, t: TimeLike) -> torch.Tensor:
        raise NotImplementedError

    def dalpha(self, t: TimeLike) -> torch.Tensor:
        raise NotImplementedError

    def t_from_alpha(self, a: TimeLike) -> torch.Tensor:
        raise NotImplementedError

    def weight(self, t: TimeLike) -> torch.Tensor:
        """The ELBO weight -alpha'(t) / (1 - alpha(t)) (Zheng et al. Eq. 4; MDLM Eq. 10)."""
        return -self.dalpha(t) / (1.0 - self.alpha(t))

    def to_config(self) -> dict:
        return {"kind": self.kind}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.to_config()})"


class LinearMasking(MaskingSchedule):
    """alpha(t) = 1 - t: weight 1/t."""

    kind = "linear"

    def alpha(self, t):
        return 1.0 - _f64(t)

    def dalpha(self, t):
        return -torch.ones_like(_f64(t))

    def t_from_alpha(self, a):
        return 1.0 - _f64(a)


class CosineMasking(MaskingSchedule):
    """alpha(t) = 1 - cos(pi/2 (1 - t)) = 1 - sin(pi t / 2) (the MD4 cosine schedule)."""

    kind = "cosine"

    def alpha(self, t):
        return 1.0 - torch.sin(0.5 * math.pi * _f64(t))

    def dalpha(self, t):
        return -0.5 * math.pi * torch.cos(0.5 * math.pi * _f64(t))

    def t_from_alpha(self, a):
        return torch.asin((1.0 - _f64(a)).clamp(0.0, 1.0)) * (2.0 / math.pi)


class PolynomialMasking(MaskingSchedule):
    """alpha(t) = 1 - t^power."""

    kind = "polynomial"

    def __init__(self, power: float = 2.0):
        if not float(power) > 0:
            raise ValueError(f"masking schedule 'polynomial': power must be > 0, got {power!r}")
        self.power = float(power)

    def alpha(self, t):
        return 1.0 - _f64(t) ** self.power

    def dalpha(self, t):
        return -self.power * _f64(t) ** (self.power - 1.0)

    def t_from_alpha(self, a):
        return (1.0 - _f64(a)).clamp_min(0.0) ** (1.0 / self.power)

    def to_config(self) -> dict:
        return {"kind": self.kind, "power": self.power}


def build_masking_schedule(kind: str = "linear", **options) -> MaskingSchedule:
    """A masking schedule by name; unknown names or options raise ValueError naming the allowed ones."""
    classes = {"linear": LinearMasking, "cosine": CosineMasking, "polynomial": PolynomialMasking}
    if kind not in classes:
        raise ValueError(f"masking schedule kind {kind!r} is not allowed; allowed: {', '.join(MASKING_SCHEDULE_KINDS)}")
    allowed = {"polynomial": ("power",)}.get(kind, ())
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ValueError(f"masking schedule {kind!r}: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(allowed) or '(none)'}")
    return classes[kind](**options)
