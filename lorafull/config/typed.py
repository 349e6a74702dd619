"""Typed loading of YAML mappings into the settings dataclasses, with errors that name the file,
the line and the key (`file:line: key: expected ...`), so a typo never silently trains the default.

Library module (no command): lorafull.config re-exports what other modules use from here.
"""
from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from typing import Any, Union

import yaml


class ConfigError(ValueError):
    """A bad study file or override; the message names the file, line and key."""


class SettingError(ConfigError):
    """Raised by a settings dataclass's __post_init__ about one of its keys; the loader (_build) turns
    it into a ConfigError naming the file, line and full key."""

    def __init__(self, key: str, detail: str):
        super().__init__(f"{key}: {detail}")
        self.key, self.detail = key, detail


# ---------------------------------------------------------------------------------------------
# Typed loading with errors that name the key and line
# ---------------------------------------------------------------------------------------------
def _line_map(text: str) -> dict[str, int]:
    """dotted key path -> 1-based line of that key in the YAML text (best effort)."""
    lines: dict[str, int] = {}

    def walk(node, prefix):
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = f"{prefix}.{k.value}" if prefix else str(k.value)
                lines[key] = k.start_mark.line + 1
                walk(v, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                key = f"{prefix}[{i}]"
                lines[key] = v.start_mark.line + 1
                walk(v, key)

    try:
        walk(yaml.compose(text, Loader=yaml.SafeLoader), "")
    except yaml.YAMLError:
        pass
    return lines


class _Where:
    """Where a value came from, for error messages: file + key path -> 'file:line: key'."""

    def __init__(self, file: str, lines: dict[str, int], prefix: str = ""):
        self.file, self.lines, self.prefix = file, lines, prefix

    def at(self, key: str) -> str:
        line = self.lines.get(key)
        return f"{self.file}:{line}: {key}" if line else f"{self.file}: {key}"


def _type_name(tp) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(value, tp, key: str, where: _Where):
    """Check/convert `value` to annotation `tp`; raise ConfigError naming the key."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, key, where)
            except ConfigError as e:
                errors.append(e)
        raise ConfigError(f"{where.at(key)}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where.at(key)}: expected a mapping, got {value!r}")
        return _build(tp, value, where, key)
    if origin is list:
        (item_tp,) = typing.get_args(tp) or (Any,)
        if not isinstance(value, list):
            raise ConfigError(f"{where.at(key)}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, f"{key}[{i}]", where) for i, v in enumerate(value)]
    if tp is dict or origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where.at(key)}: expected a mapping, got {value!r}")
        return value
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where.at(key)}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where.at(key)}: expected an integer, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads "5e-6" (no dot) as a string
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{where.at(key)}: expected a number, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where.at(key)}: expected a string, got {value!r}")
    return value


def _build(cls, data: dict, where: _Where, prefix: str = ""):
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in hints:
            close = difflib.get_close_matches(str(k), names, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(names)})"
            raise ConfigError(f"{where.at(key)}: unknown key{hint}")
        kwargs[k] = _coerce(v, hints[k], key, where)
    try:
        return cls(**kwargs)
    except SettingError as e:
        raise ConfigError(f"{where.at(f'{prefix}.{e.key}' if prefix else e.key)}: {e.detail}") from None


def to_dict(obj) -> dict:
    return dataclasses.asdict(obj)
