"""Samplers by name: `build_sampler("deis", order=3)`, `available_samplers()`."""

from __future__ import annotations

from typing import Callable, Type

_REGISTRY: dict[str, type] = {}


def register(name: str) -> Callable[[Type], Type]:
    """Class decorator adding a sampler class under `name`."""

    def wrap(cls: Type) -> Type:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"sampler name {name!r} is registered twice")
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return wrap


def available_samplers() -> list[str]:
    return sorted(_REGISTRY)


def sampler_class(name: str) -> type:
    if name not in _REGISTRY:
        raise ValueError(f"unknown sampler {name!r}; allowed: {', '.join(available_samplers())}")
    return _REGISTRY[name]


def build_sampler(name: str, **options):
    """A sampler built by name with validated options; an unknown name or option raises ValueError."""
    return sampler_class(name)(**options)


def build_from_config(config) -> object:
    """Build from a mapping {'name': ..., **options} (an omegaconf node or a dict)."""
    config = dict(config)
    if "name" not in config:
        raise ValueError(f"a sampler config needs a 'name'; allowed: {', '.join(available_samplers())}")
    return build_sampler(config.pop("name"), **config)
