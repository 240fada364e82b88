"""Experiment configs: omegaconf YAML files plus dotted `key=value` overrides, validated against one schema.

The schema is framework.schema's dataclasses (OmegaConf structured configs): every section of both
experiment kinds, with the data, model and schedule sections picked by their name. Everything is
checked before anything runs: an unknown or misspelt key anywhere (in the file or an override) is a
ValueError naming the full dotted key and the keys allowed at that level; a value of the wrong type
names the key and the type it needs. `trainer` keys are checked against lightning.Trainer's
signature. The returned config has every default filled in.

`+key=value` is accepted and means the same as `key=value`: it never adds a key the schema does not
allow (under `trainer.` the Trainer's signature decides).
"""

from __future__ import annotations

import functools
import re
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, OmegaConfBaseException, ValidationError

from . import schema as S

KINDS = S.KINDS
TOP_LEVEL = S.TOP_LEVEL
_SECTIONS = tuple(k for k in TOP_LEVEL if k not in ("kind", "seed", "out_dir", "resume"))


# --- public API ---------------------------------------------------------------------------------
def load_config(path: str | Path, overrides: Optional[Iterable[str]] = None) -> DictConfig:
    """Load a YAML experiment config, apply `a.b=value` overrides and validate it all against the schema.

    Returns the config with every default filled in, as a plain DictConfig (validate_config checks it
    again after changes); any problem is a ValueError (FileNotFoundError for a missing file) raised
    before anything is built.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file not found: {path}")
    try:
        cfg = OmegaConf.load(path)
    except Exception as err:  # yaml's parser errors
        raise ValueError(f"cannot read config {path}: {_first_line(err)}") from None
    if not isinstance(cfg, DictConfig):
        raise ValueError(f"config {path} must be a mapping at the top level")
    return _validated(cfg, str(path), list(overrides or []))


def apply_overrides(cfg, overrides: Iterable[str]) -> DictConfig:
    """`cfg` (a mapping or a DictConfig, validated or not) with `key=value` / `+key=value` overrides, validated.

    On an already loaded (default-filled) config an override cannot switch a name-selected section
    (data.name, model.name, diffusion.schedule.kind) to one lacking keys it now holds; give the
    override to load_config instead.
    """
    return _validated(_plain(cfg), "config", list(overrides))


def validate_config(config, where: str = "config") -> DictConfig:
    """A mapping or DictConfig (e.g. a checkpoint's saved config) validated, with every default filled in."""
    return _validated(_plain(config), where, [])


def validate_section(kind: str, name: str, section: Mapping[str, Any]) -> dict:
    """One top-level section of a `kind` experiment, validated and with every default filled, as a plain dict."""
    return to_dict(validate_config({"kind": kind, name: dict(section)}, where=name))[name]


def to_dict(cfg) -> dict:
    """A plain, resolved dict (for checkpoints and hyper-parameters)."""
    return OmegaConf.to_container(cfg, resolve=True) if isinstance(cfg, DictConfig) else dict(cfg)


@functools.lru_cache(maxsize=None)
def trainer_keys() -> tuple[str, ...]:
    """The keys a `trainer:` section allows: lightning.Trainer's arguments (but those the trainer
    assembly sets itself) and the project's TRAINER_EXTRA_KEYS."""
    import inspect

    import lightning

    params = inspect.signature(lightning.Trainer).parameters
    names = [k for k, p in params.items() if k != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    return tuple(k for k in names if k not in S.TRAINER_RESERVED_KEYS) + S.TRAINER_EXTRA_KEYS


def call_with_section(factory, section: str, options: dict, **fixed):
    """factory(**fixed, **options), but an option the factory does not take is a ValueError naming
    `section.key` and the keys it does take (instead of a TypeError deep inside)."""
    import inspect

    params = inspect.signature(factory).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        allowed = [k for k, p in params.items() if k not in fixed and k != "self" and p.kind is not inspect.Parameter.VAR_POSITIONAL]
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ValueError(f"unknown config key(s) {', '.join(section + '.' + k for k in unknown)}; allowed: {', '.join(allowed)}")
    return factory(**fixed, **options)


# --- validation ---------------------------------------------------------------------------------
def _first_line(err) -> str:
    return str(err).strip().split("\n")[0]


def _plain(cfg) -> DictConfig:
    """An untyped copy (interpolations kept), so validation starts from the user's keys only."""
    if isinstance(cfg, DictConfig):
        return OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    if isinstance(cfg, Mapping):
        return OmegaConf.create(dict(cfg))
    raise ValueError(f"a config must be a mapping, got {type(cfg).__name__}")


def _parse_override(item: str) -> DictConfig:
    if not isinstance(item, str) or "=" not in item:
        raise ValueError(f"override {item!r} must look like key=value (e.g. trainer.max_steps=100)")
    key, value = item.split("=", 1)
    key = key.strip().lstrip("+")  # `+key` means the same as `key`: the schema decides what may exist
    if not key:
        raise ValueError(f"override {item!r} must look like key=value (e.g. trainer.max_steps=100)")
    try:
        return OmegaConf.from_dotlist([f"{key}={value}"])
    except OmegaConfBaseException as err:
        raise ValueError(f"cannot parse override {item!r}: {_first_line(err)}") from None


def _validated(base: DictConfig, where: str, overrides: list[str]) -> DictConfig:
    # the user's sources in order: the base config, then each override (named in error messages)
    sources = [(where, base)] + [(f"override {item!r}", _parse_override(item)) for item in overrides]
    for _, src in sources:  # a top-level section given as null (`evaluation:` with no keys) is empty
        for key in _SECTIONS:
            if key in src and not OmegaConf.is_interpolation(src, key) and src[key] is None:
                src[key] = {}
    for name, src in sources:
        unknown = [k for k in src.keys() if k not in TOP_LEVEL]
        if unknown:
            raise _unknown_key(str(unknown[0]), name, S.ScoreExperimentConfig())

    kind = _last_value(sources, "kind")
    if kind is None:
        raise ValueError(f"config key 'kind' is missing in {where}; allowed: {', '.join(KINDS)}")
    if kind not in KINDS:
        raise ValueError(f"config key 'kind' must be one of {', '.join(KINDS)}, got {kind!r}")
    choices = {}
    for path, (key, classes) in S.SELECTED[kind].items():
        name = _last_value(sources, f"{path}.{key}")
        if name is not None:
            if not isinstance(name, str) or name not in classes:
                raise ValueError(f"config key '{path}.{key}' = {name!r} is not allowed for kind '{kind}'; "
                                 f"allowed: {', '.join(classes)}")
            choices[path] = name
    instance = S.experiment_schema(kind, choices)
    for name, src in sources:  # unknown keys first, each named with the source that brings it (cheap)
        _check_keys(instance, src, "", name, instance, choices)
        _check_trainer(src, name)
    cfg = _merge(_schema_config(kind, tuple(sorted(choices.items()))), sources, instance, choices)
    _set_whole_mappings(instance, cfg, "", sources)
    missing = sorted(OmegaConf.missing_keys(cfg))
    if missing:
        raise ValueError(f"config key '{missing[0]}' is required{_selection_note(missing[0], choices)} but {where} does not set it")
    _check_choices(instance, cfg, "", sources)
    # a plain (untyped, non-struct) copy, as before: callers may still assign whole sections
    return OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))


