"""Building nested frozen configs from flat options, and ``KEY=VALUE`` overrides.

The stage configs nest (a scan holds an explainer config, a detector config, the second look
and a flag rule). The command line has flat options and a generic ``--set a.b.c=VALUE``;
these functions route both into the nested dataclasses by *field name*, so no option copies a
field by hand and every nested setting is reachable::

    config = set_paths(ScanConfig(), {"second_look.min_contrast": "0.03", "flags.min_mass": "0.1"})
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Iterable, Mapping
from functools import cache
from typing import Any, TypeVar

__all__ = [
    "UnknownSetting",
    "build_config",
    "default_of",
    "field_names",
    "parse_assignments",
    "refuse_leftovers",
    "set_path",
    "set_paths",
    "take_fields",
]

T = TypeVar("T")


class UnknownSetting(ValueError):
    """A dotted path names no field of the config."""


_TRUE, _FALSE = {"true", "yes", "1", "on"}, {"false", "no", "0", "off"}


def field_names(cls: type | Any) -> set[str]:
    """The init fields of dataclass ``cls`` (a class or an instance)."""
    return {f.name for f in dataclasses.fields(cls) if f.init}


def take_fields(cls: type | Any, options: dict[str, Any]) -> dict[str, Any]:
    """Remove from ``options`` the keys that are fields of ``cls`` and return those whose value
    is not None (None means "not given: keep the config's default")."""
    taken = {name: options.pop(name) for name in field_names(cls) & set(options)}
    return {k: v for k, v in taken.items() if v is not None}


def parse_assignments(items: Iterable[str]) -> dict[str, str]:
    """``["a.b=1", "c=x"]`` -> ``{"a.b": "1", "c": "x"}``; an item without ``=`` raises
    ``ValueError``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE such as flags.min_mass=0.1, got {item!r}")
        out[key.strip()] = value.strip()
    return out


@cache
def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(raw: Any, hint: Any, where: str) -> Any:
    """``raw`` (a string from the command line, or a value) as the type ``hint`` says."""
    if not isinstance(raw, str):
        return raw
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if raw.lower() == "none" and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        for option in options:
            try:
                return _coerce(raw, option, where)
            except ValueError:
                continue
        raise ValueError(f"{where}: cannot read {raw!r} as {hint}")
    if hint is bool:
        if raw.lower() in _TRUE | _FALSE:
            return raw.lower() in _TRUE
        raise ValueError(f"{where}: expected true or false, got {raw!r}")
    if hint in (int, float, str):
        try:
            return hint(raw)
        except ValueError:
            raise ValueError(f"{where}: expected {hint.__name__}, got {raw!r}") from None
    if origin is tuple:
        parts = raw.replace("/", ",").split(",")
        return tuple(_coerce(p, a, where) for p, a in zip(parts, args, strict=True))
    if hint is Any or hint is typing.Any:
        return raw
    raise ValueError(f"{where}: a {hint} cannot be set from the command line")


def set_path(config: T, path: str, value: Any) -> T:
    """A copy of the frozen dataclass ``config`` with the field at dotted ``path`` set to
    ``value`` (a string is converted to the field's type). Nested configs are followed through
    their current values, so a field of whichever detector or explainer config is there can be
    reached. Unknown names raise ``ValueError`` listing the valid ones."""
    head, _, rest = path.partition(".")
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise UnknownSetting(f"{path}: not a setting (its parent is not a config)")
    names = field_names(config)
    if head not in names:
        valid = ", ".join(sorted(names))
        raise UnknownSetting(f"unknown setting {head!r} of {type(config).__name__}; valid: {valid}")
    current = getattr(config, head)
    if rest:
        new = set_path(current, rest, value)
    elif dataclasses.is_dataclass(current) and isinstance(value, str) and value.lower() != "none":
        raise ValueError(f"{head} is a group of settings; set one of them, e.g. {head}.NAME=VALUE")
    else:
        new = _coerce(value, _hints(type(config))[head], head)
    return dataclasses.replace(config, **{head: new})


def set_paths(config: T, values: Mapping[str, Any]) -> T:
    """:func:`set_path` for every ``path: value`` of ``values``, in order."""
    for path, value in values.items():
        config = set_path(config, path, value)
    return config


def refuse_leftovers(options: Mapping[str, Any], owner: str) -> None:
    """``ValueError`` naming the options still given (not None) once every field of
    ``owner`` (words for the configs that were searched) took its own."""
    leftover = sorted(k for k, v in options.items() if v is not None)
    if leftover:
        raise ValueError(f"{', '.join(leftover)}: not a setting of {owner}")


def build_config(cls: type[T], options: Mapping[str, Any]) -> T:
    """``cls`` from flat ``options`` named like its fields (None = its default); an option
    that is not one of its fields raises ``ValueError``."""
    rest = dict(options)
    config = cls(**take_fields(cls, rest))
    refuse_leftovers(rest, cls.__name__)
    return config


def default_of(cls: type, name: str) -> Any:
    """The default of field ``name`` of dataclass ``cls`` (its factory's value if it has one),
    for help texts that must not repeat it."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory()  # type: ignore[misc]
