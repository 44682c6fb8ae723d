"""Typed dataclasses from plain mappings (YAML, checkpoints) and back.

:mod:`nic.config` builds the run configuration with these, and decoders build their own
options sections (:mod:`nic.decoders`) with the same checks, so every key is checked the
same way wherever it is declared: an unknown key, a value of the wrong type, or a value out
of the field's legal range is a :class:`ConfigError` that names the dotted key
(``decoder.attention.alpha_c``), the value and what is legal, and, for unknown keys, lists
the valid ones. This module imports nothing from nic.

Legal values, checked by :func:`build_dataclass` for every key it is given:

* a float field must be finite (nan and inf are never a setting), whatever else it declares;
* a dataclass may declare ``RANGES = {field name: Range}`` (a plain class attribute, not a
  field): :func:`at_least`, :func:`greater_than`, :func:`between`, :func:`one_of`; a list
  field's range applies to each element;
* a dataclass may define ``field_problems(self) -> list[tuple[str, str]]`` for rules over
  several fields: ``(field name, what is wrong)`` pairs, the first one raised.

Two optional hooks let a dataclass nested in another choose its own mapping form:

* ``from_mapping(data, source, path) -> instance`` (a classmethod): :func:`build_dataclass`
  calls it instead of building the field generically;
* ``to_mapping() -> dict``: :func:`to_plain` calls it instead of dumping the fields.

:func:`load_yaml` reads YAML safely (no Python tags run) and refuses a key given twice in
one mapping, which YAML would silently resolve to the last one.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import numbers
import types
import typing
from dataclasses import dataclass
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration file or override names an unknown key, or has a wrong type or an impossible value."""


class Source(str):
    """Where a configuration came from (a file name, "defaults", a checkpoint), as a string, that
    also knows which keys command-line overrides set: ``overrides`` maps a dotted key
    (``"train.lr"``, or a section such as ``"decoder.attention"``) to the override that set it
    (``"--train.lr=1e-3"``), so that an error about such a key names the override, not the file."""

    overrides: dict[str, str]

    def __new__(cls, name: str, overrides: dict[str, str] | None = None) -> Source:
        self = super().__new__(cls, name)
        self.overrides = dict(overrides or {})
        return self

    def origin(self, path: str) -> str | None:
        """The override that set ``path`` (itself or a section above it); None: it comes from the source."""
        keys = [k for k in self.overrides if path == k or path.startswith(k + ".")]
        return self.overrides[max(keys, key=len)] if keys else None


def location(source: str, path: str) -> str:
    """The prefix of an error message: ``"config.yaml: decoder.attention"`` (just the source at the top);
    ``"override --train.lr=x: train.lr"`` when a command-line override set the key (see :class:`Source`)."""
    override = source.origin(path) if path and isinstance(source, Source) else None
    if override is not None:
        return f"override {override}: {path}"
    return f"{source}: {path}" if path else source


