"""Samplers by name: `build_sampler("deis", order=3)`, `available_samplers()`.

`family` ("continuous" or "masked") restricts a look-up to one family: a sampler of the other one is
refused with an error that names both families and lists the allowed names, so an image experiment
never gets a token sampler and a text experiment never gets an ODE solver.
"""

from __future__ import annotations

from typing import Callable, Optional, Type

from .base import FAMILIES

_REGISTRY: dict[str, type] = {}


def register(name: str) -> Callable[[Type], Type]:
    """Class decorator adding a sampler class under `name`; its `family` must be one of FAMILIES."""

    def wrap(cls: Type) -> Type:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"sampler name {name!r} is registered twice")
        if getattr(cls, "family", None) not in FAMILIES:
            raise ValueError(f"sampler {name!r}: family {getattr(cls, 'family', None)!r} is not allowed; "
                             f"allowed: {', '.join(FAMILIES)}")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def _check_family(family: Optional[str]) -> None:
    if family is not None and family not in FAMILIES:
        raise ValueError(f"sampler family {family!r} is not allowed; allowed: {', '.join(FAMILIES)}")


def available_samplers(family: Optional[str] = None) -> list[str]:
    """The registered names, all of them or those of one family."""
    _check_family(family)
    return sorted(n for n, cls in _REGISTRY.items() if family is None or cls.family == family)


def sampler_class(name: str, family: Optional[str] = None) -> type:
    """The class registered under `name`; with `family`, one of that family (else ValueError naming both)."""
    _check_family(family)
    if name not in _REGISTRY:
        kind = f"{family} " if family else ""
        raise ValueError(f"unknown {kind}sampler {name!r}; allowed: {', '.join(available_samplers(family))}")
    cls = _REGISTRY[name]
    if family is not None and cls.family != family:
        raise ValueError(f"sampler {name!r} is a {cls.family} sampler, but a {family} sampler is needed here; "
                         f"allowed ({family}): {', '.join(available_samplers(family))}")
    return cls


def build_sampler(name: str, family: Optional[str] = None, **options):
    """A sampler built by name with validated options; an unknown name or option, or another family, raises ValueError."""
    return sampler_class(name, family)(**options)


def build_from_config(config, family: Optional[str] = None) -> object:
    """Build from a mapping {'name': ..., **options} (an omegaconf node or a dict)."""
    config = dict(config)
    if "name" not in config:
        raise ValueError(f"a sampler config needs a 'name'; allowed: {', '.join(available_samplers(family))}")
    return build_sampler(config.pop("name"), family, **config)
