"""Typed loading of YAML mappings into the settings dataclasses, with errors that name the file,
the line and the key (`file:line: key: expected ...`), so a typo never silently trains the default.

Every check of a single value lives in the dataclasses (lorafull.config.schema): the annotation gives
the type (a `Literal[...]` lists the choices), and `ranged(...)` / `named(...)` fields carry a range or
a name pattern that `_build` checks. The YAML reader refuses what PyYAML lets through silently: a key
given twice in one mapping (the second would win), alias expansions beyond a bound (a 600-byte
"billion laughs" file), and text that is not UTF-8.

Library module (no command): lorafull.config re-exports what other modules use from here.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import math
import re
import types
import typing
from pathlib import Path
from typing import Any, Literal, Optional, Union

import yaml


class ConfigError(ValueError):
    """A bad study file or override; the message names the file, line and key."""


# ---------------------------------------------------------------------------------------------
# Reading YAML: UTF-8 only, no duplicate keys, bounded alias expansion; a line for every key
# ---------------------------------------------------------------------------------------------
# A real study file expands to a few thousand nodes; an alias bomb of a few hundred bytes to billions.
MAX_YAML_NODES = 200_000


def read_yaml_file(path: str | Path, what: str = "file") -> tuple[Any, dict[str, int]]:
    """(value, dotted key -> line) of a YAML file; every failure is one ConfigError line."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read {what}: {e.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[:e.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte 0x{data[e.start]:02x}); save the file as UTF-8") from None
    return parse_yaml(text, str(path))


def parse_yaml(text: str, file: str) -> tuple[Any, dict[str, int]]:
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)  # aliases share nodes here: linear in the text
    except yaml.YAMLError as e:
        raise ConfigError(f"{file}{_mark(e)}: invalid YAML: {getattr(e, 'problem', None) or e}") from None
    if node is None:
        return None, {}
    _check_size(node, file)
    lines = _line_map(node, file)  # refuses a key given twice, naming it
    loader = yaml.SafeLoader("")
    try:
        value = loader.construct_document(node)
    except yaml.YAMLError as e:
        raise ConfigError(f"{file}{_mark(e)}: invalid YAML: {getattr(e, 'problem', None) or e}") from None
    finally:
        loader.dispose()
    return value, lines


def _mark(e: yaml.YAMLError) -> str:
    mark = getattr(e, "problem_mark", None)
    return f":{mark.line + 1}" if mark else ""


def _check_size(root: yaml.Node, file: str) -> None:
    """Refuse documents whose aliases expand past MAX_YAML_NODES. Sizes are memoised per node, so the
    check itself is linear in the text however deep the aliases nest."""
    sizes: dict[int, int] = {}

    def size(node: yaml.Node) -> int:
        if id(node) in sizes:
            if sizes[id(node)] < 0:
                raise ConfigError(f"{file}:{node.start_mark.line + 1}: invalid YAML: an alias refers to itself")
            return sizes[id(node)]
        sizes[id(node)] = -1
        total = 1
        if isinstance(node, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in node.value)
        elif isinstance(node, yaml.SequenceNode):
            total += sum(size(v) for v in node.value)
        if total > MAX_YAML_NODES:
            raise ConfigError(f"{file}:{node.start_mark.line + 1}: invalid YAML: aliases expand to more than "
                              f"{MAX_YAML_NODES:,} values (an alias bomb?)")
        sizes[id(node)] = total
        return total

    size(root)


def _line_map(root: yaml.Node, file: str) -> dict[str, int]:
    """dotted key path -> 1-based line of that key in the YAML text. A key given twice in one mapping is
    an error (PyYAML would keep the second silently). Walks the expanded tree: call after _check_size."""
    lines: dict[str, int] = {}

    def walk(node, prefix):
        if isinstance(node, yaml.MappingNode):
            seen: dict[str, int] = {}
            for k, v in node.value:
                key = f"{prefix}.{k.value}" if prefix else str(k.value)
                line = k.start_mark.line + 1
                if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                    if k.value in seen:
                        raise ConfigError(f"{file}:{line}: {key}: key given twice in one mapping (first on line "
                                          f"{seen[k.value]}); the second would silently replace the first")
                    seen[k.value] = line
                lines.setdefault(key, line)
                walk(v, key)
        elif isinstance(node, yaml.SequenceNode):
            for i, v in enumerate(node.value):
                key = f"{prefix}[{i}]"
                lines.setdefault(key, v.start_mark.line + 1)
                walk(v, key)

    walk(root, "")
    return lines


