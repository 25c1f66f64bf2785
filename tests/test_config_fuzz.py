"""Generated bad configs: each breaks one schema rule or one cross-field rule, at every key.

Every case must end in one line naming the key (``good``); a traceback or a line that names
another key is ``poor``; a config accepted as it is is ``wrong``. The cases come from the schema
itself (so new keys are covered without touching this file): a wrong type, each range or enum
broken, an unknown key at every level, a required key removed, repeats and empty lists; then the
cross-field rules the schema cannot say. ``python tests/test_config_fuzz.py`` prints the counts.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aefheight import config
from aefheight.core import schema
from aefheight.core.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
Case = tuple[str, dict, str]  # (what is broken, the config, the key the line must name)


def _base(name: str) -> dict:
    cfg = yaml.safe_load((REPO / "config" / name).read_text())
    config.fill_defaults(cfg)
    return cfg


def _types(node: dict) -> set[str]:
    t = node.get("type", [])
    return {t} if isinstance(t, str) else set(t)


def _wrong_type(node: dict) -> Any:
    """A value of a type the key does not allow (None if every JSON type is allowed)."""
    allowed = _types(node) | ({"string"} if "enum" in node else set())
    candidates = (("x", {"string"}), (3.5, {"number"}), ([1], {"array"}), (True, {"boolean"}))
    for value, kinds in candidates:
        if not kinds & allowed:
            return value
    return {"a": 1} if "object" not in allowed else None


def _broken_values(node: dict, value: Any) -> Iterator[tuple[str, Any]]:
    """(rule, value) pairs that break one rule of the key's schema."""
    wrong = _wrong_type(node)
    if wrong is not None:
        yield "type", wrong
    for rule, bad in (
        ("minimum", lambda v: v - 1),
        ("exclusiveMinimum", lambda v: v),
        ("maximum", lambda v: v + 1),
        ("exclusiveMaximum", lambda v: v),
    ):
        if rule in node:
            yield rule, bad(node[rule])
    if "multipleOf" in node:
        yield "multipleOf", node["multipleOf"] * 3 + 1
    if "enum" in node:
        yield "enum", "no_such_choice"
    if "pattern" in node:
        yield "pattern", "ftp://mirror.example"
    if "minItems" in node:
        yield "minItems", []
    if "maxItems" in node:
        yield "maxItems", [0.0] * (node["maxItems"] + 1)
    if node.get("uniqueItems") and isinstance(value, list) and value:
        yield "uniqueItems", [value[0], value[0]]
    if "items" in node and isinstance(value, list) and value:
        for rule, bad in _broken_values(node["items"], value[0]):
            yield f"items.{rule}", [bad, *value[1:]]
    if "minProperties" in node:
        yield "minProperties", {}


def _child(node: dict, key: str) -> dict | None:
    props = node.get("properties", {})
    if key in props:
        return props[key]
    extra = node.get("additionalProperties")
    return extra if isinstance(extra, dict) else None


def schema_cases(cfg: dict) -> Iterator[Case]:
    """One case per (key, broken rule), an unknown key at every level, each required key gone."""

    def walk(node: dict, value: Any, path: list[str]) -> Iterator[Case]:
        where = ".".join(path)
        if isinstance(value, dict):
            yield (
                f"{where or 'config'}: unknown key",
                _set(cfg, path, {**value, "bogus": 1}),
                (".".join([*path, "bogus"])),
            )
            for req in node.get("required", []):
                if req in value and len(path) > 0:
                    smaller = {k: v for k, v in value.items() if k != req}
                    yield f"{where}: {req} removed", _set(cfg, path, smaller), f"{where}.{req}"
            for key, sub_value in value.items():
                sub = _child(node, key)
                if sub is not None:
                    yield from walk(sub, sub_value, [*path, key])
        if path:
            for rule, bad in _broken_values(node, value):
                yield f"{where}: {rule}", _set(cfg, path, bad), where

    yield from walk(schema.schema(), cfg, [])


def _set(cfg: dict, path: list[str], value: Any) -> dict:
    out = copy.deepcopy(cfg)
    if not path:
        return value
    node = out
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return out


def _with(cfg: dict, path: str, value: Any) -> dict:
    return _set(cfg, path.split("."), value)


