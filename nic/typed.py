"""Typed dataclasses from plain mappings (YAML, checkpoints) and back.

:mod:`nic.config` builds the run configuration with these, and decoders build their own
options sections (:mod:`nic.decoders`) with the same checks, so every key is checked the
same way wherever it is declared: an unknown key, or a value of the wrong type, is a
:class:`ConfigError` that names the dotted key (``decoder.attention.alpha_c``) and, for
unknown keys, lists the valid ones. This module imports nothing from nic.

Two optional hooks let a dataclass nested in another choose its own mapping form:

* ``from_mapping(data, source, path) -> instance`` (a classmethod): :func:`build_dataclass`
  calls it instead of building the field generically;
* ``to_mapping() -> dict``: :func:`to_plain` calls it instead of dumping the fields.
"""

from __future__ import annotations

import copy
import dataclasses
import types
import typing
from typing import Any


class ConfigError(ValueError):
    """A configuration file or override names an unknown key or has a wrong type."""


def location(source: str, path: str) -> str:
    """The prefix of an error message: ``"config.yaml: decoder.attention"`` (just the source at the top)."""
    return f"{source}: {path}" if path else source


def build_dataclass(cls: type, data: Any, source: str, path: str = "") -> Any:
    """Build dataclass ``cls`` from the mapping ``data``, checking every key and value.

    ``source`` names where the data came from (a file, "config"), ``path`` the dotted key
    of ``data`` in it ("" at the top); both go into error messages. Fields that are
    dataclasses are built recursively (through their ``from_mapping`` when they have one).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{location(source, path)}: expected a mapping for {cls.__qualname__}, "
                          f"got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(f"{location(source, path)}: unknown key(s) {unknown} in {cls.__qualname__}; "
                          f"valid keys: {sorted(fields)}")
    kwargs = {}
    for name, value in data.items():
        hint, key = hints[name], f"{path}.{name}" if path else name
        if dataclasses.is_dataclass(hint):
            builder = getattr(hint, "from_mapping", None)
            kwargs[name] = builder(value, source, key) if builder else build_dataclass(hint, value, source, key)
        else:
            kwargs[name] = coerce(value, hint, f"{source}: {key}")
    return cls(**kwargs)


def coerce(value: Any, hint: Any, where: str) -> Any:
    """Check ``value`` against the type ``hint`` (int, float, str, bool, lists, unions with None).

    Ints are accepted for floats (and numeric strings such as YAML's ``1e-3``); a single
    value for a list. ``where`` prefixes the error message.
    """
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return coerce(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if origin is list:
        (item,) = typing.get_args(hint)
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        return [coerce(v, item, where) for v in value]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if hint is bool and not isinstance(value, bool):
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if hint in (int, float, str) and (not isinstance(value, hint) or isinstance(value, bool) and hint is not bool):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r} ({type(value).__name__})")
    return value


def to_plain(obj: Any) -> Any:
    """Dataclasses (through their ``to_mapping`` when they have one), lists and dicts -> plain
    dicts/lists (deep copies), as :func:`dataclasses.asdict` but with the hook."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        if hasattr(obj, "to_mapping"):
            return to_plain(obj.to_mapping())
        return {f.name: to_plain(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, dict):
        return {k: to_plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(to_plain(v) for v in obj)
    return copy.deepcopy(obj)