class _Where:
    """Where a value came from, for error messages: 'file:line: key', or 'command line ...' for a value
    an override set. `base` and `origins` map the keys of a run (train.lr) to the keys of the file that
    set them (base.train.lr, grid.train.lr, runs[2].train.lr); `cli` maps file keys to the override text."""

    def __init__(self, file: str, lines: dict[str, int], base: str = "", origins: Optional[dict[str, str]] = None,
                 cli: Optional[dict[str, str]] = None):
        self.file, self.lines, self.base = file, lines, base
        self.origins, self.cli = origins or {}, cli or {}

    def for_run(self, origins: dict[str, str]) -> "_Where":
        return _Where(self.file, self.lines, "base.", origins, self.cli)

    def source(self, key: str) -> str:
        """The file key that set a run key: the nearest origin (or the key under base)."""
        parts = key.split(".")
        for n in range(len(parts), 0, -1):
            head = ".".join(parts[:n])
            if head in self.origins:
                return self.origins[head] + key[len(head):]
        return self.base + key

    def at(self, key: str) -> str:
        src = self.source(key)
        parts = src.split(".")
        for n in range(len(parts), 0, -1):  # an override of a section names the keys inside it
            head = ".".join(parts[:n])
            if head in self.cli:
                return f"command line override {self.cli[head]!r}: {src}"
        line = next((self.lines[".".join(parts[:n])] for n in range(len(parts), 0, -1)
                     if ".".join(parts[:n]) in self.lines), None)
        return f"{self.file}:{line}: {src}" if line else f"{self.file}: {src}"


# ---------------------------------------------------------------------------------------------
# Field declarations the loader checks: ranges and names
# ---------------------------------------------------------------------------------------------
NAME_PATTERN = r"(?!\.+$)[A-Za-z0-9._-]+"  # folder names that need no quoting anywhere; not '.' or '..'


def ranged(default, *, gt=None, ge=None, lt=None, le=None):
    """A number field with bounds (gt: >, ge: >=, lt: <, le: <=); NaN and infinity are refused too."""
    return dataclasses.field(default=default, metadata={"range": (gt, ge, lt, le)})


def named(default):
    """A name that becomes a folder or a job name: NAME_PATTERN."""
    return dataclasses.field(default=default, metadata={"pattern": NAME_PATTERN})


def _check_range(value, bounds, key: str, where: _Where) -> None:
    if value is None or isinstance(value, str):  # a word such as auto: its Literal was checked
        return
    gt, ge, lt, le = bounds
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{where.at(key)}: must be a finite number, got {value!r}")
    ok = ((gt is None or value > gt) and (ge is None or value >= ge) and (lt is None or value < lt)
          and (le is None or value <= le))
    if not ok:
        need = [f"{op} {b}" for op, b in ((">", gt), (">=", ge), ("<", lt), ("<=", le)) if b is not None]
        raise ConfigError(f"{where.at(key)}: must be {' and '.join(need)}, got {value!r}")


def _check_field(f: dataclasses.Field, value, key: str, where: _Where) -> None:
    if "range" in f.metadata:
        _check_range(value, f.metadata["range"], key, where)
    if "pattern" in f.metadata and value is not None and not re.fullmatch(f.metadata["pattern"], value):
        raise ConfigError(f"{where.at(key)}: {value!r} is not a usable name (letters, digits, '.', '_', '-' only)")


# ---------------------------------------------------------------------------------------------
# Typed loading with errors that name the key and line
# ---------------------------------------------------------------------------------------------
def _type_name(tp) -> str:
    """How an error names a type: 'an integer', 'true/false', a Literal by its choices ('auto')."""
    if typing.get_origin(tp) is Literal:
        return " or ".join(str(c) for c in typing.get_args(tp))
    return {int: "an integer", float: "a number", bool: "true/false", str: "a string"}.get(
        tp, getattr(tp, "__name__", None) or str(tp).replace("typing.", ""))


def _coerce_literal(value, choices: tuple, key: str, where: _Where):
    # compare with the type too: YAML's true is 1 and 1.0 is 1 to Python, neither is a stage number
    if any(type(value) is type(c) and value == c for c in choices):
        return value
    close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1) if isinstance(value, str) else []
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise ConfigError(f"{where.at(key)}: expected one of {', '.join(map(str, choices))}, got {value!r}{hint}")


def _coerce_union(value, args: tuple, key: str, where: _Where):
    if value is None and type(None) in args:
        return None
    options = [a for a in args if a is not type(None)]
    if len(options) == 1:  # Optional[X]: X's own message (its choices, its range)
        return _coerce(value, options[0], key, where)
    for a in options:
        try:
            return _coerce(value, a, key, where)
        except ConfigError:
            pass
    raise ConfigError(f"{where.at(key)}: expected {' or '.join(_type_name(a) for a in args)}, got {value!r}")


