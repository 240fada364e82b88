"""The masked-sampler interface and the counting wrapper around a time-free masked model.

A masked model is a callable `model(tokens [B, L]) -> logits [B, L, V]` over the V real tokens,
with the mask token id = V and NO time input (Zheng et al. 2024, Sec. 3). Samplers see it only
through `MaskedDenoiser`, which turns logits into float64 probabilities, refuses logits that
cannot be sampled from, and counts network calls and evaluated sequences honestly.

`MaskedSampler` is the masked family of `framework.samplers.base.SamplerBase`: the same option
machinery as the continuous samplers, one `sample` signature, and each class's own NFE rule
(`nfe_option`, `with_nfe`): what a budget of `nfe` network evaluations per sample means for it.
Samplers are stateless between calls.
"""

from __future__ import annotations

from numbers import Integral
from typing import Any, Callable, Optional

import torch

from ...diffusion.denoiser import Denoiser
from ...diffusion.masking import LinearMasking, MaskingSchedule
from ..base import Option, SamplerBase, positive_nfe
from ..noise import check_generators
from .categorical import PRECISIONS

PRECISION_OPTION = Option("float64", choices=tuple(PRECISIONS), doc="dtype of every categorical (Gumbel-max) draw")


def check_mask_id(mask_id: Any) -> int:
    """The mask token id as an int: an integer (not a bool) >= 1; the real tokens are 0..mask_id - 1 (V = mask_id)."""
    if isinstance(mask_id, bool) or not isinstance(mask_id, Integral) or int(mask_id) < 1:
        raise ValueError(f"mask_id must be an integer >= 1 (the vocabulary size V; real tokens are 0..V-1), "
                         f"got {mask_id!r} ({type(mask_id).__name__})")
    return int(mask_id)


def check_tokens(x_T: Any, mask_id: int) -> None:
    """x_T: a long tensor [B >= 1, L >= 1] of real tokens in [0, V) or the mask id V = mask_id."""
    if not isinstance(x_T, torch.Tensor) or x_T.dtype != torch.long or x_T.dim() != 2 or 0 in x_T.shape:
        what = f"{x_T.dtype} {tuple(x_T.shape)}" if isinstance(x_T, torch.Tensor) else type(x_T).__name__
        raise ValueError(f"x_T must be a long tensor [batch, length] with batch, length >= 1, got {what}")
    bad = (x_T < 0) | (x_T > mask_id)
    if bad.any():
        b, l = (int(i) for i in bad.nonzero()[0])
        raise ValueError(f"x_T has {int(bad.sum())} token(s) outside [0, V) = [0, {mask_id}) that are not the mask id "
                         f"{mask_id} (first: {int(x_T[b, l])} at row {b}, position {l})")


def masking_schedule(schedule: Any) -> MaskingSchedule:
    """`schedule` if it is a MaskingSchedule; None means the linear one; anything else is refused."""
    if schedule is None:
        return LinearMasking()
    if not isinstance(schedule, MaskingSchedule):
        raise ValueError(f"schedule must be a masking schedule (framework.diffusion.masking.MaskingSchedule, "
                         f"e.g. build_masking_schedule('linear')) or None for linear; got {type(schedule).__name__}, "
                         f"which a masked sampler cannot use")
    return schedule


def check_length(length: Any) -> Optional[int]:
    if length is not None and (isinstance(length, bool) or not isinstance(length, Integral) or int(length) < 1):
        raise ValueError(f"length (the sequence length) must be a positive integer or None, got {length!r}")
    return None if length is None else int(length)


