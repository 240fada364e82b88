"""The denoiser interface every sampler sees: a network wrapped into eps / x0 / v predictions.

A network is any callable `model(x, t)` (or `model(x, t, labels)` when class
conditional) returning the prediction it was trained for. `Denoiser` converts that
prediction into whichever parameterisation a sampler's paper uses, applies
classifier-free guidance, and counts network evaluations honestly.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from .schedules import VPSchedule

PREDICTIONS = ("eps", "x0", "v")


def _expand(value: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return value.reshape(-1, *([1] * (x.ndim - 1)))


class Denoiser:
    """Wrap `model` (trained to predict `prediction`) on `schedule`.

    Classifier-free guidance (Ho & Salimans 2022, eq. 6): with `labels` given and
    `guidance_scale` w != 1, the returned noise is eps_u + w (eps_c - eps_u), where
    eps_u uses `uncond_label`. With `batch_guidance` the two passes share one network
    call of twice the batch, counted as one NFE; otherwise they count as two.
    """

    def __init__(
        self,
        model: Callable,
        schedule: VPSchedule,
        prediction: str = "eps",
        labels: Optional[torch.Tensor] = None,
        guidance_scale: float = 1.0,
        uncond_label: Optional[int] = None,
        batch_guidance: bool = True,
    ):
        if prediction not in PREDICTIONS:
            raise ValueError(f"prediction {prediction!r} is not one of {', '.join(PREDICTIONS)}")
        if guidance_scale != 1.0 and (labels is None or uncond_label is None):
            raise ValueError("guidance_scale != 1 needs labels and uncond_label")
        self.model, self.schedule, self.prediction = model, schedule, prediction
        self.labels, self.guidance_scale, self.uncond_label = labels, float(guidance_scale), uncond_label
        self.batch_guidance = batch_guidance
        self.nfe = 0

    # --- network -------------------------------------------------------------
    def _call(self, x: torch.Tensor, t: torch.Tensor, labels: Optional[torch.Tensor]) -> torch.Tensor:
        self.nfe += 1
        return self.model(x, t) if labels is None else self.model(x, t, labels)

    def raw(self, x: torch.Tensor, t) -> torch.Tensor:
        """The network's own prediction (guided when guidance is on), t a scalar or [batch]."""
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0]).contiguous()
        labels = self.labels
        if self.guidance_scale == 1.0 or labels is None:
            return self._call(x, t, labels)
        cond, free = self._pair(x, t, labels)
        return free + self.guidance_scale * (cond - free)

    def _pair(self, x: torch.Tensor, t: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(conditional, unconditional) raw predictions: one call of twice the batch (1 NFE) or two calls (2 NFE)."""
        uncond = torch.full_like(labels, self.uncond_label)
        if self.batch_guidance:
            cond, free = self._call(torch.cat([x, x]), torch.cat([t, t]), torch.cat([labels, uncond])).chunk(2)
            return cond, free
        return self._call(x, t, labels), self._call(x, t, uncond)

    def guidance_pair(self, x: torch.Tensor, t, kind: str = "eps") -> tuple[torch.Tensor, torch.Tensor]:
        """The conditional and the unconditional prediction, each as `kind`, counted like guided `raw`
        (FKC's geometric-average target needs both, not only their guided combination)."""
        if kind not in PREDICTIONS:
            raise ValueError(f"prediction kind {kind!r} is not one of {', '.join(PREDICTIONS)}")
        if self.labels is None or self.uncond_label is None:
            raise ValueError("the conditional and unconditional predictions need a Denoiser built with labels and uncond_label")
        t = torch.as_tensor(t, dtype=x.dtype, device=x.device).expand(x.shape[0]).contiguous()
        pair = self._pair(x, t, self.labels)
        if kind == self.prediction:
            return pair
        alpha, sigma = self.coefficients(x, t)
        return tuple(convert(p, x, alpha, sigma, self.prediction, kind) for p in pair)

    # --- parameterisations ----------------------------------------------------
    def coefficients(self, x: torch.Tensor, t) -> tuple[torch.Tensor, torch.Tensor]:
        t = torch.as_tensor(t, dtype=torch.float64, device=x.device).expand(x.shape[0])
        alpha = _expand(self.schedule.alpha(t), x).to(x.dtype)
        sigma = _expand(self.schedule.sigma(t), x).to(x.dtype)
        return alpha, sigma

    def predict(self, x: torch.Tensor, t, kind: str) -> torch.Tensor:
        """One network evaluation, returned as `kind` in ('eps', 'x0', 'v')."""
        if kind not in PREDICTIONS:
            raise ValueError(f"prediction kind {kind!r} is not one of {', '.join(PREDICTIONS)}")
        out = self.raw(x, t)
        if kind == self.prediction:
            return out
        alpha, sigma = self.coefficients(x, t)
        return convert(out, x, alpha, sigma, self.prediction, kind)

    def node(self, x: torch.Tensor, t, kind: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The evaluation at a grid node: (the state the solver continues from, the prediction as `kind`).

        Plain denoisers return x unchanged; a time policy (diffusion.time_shift) may evaluate the network at
        a shifted time and move the state with it. Solvers call this at their grid points, `predict` elsewhere.
        """
        return x, self.predict(x, t, kind)

    def eps(self, x: torch.Tensor, t) -> torch.Tensor:
        return self.predict(x, t, "eps")

    def x0(self, x: torch.Tensor, t) -> torch.Tensor:
        return self.predict(x, t, "x0")

    def v(self, x: torch.Tensor, t) -> torch.Tensor:
        return self.predict(x, t, "v")


def convert(pred: torch.Tensor, x: torch.Tensor, alpha, sigma, source: str, target: str) -> torch.Tensor:
    """Convert a prediction between eps, x0 and v, using x = alpha x0 + sigma eps, v = alpha eps - sigma x0."""
    if source == target:
        return pred
    if source == "eps":
        eps = pred
        x0 = (x - sigma * eps) / alpha
    elif source == "x0":
        x0 = pred
        eps = (x - alpha * x0) / sigma
    elif source == "v":
        x0 = alpha * x - sigma * pred
        eps = sigma * x + alpha * pred
    else:
        raise ValueError(f"prediction kind {source!r} is not one of {', '.join(PREDICTIONS)}")
    if target == "eps":
        return eps
    if target == "x0":
        return x0
    if target == "v":
        return alpha * eps - sigma * x0
    raise ValueError(f"prediction kind {target!r} is not one of {', '.join(PREDICTIONS)}")


def as_denoiser(model, schedule: VPSchedule) -> Denoiser:
    """A Denoiser as is, or a bare callable read as a noise-prediction model."""
    if isinstance(model, Denoiser):
        if model.schedule is not schedule:
            raise ValueError("the Denoiser was built on a different schedule than the one passed to sample()")
        return model
    if not callable(model):
        raise TypeError(f"model must be a Denoiser or a callable model(x, t), got {type(model).__name__}")
    return Denoiser(model, schedule)