# ---------------------------------------------------------------------------- legal values
@dataclass(frozen=True)
class Range:
    """The legal values of a field beyond its type: an interval (ends open or closed) or a set of choices.

    ``note`` says what special values mean (``"0: no limit"``); it is added to error messages.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[Any, ...] = ()
    note: str = ""

    def __contains__(self, value: Any) -> bool:
        if self.choices:
            return value in self.choices
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return self.high is None or (value < self.high if self.high_open else value <= self.high)

    def describe(self) -> str:
        """``"1 or more"``, ``"greater than 0"``, ``"in [0, 1)"``, ``"valid: a, b"``."""
        if self.choices:
            return "valid: " + ", ".join(map(str, self.choices))
        low, high = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"greater than {low}" if self.low_open else f"{low} or more"
        if self.high is not None:
            return f"less than {high}" if self.high_open else f"{high} or less"
        return "any value"

    def failure(self) -> str:
        """What an error says of a value outside the range."""
        text = f"invalid choice; {self.describe()}" if self.choices else f"must be {self.describe()}"
        return f"{text} ({self.note})" if self.note else text


def at_least(low: float, *, note: str = "") -> Range:
    return Range(low=low, note=note)


def greater_than(low: float, *, note: str = "") -> Range:
    return Range(low=low, low_open=True, note=note)


def between(low: float, high: float, *, high_open: bool = False, note: str = "") -> Range:
    return Range(low=low, high=high, high_open=high_open, note=note)


def one_of(*choices: Any, note: str = "") -> Range:
    return Range(choices=tuple(choices), note=note)


def _number(x: float | None) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def value_problem(value: Any, hint: Any, rng: Range | None = None) -> str | None:
    """What is wrong with ``value`` as a value of type ``hint`` (int, float, str, bool, or one of
    those or None) within ``rng``; None when it is legal.

    An int must be an integer and not a bool; a float any real number (ints too) but finite.
    """
    optional = typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)
    if optional:
        if value is None:
            return None
        hint = next(a for a in typing.get_args(hint) if a is not type(None))
    detail = f" ({rng.describe()})" if rng is not None else ""
    if hint is int and (isinstance(value, bool) or not isinstance(value, numbers.Integral)):
        return f"must be an integer{detail}"
    if hint is float and (isinstance(value, bool) or not isinstance(value, numbers.Real)):
        return f"must be a number{detail}"
    if hint is float and not math.isfinite(value):
        return f"must be a finite number{detail}"
    if hint in (str, bool) and not isinstance(value, hint):
        return f"must be {'a string' if hint is str else 'true or false'}{detail}"
    if rng is not None and value not in rng:
        return rng.failure()
    return None


def check_value(value: Any, hint: Any, rng: Range | None, where: str) -> None:
    """Raise a :class:`ConfigError` ``"<where>=<value>: <problem>"`` when :func:`value_problem` finds one
    (for a list, in any element)."""
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint)
        for i, v in enumerate(value):
            problem = value_problem(v, item, rng)
            if problem:
                raise ConfigError(f"{where}={value!r}: element {i} ({v!r}) {problem}")
        return
    problem = value_problem(value, hint, rng)
    if problem:
        raise ConfigError(f"{where}={value!r}: {problem}")


def declared_ranges(cls: type) -> dict[str, Range]:
    """``cls.RANGES`` (empty without); a name in it that is no field of ``cls`` is a programming error."""
    ranges = getattr(cls, "RANGES", None) or {}
    unknown = sorted(set(ranges) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise TypeError(f"{cls.__qualname__}.RANGES names no field of it: {unknown}")
    return ranges


def _check_fields(obj: Any, source: str, path: str) -> None:
    """The dataclass's own rules over several fields (its ``field_problems``), the first one raised."""
    for name, problem in getattr(obj, "field_problems", lambda: [])():
        key = f"{path}.{name}" if path else name
        raise ConfigError(f"{location(source, key)}={getattr(obj, name)!r}: {problem}")


# ---------------------------------------------------------------------------- mappings <-> dataclasses
def build_dataclass(cls: type, data: Any, source: str, path: str = "") -> Any:
    """Build dataclass ``cls`` from the mapping ``data``, checking every key and value.

    ``source`` names where the data came from (a file, "config", a :class:`Source`), ``path``
    the dotted key of ``data`` in it ("" at the top); both go into error messages. Fields that
    are dataclasses are built recursively (through their ``from_mapping`` when they have one).
    Each value given is checked against its type, then its legal range (module docstring).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{location(source, path)}: expected a mapping for {cls.__qualname__}, "
                          f"got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    ranges = declared_ranges(cls)
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
            kwargs[name] = coerce(value, hint, location(source, key))
            check_value(kwargs[name], hint, ranges.get(name), location(source, key))
    obj = cls(**kwargs)
    _check_fields(obj, source, path)
    return obj


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


# ---------------------------------------------------------------------------- YAML
def load_yaml(text: str, source: str) -> Any:
    """Parse ``text`` as YAML, safely (no Python tags run), like ``yaml.safe_load``, but a key given
    twice in one mapping is a :class:`ConfigError` naming ``source``, the key and both lines (YAML
    itself silently keeps the last). Invalid YAML raises ``yaml.YAMLError``."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _refuse_duplicate_keys(loader, node, source, "", set())
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _refuse_duplicate_keys(loader: yaml.SafeLoader, node: yaml.Node, source: str, path: str, seen: set[int]) -> None:
    """Walk the composed YAML graph (aliases visited once) for mappings that repeat a scalar key."""
    if id(node) in seen:
        return
    seen.add(id(node))
    if isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_duplicate_keys(loader, item, source, f"{path}[{i}]", seen)
        return
    if not isinstance(node, yaml.MappingNode):
        return
    lines: dict[Any, int] = {}
    for key_node, value_node in node.value:
        key = None
        if isinstance(key_node, yaml.ScalarNode) and key_node.tag != "tag:yaml.org,2002:merge":
            key = loader.construct_object(key_node, deep=True)  # as YAML reads it: 1 and 0x1 are one key
            dotted = f"{path}.{key}" if path else str(key)
            line = key_node.start_mark.line + 1
            if key in lines:
                raise ConfigError(f"{source}: duplicate key {dotted} (line {lines[key]} and line {line}); give each "
                                  "key once (YAML would silently keep the last one)")
            lines[key] = line
        _refuse_duplicate_keys(loader, value_node, source, dotted if key is not None else path, seen)
