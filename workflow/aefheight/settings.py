"""Settings dataclasses read from the (schema-validated) config.

Snakemake validates the whole config against ``workflow/schemas/config.schema.yaml``; the CLI
checks again here, so a step run by hand gets the same clear message naming the bad key.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from typing import Any, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict:
        return isinstance(value, dict)
    return isinstance(value, hint)


def from_mapping(cls: type[T], mapping: dict[str, Any] | None, section: str) -> T:
    """Build settings ``cls`` from a config section, naming any unknown key or wrong type.

    Args:
        cls: a dataclass whose fields have defaults.
        mapping: the config section (may be None or partial: defaults fill the rest).
        section: the section's path in the config, used in messages (e.g. ``training``).
    """
    mapping = dict(mapping or {})
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(mapping) - names)
    if unknown:
        raise ConfigError(
            f"unknown config key {section}.{unknown[0]} (known keys: {', '.join(sorted(names))})"
        )
    for key, value in mapping.items():
        if not _type_ok(value, hints[key]):
            raise ConfigError(
                f"config key {section}.{key} has the wrong type: got {value!r}, "
                f"expected {hints[key]}"
            )
        if isinstance(value, list):
            mapping[key] = tuple(value)
    obj = cls(**mapping)
    check = getattr(obj, "check", None)
    if check is not None:
        check(section)
    return obj


def parse_json(text: str, what: str = "--settings") -> dict[str, Any]:
    """Parse a JSON object given on the command line."""
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value
