"""The config schema, and a step's settings dataclass built from its section of the config.

Use this module for one section (a step, a test, a notebook); :mod:`aefheight.config` checks
the whole config once, with this module, before any job.

``workflow/schemas/config.schema.yaml`` holds every key's type, range, description and default.
:func:`from_mapping` validates a section against its part of the schema (filling defaults) and
builds the step's dataclass, which holds no defaults of its own; the dataclass's ``check``
method adds only what a schema cannot say (cross-field rules, names a library must know).
Snakemake runs the same validation once over the whole config before any job
(:func:`aefheight.config.check_config`); a step run by hand gets the same one-line messages.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import re
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import jsonschema
import yaml

from aefheight.core.errors import ConfigError

T = TypeVar("T")

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "config.schema.yaml"


@functools.cache
def schema() -> dict[str, Any]:
    """The config schema (parsed once per process)."""
    return yaml.safe_load(SCHEMA_PATH.read_text(encoding="utf-8"))


def subschema(section: str) -> dict[str, Any]:
    """The schema of a dotted config path (``training``, ``aois.<name>.synthetic``)."""
    node = schema()
    for key in [k for k in section.split(".") if k]:
        props = node.get("properties", {})
        if key in props:
            node = props[key]
        elif isinstance(node.get("additionalProperties"), dict):
            node = node["additionalProperties"]
        else:
            raise ConfigError(f"unknown config key {section}")
    return node


def _fill_defaults(validator_class: Any) -> Any:
    """A validator that sets each missing property to (a copy of) its schema default."""
    validate_properties = validator_class.VALIDATORS["properties"]

    def properties(
        validator: jsonschema.protocols.Validator,
        props: dict[str, Any],
        instance: Any,
        schema_: dict[str, Any],
    ) -> Iterator[jsonschema.ValidationError]:
        if isinstance(instance, dict):
            for name, sub in props.items():
                if "default" in sub and name not in instance:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, props, instance, schema_)

    return jsonschema.validators.extend(validator_class, {"properties": properties})


def _tuple_is_array(checker: Any, instance: Any) -> bool:
    return isinstance(instance, (list, tuple))  # settings hold tuples (frozen dataclasses)


_Validator = jsonschema.validators.extend(
    _fill_defaults(jsonschema.Draft202012Validator),
    type_checker=jsonschema.Draft202012Validator.TYPE_CHECKER.redefine("array", _tuple_is_array),
)


def _first_sentence(text: str) -> str:
    return re.split(r"(?<=\.)\s", " ".join(text.split()), maxsplit=1)[0].rstrip(".")


def _message(err: jsonschema.ValidationError, section: str, where: str) -> str:
    """One line naming the key, what is wrong and what the key is for."""
    key = section
    for p in err.absolute_path:
        key += f"[{p}]" if isinstance(p, int) else f".{p}" if key else str(p)
    if err.validator == "additionalProperties":
        known = ", ".join(sorted(err.schema.get("properties", {})))
        extra = sorted(set(err.instance) - set(err.schema.get("properties", {})))
        return f"unknown config key {key}.{extra[0]} (known keys: {known})"
    if err.validator == "required":
        missing = re.match(r"'(.+?)' is a required property", err.message)
        return f"config key {key}.{missing.group(1) if missing else '?'} is required"
    path = ".".join(str(p) for p in err.absolute_path if not isinstance(p, int))
    try:
        about = subschema(".".join(p for p in (where, path) if p)).get("description", "")
    except ConfigError:
        about = ""
    hint = f" ({_first_sentence(about)})" if about else ""
    if err.validator == "type":
        expected = err.validator_value
        return (
            f"config key {key} has the wrong type: got {err.instance!r}, expected {expected}{hint}"
        )
    detail = "" if err.validator == "not" else f": {err.message}"
    return f"config key {key} = {err.instance!r} is invalid{detail}{hint}"


def validate_section(
    mapping: dict[str, Any] | None, where: str, section: str | None = None
) -> dict[str, Any]:
    """A copy of a config section, checked against the schema, with defaults filled in.

    Args:
        mapping: the section (None: empty).
        where: its path in the schema (``training``, ``models.<name>``; "" = the whole config).
        section: its path in the user's config, named in messages (``models.unet``).

    Raises:
        ConfigError: one line naming the first bad key (unknown, missing, wrong type/range).
    """
    section = where if section is None else section
    data = copy.deepcopy(mapping) if mapping is not None else {}
    errors = sorted(
        _Validator(subschema(where)).iter_errors(data),
        key=lambda e: (
            bool({"if", "then", "else"} & set(map(str, e.schema_path))),  # a key's own rule first
            list(map(str, e.absolute_path)),
            e.validator != "additionalProperties",
        ),
    )
    if errors:
        raise ConfigError(_message(errors[0], section, where))
    return data


def from_mapping(cls: type[T], mapping: dict[str, Any] | None, section: str | None = None) -> T:
    """Build settings ``cls`` from a config section: schema check, defaults, cross-field check.

    Args:
        cls: a settings dataclass with a ``SECTION`` class variable (its path in the schema).
        mapping: the config section (None or partial: the schema's defaults fill the rest).
        section: the section's path named in messages (e.g. ``aois.demo.synthetic``);
            ``cls.SECTION`` if not given.
    """
    where: str = cls.SECTION  # type: ignore[attr-defined]  # the schema's path, e.g. models.<name>
    section = section or where
    data = validate_section(mapping, where, section)
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
    for key in data:
        if key not in names:
            raise ConfigError(f"config key {section}.{key} does not apply here; remove it")
    for name in names:
        if name not in data:
            raise ConfigError(f"config key {section}.{name} is required")
        if isinstance(data[name], list) and typing.get_origin(hints[name]) is not list:
            data[name] = tuple(data[name])  # frozen settings: tuples, hashable
    obj = cls(**data)
    check = getattr(obj, "check", None)
    if check is not None:
        check(section)
    return obj


def make(cls: type[T], **values: Any) -> T:
    """Settings from keyword values and the schema's defaults (tests, notebooks)."""
    return from_mapping(cls, values)


def parse_json(text: str, what: str = "--settings") -> dict[str, Any]:
    """Parse a JSON object given on the command line."""
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{what} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise ConfigError(f"{what} must be a JSON object, got {type(value).__name__}")
    return value