class MaskedDenoiser:
    """Wraps model(tokens) -> logits; `calls` counts network calls, `rows` the sequences evaluated."""

    def __init__(self, model: Callable[[torch.Tensor], torch.Tensor], mask_id: int):
        if isinstance(model, MaskedDenoiser):
            raise ValueError("model is already a MaskedDenoiser; use it as it is")
        if not callable(model):
            raise ValueError(f"a masked model must be a callable tokens [B, L] -> logits [B, L, V], got {type(model).__name__}")
        self.model, self.mask_id = model, check_mask_id(mask_id)
        self.calls, self.rows = 0, 0

    @torch.no_grad()
    def probs(self, x: torch.Tensor) -> torch.Tensor:
        """p_theta(x0^l = v | x) for every position, float64 [B, L, V].

        Refuses logits of another shape and, at masked positions, rows no token can be drawn from
        (a NaN or +inf entry, or every entry -inf); unmasked positions are not checked.
        """
        logits = self.model(x)
        self.calls += 1
        self.rows += x.shape[0]
        v = self.mask_id
        if not isinstance(logits, torch.Tensor) or logits.dim() != 3 or tuple(logits.shape) != (*x.shape, v):
            got = f"{logits.dim()} dims {tuple(logits.shape)}" if isinstance(logits, torch.Tensor) else type(logits).__name__
            raise ValueError(
                f"a masked model must return logits [B, L, V] (3 dims) with V = mask_id = {v}; got {got} for input {tuple(x.shape)}"
            )
        probs = torch.softmax(logits.to(torch.float64), dim=-1)
        # softmax in float64 subtracts the row maximum, so it is NaN exactly for rows with NaN, +inf or only -inf
        bad = (x == v) & ~torch.isfinite(probs).all(-1)
        if bad.any():
            b, l = (int(i) for i in bad.nonzero()[0])
            raise ValueError(
                f"the masked model returned non-finite logits (NaN, +inf, or a row of all -inf) at {int(bad.sum())} "
                f"masked position(s) in {int(bad.any(-1).sum())} of {x.shape[0]} row(s) (first: row {b}, position {l}); "
                f"no token can be drawn there"
            )
        return probs


def as_masked_denoiser(model, mask_id: Optional[int] = None) -> MaskedDenoiser:
    """`model` if it is a MaskedDenoiser (whose mask_id must equal `mask_id` if given), else one around it."""
    if isinstance(model, MaskedDenoiser):
        if mask_id is not None and check_mask_id(mask_id) != model.mask_id:
            raise ValueError(f"mask_id={mask_id} differs from the denoiser's mask_id {model.mask_id}")
        return model
    if isinstance(model, Denoiser):
        raise ValueError("model is a continuous Denoiser; a masked sampler needs a MaskedDenoiser or a callable "
                         "tokens -> logits")
    if mask_id is None:
        raise ValueError("mask_id is required unless the model is a MaskedDenoiser (which carries its own)")
    return MaskedDenoiser(model, mask_id)