def _last_value(sources, dotted: str):
    """The value the last source that sets `dotted` gives it (None: none sets it)."""
    for _, src in reversed(sources):
        value = _raw_get(src, dotted)
        if value is not None:
            return value
    return None


@functools.lru_cache(maxsize=None)
def _schema_config(kind: str, choices: tuple) -> DictConfig:
    """The structured config of a schema (built once per kind and selection; OmegaConf.merge copies it)."""
    return OmegaConf.structured(S.experiment_schema(kind, dict(choices)))


def _raw_get(raw: DictConfig, dotted: str):
    """The user's value at `dotted` in the unvalidated config, or None (absent, or a parent is no mapping)."""
    node: Any = raw
    for part in dotted.split("."):
        if not isinstance(node, DictConfig) or part not in node:
            return None
        try:
            node = node[part]
        except OmegaConfBaseException:  # an interpolation that does not resolve on its own
            return None
    return node


def _merge(schema: DictConfig, sources: list, instance, choices: dict) -> DictConfig:
    """The schema with every source merged in; an OmegaConf error becomes a ValueError naming the key and its source."""
    try:
        return OmegaConf.merge(schema, *(src for _, src in sources))
    except (ConfigKeyError, ConfigAttributeError) as err:
        key = getattr(err, "full_key", None) or _first_line(err)
        raise _unknown_key(key, _source_of(sources, key), instance, choices) from None
    except ValidationError as err:
        key = getattr(err, "full_key", None) or next(
            (k for k in (_non_mapping_key(instance, src, "") for _, src in reversed(sources)) if k), "")
        if not key:
            raise ValueError(f"invalid config: {_first_line(err)}") from None
        where = _source_of(sources, key)
        value = _user_value(dict(sources)[where], key)
        got = "" if value is _ABSENT else f", got {value!r}"
        raise ValueError(f"config key '{key}' in {where} must be {_type_name(_type_at(instance, key))}{got}") from None
    except OmegaConfBaseException as err:
        raise ValueError(f"invalid config: {_first_line(err)}") from None


