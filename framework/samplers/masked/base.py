"""The masked-sampler interface and the counting wrapper around a time-free masked model.

A masked model is a callable `model(tokens [B, L]) -> logits [B, L, V]` over the V real tokens,
with the mask token id = V and NO time input (Zheng et al. 2024, Sec. 3). Samplers see it only
through `MaskedDenoiser`, which turns logits into float64 probabilities and counts network calls
and evaluated sequences honestly. Samplers are stateless between calls; `data_kind = "masked"`
keeps them out of the continuous-sampler conformance test.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

import torch

from ..base import Option
from .categorical import PRECISIONS

PRECISION_OPTION = Option("float64", choices=tuple(PRECISIONS), doc="dtype of every categorical (Gumbel-max) draw")


class MaskedDenoiser:
    """Wraps model(tokens) -> logits; `calls` counts network calls, `rows` the sequences evaluated."""

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], mask_id: int):
        self.model, self.mask_id = model, int(mask_id)
        self.calls, self.rows = 0, 0

    @torch.no_grad()
    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """p_theta(x0^l = v | x) for every position, float64 [B, L, V]."""
        logits = self.model(x)
        self.calls += 1
        self.rows += x.shape[0]
        if logits.shape[:2] != x.shape or logits.shape[-1] != self.mask_id:
            raise ValueError(
                f"a masked model must return logits [B, L, V] with V = mask_id = {self.mask_id}; got {tuple(logits.shape)} for input {tuple(x.shape)}"
            )
        return torch.softmax(logits.to(torch.float64), dim=-1)


def as_masked_denoiser(model, mask_id: int) -> MaskedDenoiser:
    if isinstance(model, MaskedDenoiser):
        if model.mask_id != int(mask_id):
            raise ValueError(f"denoiser mask_id {model.mask_id} differs from mask_id {mask_id}")
        return model
    return MaskedDenoiser(model, mask_id)


class MaskedSampler:
    """Base class: subclasses set `OPTIONS` and implement `solve`; `sample` validates and counts."""

    name: str = "masked"
    data_kind: str = "masked"
    OPTIONS: dict[str, Option] = {"precision": PRECISION_OPTION}

    def __init__(self, **options: Any):
        unknown = sorted(set(options) - set(self.OPTIONS))
        if unknown:
            raise ValueError(f"sampler {self.name!r}: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(self.OPTIONS))}")
        values = {k: o.default for k, o in self.OPTIONS.items()}
        values.update(options)
        self.options = {k: self.OPTIONS[k].validate(self.name, k, v) for k, v in values.items()}

    def to_config(self) -> dict:
        return {"name": self.name, **self.options}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.options.items())})"

    def sample(self, model, x_T: torch.Tensor, mask_id: int, schedule=None, generator=None,
               callback: Optional[Callable[[dict], None]] = None, **kwargs) -> torch.Tensor:
        """Fill every mask token of x_T [B, L] (long; mask_id where to generate) and return the tokens.

        `model`: a MaskedDenoiser (read its `calls`/`rows` afterwards) or a callable tokens -> logits.
        `schedule`: a MaskingSchedule (only the reported times depend on it, the tokens do not).
        `generator`: one torch.Generator or a list with one per sample (then sample i depends on it alone).
        """
        if x_T.dtype != torch.long or x_T.dim() != 2:
            raise ValueError(f"x_T must be a long tensor [batch, length], got {x_T.dtype} {tuple(x_T.shape)}")
        if schedule is None:
            from ...diffusion.masking import LinearMasking

            schedule = LinearMasking()
        denoiser = as_masked_denoiser(model, mask_id)
        return self.solve(denoiser, x_T.clone(), schedule, generator=generator, callback=callback, **kwargs)

    def solve(self, denoiser: MaskedDenoiser, x: torch.Tensor, schedule, generator=None, callback=None, **kwargs):
        raise NotImplementedError


def split_generators(generator, rows: torch.Tensor):
    """The generator(s) for a subset of batch rows: a list is indexed, a single generator is shared."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    return [generator[int(i)] for i in rows]
