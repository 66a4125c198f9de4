"""Typed configs from YAML sections, flags and ``--set`` overrides: one recipe for every command.

Every command's settings are dataclasses; :func:`from_dict` builds one strictly (an unknown key is an
error that names it, so a typo in ``params.yaml`` never falls back to a default silently) and
:func:`apply_overrides` applies ``key.sub=value`` strings. Imports nothing else of hardneg but
:mod:`pipeline.core.errors`.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from pipeline.core.errors import ConfigError

T = TypeVar("T")


def config_hash(d: dict[str, Any]) -> str:
    """Stable sha256 of a JSON-able dict (sorted keys), used to tell runs apart."""
    blob = json.dumps(d, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def _coerce(tp: Any, value: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(a, value, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return from_dict(tp, value, _where=where)
    if origin in (list, tuple):
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return [_coerce(inner, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on", "false", "0", "no", "off"):
            return value.lower() in ("true", "1", "yes", "on")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        try:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError
            return int(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (dict, list)):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any] | None, _where: str = "") -> T:
    """Build dataclass ``cls`` from a nested dict; unknown keys raise :class:`ConfigError`."""
    data = dict(data or {})
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        prefix = f"{_where}." if _where else ""
        raise ConfigError(
            f"unknown config key(s) {[prefix + u for u in unknown]}; known: {sorted(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        where = f"{_where}.{name}" if _where else name
        kwargs[name] = _coerce(hints[name], value, where)
    return cls(**kwargs)


def apply_overrides(obj: T, overrides: list[str] | dict[str, Any]) -> T:
    """Return a copy of ``obj`` with ``a.b=value`` overrides applied (YAML-parsed values)."""
    d = to_dict(obj)
    items = overrides.items() if isinstance(overrides, dict) else [_split_override(o) for o in overrides]
    for key, value in items:
        node = d
        parts = key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"override {key!r}: {p!r} is not a config section")
            node = node[p]
        if parts[-1] not in node:
            raise ConfigError(f"override {key!r}: unknown key {parts[-1]!r}; known: {sorted(node)}")
        node[parts[-1]] = value
    return from_dict(type(obj), d)


def _split_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} must look like key=value")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_yaml_section(path: str | Path, section: str | None) -> dict[str, Any]:
    """Read ``params.yaml`` (or any YAML file) and return one top-level section, or all of it."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"cannot read config {path}: {e}") from e
    if section:
        for part in section.split("."):
            if not isinstance(data, dict) or part not in data:
                raise ConfigError(f"config {path} has no section {section!r}")
            data = data[part]
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} section {section!r} is not a mapping")
    return data


# --------------------------------------------------------------------------- command-line arguments


def add_config_args(p: argparse.ArgumentParser, section: str) -> None:
    """``--config FILE``, ``--section S`` and repeatable ``--set key.sub=value`` on a subcommand."""
    p.add_argument("--config", help="YAML file (e.g. params.yaml) to read settings from")
    p.add_argument("--section", default=section, help=f"section of --config to use (default: {section})")
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override any config field, dotted (e.g. --set parse.batch_size=512); repeatable",
    )


def build_config(cls: type[T], base: dict[str, Any] | None, *layers: dict[str, Any] | list[str] | None) -> T:
    """``cls`` from a base mapping, then each layer of overrides in order, then ``validate()``.

    A layer is a ``{dotted key: value}`` dict (``None`` values are flags not given, skipped) or a list
    of ``key=value`` strings.
    """
    cfg = from_dict(cls, base)
    for layer in layers:
        if isinstance(layer, dict):
            layer = {k: v for k, v in layer.items() if v is not None}
        if layer:
            cfg = apply_overrides(cfg, layer)
    validate = getattr(cfg, "validate", None)
    if callable(validate):
        validate()
    return cfg


def config_from_args(
    cls: type[T],
    args: argparse.Namespace,
    flags: dict[str, Any] | None = None,
    *,
    section: str | None = None,
    overrides: list[str] | None = None,
) -> T:
    """The one precedence of every command: defaults < ``--config``'s section < flags < ``--set``.

    ``flags`` maps dotted keys to flag values; ``None`` means the flag was not given. ``section`` and
    ``overrides`` default to ``args.section`` and ``args.overrides`` (a command with two configs, like
    ``train-curves``, names its second pair explicitly).
    """
    config = getattr(args, "config", None)
    section = args.section if section is None else section
    base = load_yaml_section(config, section) if config and section else {}
    return build_config(cls, base, flags, args.overrides if overrides is None else overrides)