def _source_of(sources: list, key: str) -> str:
    """The name of the last source that sets `key` (the base's name when none does)."""
    for name, src in reversed(sources):
        if _user_value(src, key) is not _ABSENT:
            return name
    return sources[0][0]


def _unknown_key(key: str, where: str, instance, choices: Optional[dict] = None) -> ValueError:
    """The error for an unknown `key`, listing the keys the schema allows next to it."""
    parent = key.rsplit(".", 1)[0] if "." in key else ""
    obj = instance
    for part in parent.split(".") if parent else []:
        obj = getattr(obj, part, None)
    allowed = ", ".join(S.section_fields(obj)) or "(none)"
    note = _selection_note(key, choices or {})
    return ValueError(f"unknown config key '{key}' in {where}; allowed at '{parent or '<top>'}'{note}: {allowed}")


def _selection_note(key: str, choices: dict) -> str:
    """' (for data.name=files)' when `key` lies in a section picked by a name."""
    kind_sections = {path: sel for sels in S.SELECTED.values() for path, sel in sels.items()}
    for path, name in choices.items():
        if key.startswith(path + "."):
            return f" (for {path}.{kind_sections[path][0]}={name})"
    return ""


def _check_keys(obj, node, prefix: str, where: str, instance, choices: dict) -> None:
    """Every key of `node` (a source's mapping at `prefix`) is a field of the schema object `obj`.

    The merge into the structured config would refuse an unknown key too; checking the keys
    first costs a walk over the user's keys instead of a merge, and names the source exactly.
    Values of the wrong type (a scalar where a section belongs) are left to the merge.
    """
    if not isinstance(node, DictConfig):
        return
    allowed = S.section_fields(obj)
    for key in node.keys():
        if key not in allowed:
            raise _unknown_key(f"{prefix}{key}", where, instance, choices)
        sub = getattr(obj, key)
        if is_dataclass(sub) and not OmegaConf.is_interpolation(node, key):
            _check_keys(sub, node[key], f"{prefix}{key}.", where, instance, choices)


def _check_trainer(src: DictConfig, where: str) -> None:
    """The keys of a source's `trainer:` mapping are trainer_keys() (its values are Lightning's to check)."""
    trainer = src.get("trainer")
    if not isinstance(trainer, DictConfig):
        return
    allowed = trainer_keys()
    unknown = [str(k) for k in trainer.keys() if k not in allowed]
    if unknown:
        raise ValueError(f"unknown config key(s) {', '.join('trainer.' + k for k in unknown)} in {where}; "
                         f"allowed at 'trainer' (lightning.Trainer's arguments and {', '.join(S.TRAINER_EXTRA_KEYS)}): "
                         f"{', '.join(allowed)}")