def _coerce_number(value, tp, key: str, where: _Where):
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{where.at(key)}: expected an integer, got {value!r}")
    number = value
    if isinstance(value, str):  # YAML 1.1 reads "5e-6" (no dot) as a string
        try:
            number = float(value)
        except ValueError:
            pass
    if isinstance(number, (int, float)) and not isinstance(number, bool) and not math.isnan(number):
        return float(number)
    raise ConfigError(f"{where.at(key)}: expected a number, got {value!r}")


def _coerce(value, tp, key: str, where: _Where):
    """Check/convert `value` to annotation `tp`; raise ConfigError naming the key."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return _coerce_union(value, typing.get_args(tp), key, where)
    if origin is Literal:
        return _coerce_literal(value, typing.get_args(tp), key, where)
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
        _, value_tp = typing.get_args(tp) or (Any, Any)
        return {k: _coerce(v, value_tp, f"{key}.{k}", where) for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where.at(key)}: expected true/false, got {value!r}")
    if tp in (int, float):
        return _coerce_number(value, tp, key, where)
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where.at(key)}: expected a string, got {value!r}")
    return value


@functools.cache
def _schema(cls) -> tuple[dict, dict]:
    """(field name -> type, field name -> Field) of a dataclass: resolved once per class, not once per
    value built (a 10,000-run grid builds 60,000 sections)."""
    return typing.get_type_hints(cls), {f.name: f for f in dataclasses.fields(cls)}


def _build(cls, data: dict, where: _Where, prefix: str = ""):
    hints, fields = _schema(cls)
    kwargs = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in fields:
            close = difflib.get_close_matches(str(k), list(fields), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else f" (known: {', '.join(fields)})"
            raise ConfigError(f"{where.at(key)}: unknown key{hint}")
        kwargs[k] = _coerce(v, hints[k], key, where)
        _check_field(fields[k], kwargs[k], key, where)
    return cls(**kwargs)


def to_dict(obj) -> dict:
    """dataclasses.asdict for settings (values are numbers, strings, lists and dicts of them), without
    asdict's deep copy of every leaf: a launcher signs and plans thousands of runs."""
    values, out = obj.__dict__, {}
    for name in _field_names(type(obj)):
        v = values[name]
        out[name] = v if type(v) in _ATOM_TYPES else _plain(v)
    return out


@functools.cache
def _field_names(cls) -> Optional[tuple[str, ...]]:
    """The fields of a dataclass, None for any other type."""
    return tuple(f.name for f in dataclasses.fields(cls)) if dataclasses.is_dataclass(cls) else None


_ATOMS = (str, int, float, bool, type(None))
_ATOM_TYPES = frozenset(_ATOMS)


def _plain(value):
    if isinstance(value, _ATOMS):
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if _field_names(type(value)) is not None:
        return to_dict(value)
    return copy.deepcopy(value)


def clone(obj):
    """A deep copy of settings (dataclasses of atoms, lists and dicts), much faster than copy.deepcopy."""
    if isinstance(obj, _ATOMS):
        return obj
    if isinstance(obj, list):
        return [clone(v) for v in obj]
    if isinstance(obj, dict):
        return {k: clone(v) for k, v in obj.items()}
    if _field_names(type(obj)) is None:
        return copy.deepcopy(obj)
    new = object.__new__(type(obj))
    fields = new.__dict__
    for k, v in obj.__dict__.items():
        fields[k] = v if type(v) in _ATOM_TYPES else clone(v)
    return new


class NotSimple(Exception):
    """set_typed cannot set this key in place (an unknown key, a path through a non-section): build the
    settings from a mapping instead, whose errors name the key."""


_COERCED: dict[tuple, Any] = {}  # (class, key, value type, value) -> the checked value: a grid repeats its values


def set_typed(obj, dotted: str, value, where: _Where) -> None:
    """Set `dotted` (e.g. train.lr) on built settings, coerced and checked exactly as _build would."""
    parts = dotted.split(".")
    for part in parts[:-1]:
        _, fields = _schema(type(obj))
        if part not in fields or _field_names(type(getattr(obj, part))) is None:
            raise NotSimple(dotted)
        obj = getattr(obj, part)
    hints, fields = _schema(type(obj))
    if parts[-1] not in fields:
        raise NotSimple(dotted)
    memo = (type(obj), parts[-1], type(value), value) if type(value) in _ATOM_TYPES else None
    if memo not in _COERCED:
        coerced = _coerce(value, hints[parts[-1]], dotted, where)
        _check_field(fields[parts[-1]], coerced, dotted, where)
        if memo is None:
            setattr(obj, parts[-1], coerced)
            return
        _COERCED[memo] = coerced
    setattr(obj, parts[-1], _COERCED[memo])
