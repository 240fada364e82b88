"""The Time-Shift Sampler's registered variants (Li et al., ICLR 2024): existing samplers with time_shift on.

The shift itself is one time policy between the solver and the network
(framework.diffusion.time_shift), so every continuous sampler takes it through the option
`time_shift=True`; these names only fix the defaults of the paper's variants:

| name | base sampler and its options | window, cutoff (DDPM steps) |
|---|---|---|
| ts_ddpm | ddpm | 30, 300 |
| ts_ddim | ddim | 30, 300 |
| ts_pndm | pndm, method S-PNDM | 30, 300 |
| ts_fpndm | pndm, method F-PNDM | 30, 300 |
| ts_dpmsolver | dpmsolver++ with algorithm_type 'dpmsolver', order 2, multistep, time-uniform grid (the official TS run) | 30, 300 |
| ts_deis | deis, tAB, ab_order 2 (the official TS run) | 30, 300 |

Window 30 and cutoff 300 are the official README's DPM-Solver example (5 steps on CIFAR-10) and the cutoff of
its ADM code. Its DEIS example (half-width 10, cutoff 900) is not taken: on DEIS's quadratic time grid no node
but x_T's lies above DDPM step 900 at 5 or more steps, and x_T, exact noise by construction, is never shifted
here, so it would be plain DEIS. The paper tunes both per sampler and NFE; benchmarks/time_shift.py sweeps
them on the digits model.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from .ddim import DDIM, DDPM
from .deis import DEIS
from .dpm_solver import DPMSolverPP
from .pndm import PNDM
from .registry import register

GENERAL = {"ts_window": 30, "ts_cutoff": 300}


def _time_shifted(base: type, name: str, doc: str, **defaults: Any) -> type:
    """A subclass of `base` registered as `name`, with time_shift=True and the given option defaults."""
    spec = base.option_spec()
    unknown = sorted(set(defaults) - set(spec))
    if unknown:
        raise ValueError(f"{name}: {', '.join(unknown)} are not options of {base.__name__}")
    changed = {k: dataclasses.replace(spec[k], default=v) for k, v in {"time_shift": True, **defaults}.items()}
    cls = type(f"TimeShift{base.__name__}_{name}", (base,), {"OPTIONS": {**base.OPTIONS, **changed}, "__doc__": doc})
    return register(name)(cls)


TS_DDPM = _time_shifted(DDPM, "ts_ddpm", "TS-DDPM: DDPM ancestral sampling with shifted time steps.", **GENERAL)
TS_DDIM = _time_shifted(DDIM, "ts_ddim", "TS-DDIM: DDIM with shifted time steps.", **GENERAL)
TS_PNDM = _time_shifted(PNDM, "ts_pndm", "TS-PNDM: S-PNDM with shifted time steps.", method="S-PNDM", **GENERAL)
TS_FPNDM = _time_shifted(PNDM, "ts_fpndm", "TS-F-PNDM: F-PNDM with shifted time steps.", method="F-PNDM", **GENERAL)
TS_DPMSOLVER = _time_shifted(
    DPMSolverPP, "ts_dpmsolver", "TS-DPM-Solver: multistep DPM-Solver-2 (noise prediction) with shifted time steps.",
    algorithm_type="dpmsolver", order=2, method="multistep", grid="time_uniform", **GENERAL,
)
TS_DEIS = _time_shifted(DEIS, "ts_deis", "TS-DEIS: tAB-DEIS (r = 2) with shifted time steps.", ab_order=2, **GENERAL)
