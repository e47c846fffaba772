"""Typed dataclass configs: build from dicts and YAML, apply dotted overrides, save.

Every config in speechssl is a plain ``@dataclass`` with typed fields (nested dataclasses,
``int``/``float``/``bool``/``str``, ``Optional[...]``, ``tuple[...]``, ``list[...]``,
``dict[str, ...]``, ``Literal[...]``). Presets are plain functions returning a filled
config; YAML files and command-line overrides only change fields of a preset.

Unknown keys and values of the wrong type are errors that name the dotted key::

    cfg = from_dict(TrainConfig, {"optim": {"lr": 2e-4}})
    cfg = apply_overrides(cfg, ["optim.lr=1e-3", "model.encoder_layers=4"])
"""
from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar, Union

import yaml

from speechssl.atomic import atomic_write_text
from speechssl.safe_io import BadFileError, loads_yaml
from speechssl.safe_io import load_yaml as load_yaml_file

__all__ = ["ConfigError", "from_dict", "to_dict", "apply_overrides", "load_yaml", "save_yaml", "merge"]

T = TypeVar("T")


class ConfigError(ValueError):
    """A config key is unknown, or its value has the wrong type."""


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _convert(tp: Any, value: Any, key: str) -> Any:
    """Convert a plain (YAML/JSON) ``value`` to type ``tp``; raise ConfigError naming ``key``."""
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _convert(arg, value, key)
            except ConfigError:
                continue
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: expected one of {list(args)}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, _prefix=key + ".")
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(args) != len(value):
                raise ConfigError(f"{key}: expected {len(args)} items, got {len(value)}: {value!r}")
            items = [_convert(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value))]
        else:
            item_tp = args[0] if args else Any
            items = [_convert(item_tp, v, f"{key}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        ktp, vtp = args if args else (Any, Any)
        return {_convert(ktp, k, f"{key}.<key>"): _convert(vtp, v, f"{key}.{k}") for k, v in value.items()}
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key}: expected a bool (true/false), got {value!r}")
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"{key}: expected an int, got {value!r}")
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:  # YAML 1.1 reads "1e-3" as a string
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key}: expected a float, got {value!r}")
    if tp is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key}: expected a string, got {value!r}")
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise ConfigError(f"{key}: expected {_type_name(tp)}, got {value!r}")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def from_dict(cls: type[T], data: dict[str, Any], *, base: T | None = None, _prefix: str = "") -> T:
    """Build dataclass ``cls`` from a plain mapping, checking every key and type.

    Args:
        cls: the dataclass type.
        data: nested mapping of field values; missing fields keep ``base``'s (or the defaults).
        base: an instance whose values fill the fields ``data`` leaves out (e.g. a preset).

    Raises:
        ConfigError: on an unknown key (listing the known ones) or a value of the wrong type.
    """
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in fields]
    if unknown:
        raise ConfigError(
            f"unknown config key {_prefix}{unknown[0]!s}; {cls.__name__} has: {', '.join(sorted(fields))}"
        )
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        tp = hints[name]
        if base is not None and dataclasses.is_dataclass(tp) and isinstance(value, dict):
            kwargs[name] = from_dict(tp, value, base=getattr(base, name), _prefix=f"{_prefix}{name}.")
        else:
            kwargs[name] = _convert(tp, value, f"{_prefix}{name}")
    if base is not None:
        return dataclasses.replace(base, **kwargs)
    missing = [n for n, f in fields.items() if n not in kwargs and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    if missing:
        raise ConfigError(f"missing required config key {_prefix}{missing[0]} for {cls.__name__}")
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """The config as plain nested dicts and lists (JSON/YAML-safe)."""
    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        if isinstance(v, Path):
            return str(v)
        return v
    if not dataclasses.is_dataclass(cfg):
        raise TypeError(f"{cfg!r} is not a dataclass instance")
    return plain(cfg)


def merge(cfg: T, data: dict[str, Any]) -> T:
    """A copy of ``cfg`` with the (nested) values in ``data`` applied, type-checked."""
    return from_dict(type(cfg), data, base=cfg)


def _parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected KEY=VALUE, e.g. optim.lr=2e-4")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {text!r}: empty key")
    try:
        value = loads_yaml(raw, f"override {text!r}", lines=False) if raw.strip() else ""
    except BadFileError as exc:
        if "duplicate key" in str(exc):  # `a={x: 1, x: 2}`: refused, never last-wins
            raise ConfigError(str(exc)) from None
        value = raw
    return key.split("."), value


def apply_overrides(cfg: T, overrides: list[str]) -> T:
    """Apply ``KEY.SUB=VALUE`` strings to ``cfg`` (values parsed as YAML: ``4``, ``true``, ``[1,2]``).

    Raises:
        ConfigError: naming the override whose key is unknown or whose value has the wrong type.
    """
    def nest(path: list[str], value: Any) -> dict[str, Any]:
        for part in reversed(path):
            value = {part: value}
        return value

    for text in overrides:
        path, value = _parse_override(text)
        try:
            cfg = merge(cfg, nest(path, value))
        except ConfigError as exc:
            # YAML reads `data=2024` or `name=true` as a number/bool; a str field takes the text as typed.
            if value is not None and not isinstance(value, (str, list, dict)):
                try:
                    cfg = merge(cfg, nest(path, text.split("=", 1)[1].strip()))
                    continue
                except ConfigError:
                    pass
            raise ConfigError(f"override {text!r}: {exc}") from None
    return cfg


def load_yaml(cls: type[T], path: str | Path, *, base: T | None = None) -> T:
    """Read a YAML file into ``cls`` (over ``base`` when given). Errors name the file."""
    path = Path(path)
    try:
        data = load_yaml_file(path)
    except FileNotFoundError:
        raise ConfigError(f"{path}: cannot read config: no such file") from None
    except BadFileError as exc:  # syntax errors and duplicate keys, naming file and line
        raise ConfigError(str(exc)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__} "
                          f"{str(data)[:40]!r}")
    try:
        return from_dict(cls, data, base=base)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def save_yaml(cfg: Any, path: str | Path) -> None:
    """Write ``cfg`` as YAML, atomically."""
    atomic_write_text(path, yaml.safe_dump(to_dict(cfg), sort_keys=False))