def _set_whole_mappings(obj, cfg: DictConfig, prefix: str, sources: list) -> None:
    """Fields marked `whole` take the user's mapping (the sources merged) instead of the default merged with it."""
    for f in fields(obj):
        value, key = getattr(obj, f.name), prefix + f.name
        if is_dataclass(value):
            _set_whole_mappings(value, cfg[f.name], key + ".", sources)
        elif f.metadata.get("whole"):
            given = [v for v in (_user_value(src, key) for _, src in sources) if v is not _ABSENT]
            if given:
                cfg[f.name] = OmegaConf.merge(*(OmegaConf.create(v) for v in given))


def _check_choices(obj, cfg: DictConfig, prefix: str, sources: list) -> None:
    """Each field with `choices` metadata holds one of them (or starts with one of its `prefixes`)."""
    for f in fields(obj):
        value = getattr(obj, f.name)
        if is_dataclass(value):
            _check_choices(value, cfg[f.name], f"{prefix}{f.name}.", sources)
        elif "choices" in f.metadata:
            got = cfg[f.name]
            allowed, prefixes = f.metadata["choices"], f.metadata["prefixes"]
            if got not in allowed and not (isinstance(got, str) and got.startswith(prefixes) and len(got) > len(prefixes[0])):
                shown = [("null" if a is None else a) for a in allowed] + [p + "<...>" for p in prefixes]
                key = prefix + f.name
                raise ValueError(f"config key '{key}' in {_source_of(sources, key)} must be one of {', '.join(shown)}, got {got!r}")


# --- error details ------------------------------------------------------------------------------
_ABSENT = object()
_KEY_PART = re.compile(r"\[(\d+)\]|([^.\[\]]+)")


def _key_parts(key: str) -> list:
    return [int(i) if i else name for i, name in _KEY_PART.findall(key)]


def _type_at(instance, key: str):
    """The schema's type hint at a dotted key ('evaluation.nfe[1]' -> int)."""
    obj, hint = instance, type(instance)
    for part in _key_parts(key):
        if is_dataclass(obj) and isinstance(part, str):
            hint = typing.get_type_hints(type(obj)).get(part, Any)
            obj = getattr(obj, part, None)
            continue
        obj = None
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        origin = typing.get_origin(hint)
        if origin is typing.Union and len(args) == 1:
            hint, args, origin = args[0], list(typing.get_args(args[0])), typing.get_origin(args[0])
        if origin in (list, dict) and args:
            hint = args[-1]
        else:
            return Any
    return type(obj) if is_dataclass(obj) else hint


def _type_name(hint) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return "any value"
    if origin is typing.Union:
        names = [_type_name(a) for a in args if a is not type(None)]
        return " or ".join(names) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"a list of {_type_name(args[0]) if args else 'values'}"
    if origin is dict or is_dataclass(hint):
        return "a mapping"
    return {bool: "bool (true or false)", int: "int", float: "float", str: "str"}.get(hint, getattr(hint, "__name__", str(hint)))


def _user_value(src: DictConfig, key: str):
    """The value a source gives a dotted key (plain containers), or _ABSENT."""
    node: Any = src
    for part in _key_parts(key):
        try:
            node = node[part]
        except Exception:
            return _ABSENT
    return OmegaConf.to_container(node) if isinstance(node, (DictConfig, ListConfig)) else node


def _non_mapping_key(obj, src, prefix: str) -> str:
    """The first key where the schema wants a mapping (a section, an entry of a list of mappings) and
    `src` gives something else ('' if none): OmegaConf reports those without the key."""
    if not is_dataclass(obj) or not isinstance(src, DictConfig):
        return ""
    hints = typing.get_type_hints(type(obj))
    for f in fields(obj):
        if f.name not in src or OmegaConf.is_interpolation(src, f.name):
            continue
        sub, value = getattr(obj, f.name), src[f.name]
        if is_dataclass(sub):
            if not isinstance(value, DictConfig):
                return prefix + f.name
            found = _non_mapping_key(sub, value, f"{prefix}{f.name}.")
            if found:
                return found
        elif typing.get_origin(hints[f.name]) is list and isinstance(value, ListConfig):
            args = typing.get_args(hints[f.name])
            if args and typing.get_origin(args[0]) is dict:
                for i in range(len(value)):
                    if not OmegaConf.is_interpolation(value, i) and not isinstance(value[i], DictConfig):
                        return f"{prefix}{f.name}[{i}]"
    return ""