class MaskedSampler(SamplerBase):
    """The masked family: subclasses set `OPTIONS`, their NFE rule and `solve`; `sample` validates and counts.

    NFE of a masked sampler = network evaluations per sample (sequence evaluations / samples), a
    budget it never exceeds: each class maps it onto its own option (`nfe_option`, `with_nfe`).
    """

    name: str = "masked"
    family: str = "masked"
    COMMON_OPTIONS = {"precision": PRECISION_OPTION}
    #: the option an NFE budget sets ("steps", "k"), or None when the cost is fixed by the length (fhs)
    nfe_option: Optional[str] = None
    #: the NFE rule in words, for error messages
    nfe_rule: str = ""
    #: whether the NFE rule depends on the sequence length L
    nfe_needs_length: bool = True
    #: whether `sample` accepts an explicit `timesteps` grid
    takes_timesteps: bool = False

    @classmethod
    def option_spec(cls) -> dict[str, Option]:
        """The class's own options first, then the family's (precision)."""
        return {**cls.OPTIONS, **{k: o for k, o in cls.COMMON_OPTIONS.items() if k not in cls.OPTIONS}}

    # --- NFE ------------------------------------------------------------------
    def options_for_nfe(self, nfe: int, length: Optional[int]) -> dict:
        """The options that spend at most `nfe` evaluations per sample on sequences of `length`
        (ValueError where impossible, naming what is allowed)."""
        raise NotImplementedError

    def needs_length(self, length: Optional[int]) -> int:
        if length is None:
            raise ValueError(f"sampler {self.name!r}: its NFE rule ({self.nfe_rule}) needs the sequence length L; "
                             f"got length=None")
        return length

    def with_nfe(self, nfe: int, length: Optional[int] = None) -> "MaskedSampler":
        """This sampler configured to spend `nfe` network evaluations per sample on sequences of `length`.

        An option the NFE sets that the user gave explicitly must agree with it (else ValueError naming both).
        The result has that option explicit, so asking it for another NFE is refused the same way.
        """
        nfe, length = positive_nfe(nfe), check_length(length)
        derived = self.options_for_nfe(nfe, length)
        for key, value in derived.items():
            if key in self.explicit and self.options[key] != value:
                raise ValueError(f"sampler {self.name!r}: nfe={nfe} sets {key}={value} ({self.nfe_rule}"
                                 f"{f', L = {length}' if self.nfe_needs_length else ''}), but {key}={self.options[key]!r} "
                                 f"was given explicitly; give only one of them, or make them agree")
        if all(k in self.explicit for k in derived):
            return self
        return type(self)(**{k: self.options[k] for k in self.explicit}, **derived)

    def check_nfe(self, nfe: Any, length: Optional[int] = None) -> int:
        """`nfe` if `with_nfe(nfe, length)` accepts it (fhs, fhs_parallel need the length)."""
        self.with_nfe(nfe, length)
        return nfe

    # --- sampling -------------------------------------------------------------
    def sample(self, model, x_T: torch.Tensor, nfe: Optional[int] = None, schedule: Optional[MaskingSchedule] = None,
               generator=None, progress: bool = False, callback: Optional[Callable[[dict], None]] = None,
               timesteps=None, *, mask_id: Optional[int] = None) -> torch.Tensor:
        """Fill every mask token of x_T [B, L] (long; mask_id where to generate) and return the tokens.

        `model`: a MaskedDenoiser (read its `calls`/`rows` afterwards) or a callable tokens -> logits
        [B, L, V]; then `mask_id` (= V) is required. The other tokens of x_T (a prompt) must lie in [0, V).
        `nfe`: None (the options as they are) or a budget of network evaluations per sample (`with_nfe`).
        `schedule`: a MaskingSchedule, None for linear. The T-step sampler's tokens depend on it (its
        per-step reveal probability is (alpha_s - alpha_t) / (1 - alpha_t)); FHS's tokens do not, only
        the event times reported to `callback` do.
        `generator`: None, one torch.Generator, or a list of exactly B (then sample i depends on generator i alone).
        `timesteps`: an explicit grid, for samplers with `takes_timesteps` (mdlm_tstep) only.
        `progress`: show a progress bar. `callback`: called after every step with a dict (see each sampler).
        """
        denoiser = as_masked_denoiser(model, mask_id)
        check_tokens(x_T, denoiser.mask_id)
        schedule = masking_schedule(schedule)
        check_generators(generator, x_T.shape[0])
        if not isinstance(progress, bool):
            raise ValueError(f"progress must be True or False, got {progress!r}")
        if callback is not None and not callable(callback):
            raise ValueError(f"callback must be callable or None, got {type(callback).__name__}")
        if timesteps is not None and not self.takes_timesteps:
            raise ValueError(f"sampler {self.name!r} takes no timesteps (its times are drawn, not set on a grid)")
        sampler = self if nfe is None else self.with_nfe(nfe, x_T.shape[1])
        return sampler.solve(denoiser, x_T.clone(), schedule, generator=generator, callback=callback, progress=progress,
                             timesteps=timesteps)

    def solve(self, denoiser: MaskedDenoiser, x: torch.Tensor, schedule: MaskingSchedule, generator=None, callback=None,
              progress: bool = False, timesteps=None) -> torch.Tensor:
        raise NotImplementedError


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def split_generators(generator, rows: torch.Tensor):
    """The generator(s) for a subset of batch rows: a list is indexed, a single generator is shared."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    return [generator[int(i)] for i in rows]

