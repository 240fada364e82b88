"""The sampler interface: validated, serialisable options around a stateless solver loop.

Two families share one option machinery (`SamplerBase`): continuous samplers (`Sampler`,
family "continuous") integrate x_T ~ N(0, I) with a `VPSchedule` denoiser; masked samplers
(`framework.samplers.masked.MaskedSampler`, family "masked") fill the mask tokens of a token
sequence with a time-free masked model. Both say which NFE budgets they can spend
(`check_nfe`, `allows_nfe`), so experiment code never encodes a sampler's NFE rule.

A continuous subclass declares its options (`OPTIONS`), how many steps an NFE budget
buys (`steps_for_nfe`), and the loop itself (`solve`), a pure function of the
denoiser, the starting noise, one explicit time grid, a generator and a per-step
callback. The object keeps no state between calls (diffusers#8711).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from ..diffusion.denoiser import Denoiser, as_denoiser
from ..diffusion.schedules import VPSchedule
from ..diffusion.time_shift import APPLY as TS_APPLY
from ..diffusion.time_shift import REFERENCES as TS_REFERENCES
from ..diffusion.time_shift import TimeShift, TimeShiftedDenoiser
from .grids import GRID_KINDS, make_grid, validate_grid
from .noise import check_generators

#: the sampler families: what data a sampler generates, and so which `sample` signature it serves
FAMILIES = ("continuous", "masked")


@dataclass(frozen=True)
class Option:
    """One sampler setting: its default, and either the allowed values or a check with its description."""

    default: Any
    choices: Optional[tuple] = None
    check: Optional[Callable[[Any], bool]] = None
    allowed: str = ""
    doc: str = ""

    def validate(self, sampler: str, name: str, value: Any) -> Any:
        # compare types too: 1 == True and 2.0 == 2 must not slip through as a bool or an int
        if self.choices is not None and not any(value == c and type(value) is type(c) for c in self.choices):
            raise ValueError(
                f"sampler {sampler!r}: option {name}={value!r} is not allowed; allowed: "
                + ", ".join(repr(c) for c in self.choices)
            )
        if self.check is not None:
            try:
                ok = bool(self.check(value))
            except (TypeError, ValueError):
                ok = False
            if not ok:
                raise ValueError(f"sampler {sampler!r}: option {name}={value!r} is not allowed; allowed: {self.allowed}")
        return value


def positive_int(allowed_max: Optional[int] = None) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1 and (allowed_max is None or v <= allowed_max)


BOOL = (True, False)

BASE_OPTIONS: dict[str, Option] = {
    "grid": Option("time_uniform", choices=GRID_KINDS, doc="time-step schedule of the grid"),
    "rho": Option(7.0, check=lambda v: float(v) > 0, allowed="a number > 0", doc="exponent of the 'karras' grid"),
    "final_denoise": Option(
        False, choices=BOOL, doc="after the last step, return the model's x0 prediction at t_min (one more NFE)"
    ),
    # the Time-Shift Sampler's policy (framework.diffusion.time_shift): off unless time_shift=True
    "time_shift": Option(False, choices=BOOL, doc="shift each sample's time to match its variance (Li et al. 2024)"),
    "ts_window": Option(30, check=lambda v: type(v) is int and v >= 0, allowed="an integer >= 0 (DDPM steps)",
                        doc="window width in DDPM steps: the time moves by at most ts_window // 2 steps"),
    "ts_cutoff": Option(300, check=lambda v: not isinstance(v, bool) and float(v) >= 0, allowed="a number >= 0 (DDPM step)",
                        doc="shift only while t is above this DDPM step"),
    "ts_reference": Option("noise", choices=TS_REFERENCES, doc="compare var(x) with sigma^2 ('noise', official) "
                           "or with alpha^2 ts_data_var + sigma^2 ('data', the paper's analysis)"),
    "ts_data_var": Option(0.0, check=lambda v: not isinstance(v, bool) and float(v) >= 0, allowed="a number >= 0",
                          doc="the data's per-sample variance, for ts_reference='data'"),
    "ts_apply": Option("update", choices=TS_APPLY, doc="shifted time for the network and the step ('update', the "
                       "paper's Algorithm 1) or for the network input only ('network')"),
}
TS_OPTIONS = ("ts_window", "ts_cutoff", "ts_reference", "ts_data_var", "ts_apply")


def positive_nfe(nfe: Any) -> int:
    """`nfe` if it is a positive int (not a bool), else a ValueError naming it."""
    if isinstance(nfe, bool) or not isinstance(nfe, int) or nfe < 1:
        raise ValueError(f"nfe must be a positive integer, got {nfe!r}")
    return nfe


class SamplerBase:
    """Options shared by both families: validation, `options`, `explicit`, config and repr.

    Subclasses set `family` and `OPTIONS` (their own options; `COMMON_OPTIONS` are the family's
    options every member has), and implement `check_nfe` and `sample`. `explicit` is the set of
    option names the user passed, so a rule that derives an option (a masked sampler's NFE) can tell
    a default from a choice.
    """

    name: str = "sampler"
    #: "continuous" or "masked" (see FAMILIES)
    family: str = ""
    OPTIONS: dict[str, Option] = {}
    COMMON_OPTIONS: dict[str, Option] = {}
    #: how many models `sample` takes (a tuple when > 1)
    experts: int = 1
    #: how many consecutive samples form one population that is sampled jointly (1: every sample alone)
    population: int = 1

    def __init__(self, **options: Any):
        spec = self.option_spec()
        unknown = sorted(set(options) - set(spec))
        if unknown:
            raise ValueError(
                f"sampler {self.name!r}: unknown option(s) {', '.join(unknown)}; allowed: {', '.join(sorted(spec))}"
            )
        values = {k: o.default for k, o in spec.items()}
        values.update(options)
        self.options = {k: spec[k].validate(self.name, k, v) for k, v in values.items()}
        self.explicit: frozenset[str] = frozenset(options)
        self.check_options()

    @classmethod
    def option_spec(cls) -> dict[str, Option]:
        return {**cls.COMMON_OPTIONS, **cls.OPTIONS}

    def check_options(self) -> None:
        """Cross-option checks; raise ValueError naming the options."""

    def to_config(self) -> dict:
        return {"name": self.name, **self.options}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.options.items())})"

    # --- NFE ------------------------------------------------------------------
    def check_nfe(self, nfe: Any, length: Optional[int] = None) -> int:
        """`nfe` if this sampler can spend it (per sample; `length`: the sequence length, masked samplers
        only), else a ValueError saying what it can spend."""
        raise NotImplementedError

    def allows_nfe(self, nfe: Any, length: Optional[int] = None) -> bool:
        """Whether `check_nfe(nfe, length)` accepts `nfe`."""
        try:
            self.check_nfe(nfe, length)
        except ValueError:
            return False
        return True

    def sample(self, model, x_T: torch.Tensor, nfe: Optional[int] = None, schedule=None, generator=None,
               progress: bool = False, callback: Optional[Callable[[dict], None]] = None,
               timesteps: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Generate from x_T; see Sampler.sample (continuous) and MaskedSampler.sample (masked, + keyword mask_id)."""
        raise NotImplementedError


class Sampler(SamplerBase):
    """Continuous samplers. Subclasses set `name`, `OPTIONS`, and implement `solve` (and `steps_for_nfe` if needed)."""

    name: str = "sampler"
    family: str = "continuous"
    COMMON_OPTIONS = BASE_OPTIONS
    #: network evaluations one step costs (multistep methods: 1)
    evals_per_step: int = 1
    #: whether the method draws noise along the way (then it does not solve the probability-flow ODE)
    stochastic: bool = False
    #: network evaluations the final x0 prediction costs (with final_denoise)
    final_evals: int = 1

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.time_policy = self._time_policy()

    def _time_policy(self) -> Optional[TimeShift]:
        """The validated time-shift policy, or None; ts_* options set away from their defaults need time_shift=True."""
        if not self.options["time_shift"]:
            spec = self.option_spec()
            stray = sorted(k for k in TS_OPTIONS if self.options[k] != spec[k].default)
            if stray:
                raise ValueError(f"sampler {self.name!r}: option(s) {', '.join(stray)} need time_shift=True; "
                                 f"allowed with time_shift=False: none of {', '.join(TS_OPTIONS)}")
            return None
        o = self.options
        return TimeShift(window=o["ts_window"], cutoff=o["ts_cutoff"], reference=o["ts_reference"],
                         data_var=float(o["ts_data_var"]), apply=o["ts_apply"])

    # --- NFE accounting --------------------------------------------------------
    def _final_nfe(self) -> int:
        return self.final_evals * int(self.options["final_denoise"])

    def min_nfe(self) -> int:
        return self.evals_per_step + self._final_nfe()

    def steps_for_nfe(self, nfe: int) -> int:
        """Number of grid intervals an NFE budget buys; raise ValueError when the method cannot use it exactly."""
        budget = nfe - self._final_nfe()
        if budget < self.evals_per_step or budget % self.evals_per_step:
            raise ValueError(
                f"sampler {self.name!r}: nfe={nfe} is not allowed; allowed: "
                f"{self.evals_per_step} x steps{f' + {self._final_nfe()} (final_denoise)' if self._final_nfe() else ''}, "
                f"at least {self.min_nfe()}"
            )
        return budget // self.evals_per_step

    def nfe_for_steps(self, steps: int) -> int:
        return steps * self.evals_per_step + self._final_nfe()

    def check_nfe(self, nfe: Any, length: Optional[int] = None) -> int:
        """`nfe` if the method can spend exactly that many evaluations (`length` is ignored)."""
        self.steps_for_nfe(positive_nfe(nfe))
        return nfe

    def timesteps(self, nfe: int, schedule: VPSchedule, device=None) -> torch.Tensor:
        """The time grid t_0 = t_max > ... > t_M = t_min (float64) that `nfe` evaluations buy."""
        steps = self.steps_for_nfe(self.check_nfe(nfe))
        return make_grid(self.options["grid"], steps, schedule, rho=float(self.options["rho"]), device=device)

    # --- sampling --------------------------------------------------------------
    def sample(
        self,
        model,
        x_T: torch.Tensor,
        nfe: Optional[int],
        schedule: VPSchedule,
        generator=None,
        progress: bool = False,
        callback: Optional[Callable[[dict], None]] = None,
        timesteps: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """Integrate from x_T at t_max to t_min with `nfe` network evaluations.

        `model`: a Denoiser, or a callable model(x, t) predicting noise (a sampler with `experts` = 2, FKC's
        product, takes a pair of them). `generator`: a
        torch.Generator, or a list with one per sample (stochastic samplers only).
        `timesteps`: an explicit decreasing grid (then `nfe` may be None; if given it must match).
        `callback`: called after every step with a dict(i, t, t_next, x, x0), plus t_shift (float64 [batch],
        the times of the step's latest network evaluation at a grid node) when time_shift is on.
        """
        check_continuous_inputs(x_T, schedule, generator)
        denoiser = self.as_denoiser(model, schedule)
        if timesteps is None:
            grid = self.timesteps(nfe, schedule, device=x_T.device)
        else:
            grid = validate_grid(timesteps, schedule, device=x_T.device)
            expected = self.nfe_for_steps(len(grid) - 1)
            if nfe is not None and self.check_nfe(nfe) != expected:
                raise ValueError(f"nfe={nfe} does not match the {len(grid) - 1}-step grid given, which costs {expected}")
        start = denoiser.nfe
        if self.time_policy is not None:
            denoiser, callback = _with_time_shift(denoiser, self.time_policy, callback)
        steps = _progress(len(grid) - 1, progress, self.name)
        x = self.solve(denoiser, x_T, grid, generator=generator, callback=callback, steps=steps)
        if self.options["final_denoise"]:
            x = self.final_x0(denoiser, x, grid[-1])
        used = denoiser.nfe - start
        if used != self.nfe_for_steps(len(grid) - 1):
            raise RuntimeError(f"sampler {self.name!r} used {used} evaluations, promised {self.nfe_for_steps(len(grid) - 1)}")
        return x

    def as_denoiser(self, model, schedule: VPSchedule) -> Denoiser:
        """What `solve` receives for `model` (a Denoiser, or a bare noise-prediction callable wrapped in one)."""
        return as_denoiser(model, schedule)

    def final_x0(self, denoiser: Denoiser, x: torch.Tensor, t) -> torch.Tensor:
        """The final_denoise output: the model's x0 prediction at the grid's last time."""
        return denoiser.x0(x, t)

    def solve(self, denoiser: Denoiser, x: torch.Tensor, grid: torch.Tensor, generator=None, callback=None, steps=None):
        raise NotImplementedError


def check_continuous_inputs(x_T: Any, schedule: Any, generator) -> None:
    """Refuse what a continuous sampler cannot integrate, naming the setting: x_T must be a floating-point
    tensor [batch, ...], the schedule a VPSchedule (a masking schedule belongs to the masked family), and a
    generator list must hold one generator per sample."""
    if not isinstance(x_T, torch.Tensor) or not x_T.is_floating_point() or x_T.dim() < 2:
        got = f"{x_T.dtype} {tuple(x_T.shape)}" if isinstance(x_T, torch.Tensor) else type(x_T).__name__
        raise ValueError(f"x_T must be a floating-point tensor [batch, ...] for a continuous sampler, got {got}")
    if not isinstance(schedule, VPSchedule):
        raise ValueError(f"schedule must be a VPSchedule (framework.diffusion.build_schedule) for a continuous sampler, "
                         f"got {type(schedule).__name__}")
    check_generators(generator, x_T.shape[0])


def _with_time_shift(denoiser: Denoiser, policy: TimeShift, callback):
    """The denoiser wrapped in the time policy, and the callback that also receives its shifted times."""
    shifted = TimeShiftedDenoiser(denoiser, policy)
    if callback is None:
        return shifted, None
    return shifted, lambda info: callback({**info, "t_shift": shifted.last_shift})


def report_step(callback: Optional[Callable[[dict], None]], i: int, t, t_next, x: torch.Tensor, x0: torch.Tensor) -> None:
    """Hand a continuous sampler's step to the user's callback as the documented dict(i, t, t_next, x, x0)."""
    if callback is not None:
        callback({"i": i, "t": t, "t_next": t_next, "x": x, "x0": x0})


def _progress(n: int, enabled: bool, name: str):
    if not enabled:
        return range(n)
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with lightning
        return range(n)
    return tqdm(range(n), desc=name, leave=False)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(total: int, enabled: bool, name: str):
    """A bar with update(n) / close(): tqdm when `enabled` (and installed), else one that does nothing."""
    if not enabled:
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm ships with lightning
        return _NoBar()
    return tqdm(total=total, desc=name, leave=False)