def cross_field_cases(demo: dict, paper: dict) -> Iterator[Case]:
    """The rules a schema cannot say, one broken at a time."""
    aoi = "aois.nouvelle_aquitaine"
    real = paper["aois"]["nouvelle_aquitaine"]
    yield "fractions sum", _with(demo, "split.fractions.val", 0.3), "split.fractions"
    window = _with(demo, "prediction.window", 64)
    yield "overlap >= window", _with(window, "prediction.overlap", 64), "prediction.overlap"
    yield "unknown encoder", _with(demo, "models.unet.encoder", "resnet0"), "models.unet.encoder"
    yield "unknown arch", _with(demo, "models.unet.arch", "unet3d"), "models.unet.arch"
    yield (
        "decoder length",
        _with(demo, "models.unet.decoder_channels", [16, 8]),
        "models.unet.decoder_channels",
    )
    crs = "aois.demo.synthetic.crs"
    yield "synthetic CRS unknown", _with(demo, crs, "EPSG:0"), crs
    yield "synthetic CRS in degrees", _with(demo, crs, "EPSG:4326"), crs
    yield "bbox inverted", _with(paper, f"{aoi}.aoi.bbox", [1.0, 1.0, 0.0, 0.0]), f"{aoi}.aoi"
    both = {**real["aoi"], "path": "aoi.gpkg"}
    yield "path and bbox", _with(paper, f"{aoi}.aoi", both), f"{aoi}.aoi"
    neither = {**real["aoi"], "bbox": None}
    yield "neither path nor bbox", _with(paper, f"{aoi}.aoi", neither), f"{aoi}.aoi"
    metres = {**real["aoi"], "crs": "EPSG:4326"}
    yield "bbox in metres, crs degrees", _with(paper, f"{aoi}.aoi", metres), f"{aoi}.aoi"
    yield "unknown bbox crs", _with(paper, f"{aoi}.aoi.crs", "EPSG:0"), f"{aoi}.aoi.crs"
    yield (
        "unknown target crs",
        _with(paper, f"{aoi}.aoi.target_crs", "EPSG:0"),
        (f"{aoi}.aoi.target_crs"),
    )
    no_archives = {**real["dsm"], "archives": []}
    yield "rge_alti without archives", _with(paper, f"{aoi}.dsm", no_archives), f"{aoi}.dsm"
    local = {**real["dsm"], "source": "local", "path": None}
    yield "local DSM without path", _with(paper, f"{aoi}.dsm", local), f"{aoi}.dsm.path"
    bad_crs = {**real["dsm"], "source": "local", "path": "dsm.tif", "crs": "EPSG:0"}
    yield "local DSM crs unknown", _with(paper, f"{aoi}.dsm", bad_crs), f"{aoi}.dsm.crs"
    synthetic_section = {**real, "synthetic": {}}
    yield "real AOI with a synthetic section", _with(paper, aoi, synthetic_section), aoi


def all_cases() -> list[Case]:
    demo, paper = _base("config.yaml"), _base("paper.yaml")
    return [*schema_cases(demo), *schema_cases(paper), *cross_field_cases(demo, paper)]


def verdict(cfg: dict, key: str) -> str:
    """good: one line naming ``key``; poor: anything else raised; wrong: accepted."""
    try:
        config.check_config(copy.deepcopy(cfg))
    except ConfigError as exc:
        line = str(exc)
        named = key in line or key.replace(".<name>", "") in line
        return "good" if named and "\n" not in line and len(line) < 400 else "poor"
    except Exception:  # a traceback where a line was promised
        return "poor"
    return "wrong"


CASES = all_cases()


@pytest.mark.parametrize("case", range(len(CASES)), ids=[c[0] for c in CASES])
def test_each_broken_rule_is_one_line_naming_the_key(case):
    what, cfg, key = CASES[case]
    try:
        config.check_config(copy.deepcopy(cfg))
    except ConfigError as exc:
        line = str(exc)
        assert "\n" not in line and len(line) < 400, line
        assert key in line, f"{what}: the line must name {key}: {line}"
        return
    pytest.fail(f"{what}: accepted silently")


def test_the_cases_cover_every_section():
    keys = {c[2].split(".")[0] for c in CASES}
    assert {"aois", "downloads", "tiling", "split", "models", "training", "prediction"} <= keys
    assert "seeds" in keys and len(CASES) > 150


if __name__ == "__main__":
    counts = Counter(verdict(cfg, key) for _, cfg, key in CASES)
    print(f"{len(CASES)} cases: {dict(counts)}")
    for what, cfg, key in CASES:
        if verdict(cfg, key) != "good":
            print("  not good:", what)
