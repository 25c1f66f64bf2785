"""The whole config: read, checked once before any job, and its key reference.

:func:`load_yaml` reads a config file, naming the file, line and column of a syntax error
(``python -m aefheight.config FILE...`` checks files so before ``make study`` runs Snakemake).

:func:`check_config` fills the schema's defaults into the config (in place, so every rule sees
them), checks it against ``workflow/schemas/config.schema.yaml``, then builds every section's
settings class so the cross-field rules run for every section: synthetic and real AOIs,
downloads, tiling, split, models, training and prediction.

``python -m aefheight.config --key-tables`` prints config/README.md's key tables from the
schema (a test checks the file is current).
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from aefheight.core.errors import ConfigError
from aefheight.core.schema import from_mapping, schema, validate_section
from aefheight.models.kinds import BASELINE_ARCHS, COARSE_DEM


def corrections(config: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Corrected predictions of a (filled) config: ``{"<model>_<method>": (model, method)}``.

    Raises :class:`~aefheight.core.errors.ConfigError` for a model that is not in ``models`` or
    is a coarse DEM, and for a corrected name that is also a model's name.
    """
    models, c = config["models"], config["correction"]
    names = c["models"]
    if names is None:
        names = [m for m, s in models.items() if s["arch"] not in BASELINE_ARCHS]
    out = {}
    for name in names:
        if models.get(name, {}).get("arch", COARSE_DEM) == COARSE_DEM:
            raise ConfigError(
                f"correction.models: {name!r} is not a learned model of `models` "
                f"({', '.join(m for m, s in models.items() if s['arch'] != COARSE_DEM)})"
            )
        for method in c["methods"]:
            out[f"{name}_{method}"] = (name, method)
    clash = sorted(set(out) & set(models))
    if clash:
        raise ConfigError(
            f"models.{clash[0]}: the name is also a corrected prediction's "
            "(<model>_<method>); rename the model"
        )
    return out


def _same_area(aoi: dict[str, Any]) -> dict[str, Any]:
    """What two products of one area share: the synthetic AOI but its product, or the area."""
    if aoi["source"] == "synthetic":
        return {k: v for k, v in aoi["synthetic"].items() if k not in ("product", "bands")}
    return {k: aoi.get(k) for k in ("aoi", "dsm", "year")}


def product_pairs(config: dict[str, Any]) -> list[tuple[str, str]]:
    """The (filled) config's ``compare_products`` pairs, each two AOIs of one area.

    Raises :class:`~aefheight.core.errors.ConfigError` for a name that is not an AOI, a pair of
    one AOI, or two AOIs whose area, DSM or year differ (or whose synthetic AOIs differ in more
    than their product): the products must meet the same pixels.
    """
    pairs = []
    for i, pair in enumerate(config["compare_products"]):
        key = f"compare_products[{i}]"
        a, b = pair
        for name in pair:
            if name not in config["aois"]:
                raise ConfigError(f"{key}: {name!r} is not an AOI of `aois`")
        if a == b:
            raise ConfigError(f"{key}: compare two AOIs, not {a!r} with itself")
        if _same_area(config["aois"][a]) != _same_area(config["aois"][b]):
            raise ConfigError(
                f"{key}: aois.{a} and aois.{b} cover different areas (their aoi, dsm and year, "
                "or synthetic settings other than product and bands, differ): products are "
                "compared on the same pixels; give both the same area"
            )
        pairs.append((a, b))
    return pairs


def fill_defaults(config: dict[str, Any]) -> None:
    """Check ``config`` against the schema and fill in its defaults, in place."""
    filled = validate_section(config, "")
    config.clear()
    config.update(filled)


def check_sections(config: dict[str, Any]) -> None:
    """Run every section's cross-field rules (needs the steps' libraries: smp, PROJ)."""
    from aefheight.inputs.shards import ShardingSettings
    from aefheight.inputs.sources.spec import DownloadSettings, RealAOISettings
    from aefheight.inputs.synthetic import SyntheticSettings
    from aefheight.models.factory import ModelSettings
    from aefheight.predict.infer import PredictSettings
    from aefheight.predict.intervals import IntervalSettings
    from aefheight.split.spatial import SplitSettings
    from aefheight.tiles.patches import TilingSettings
    from aefheight.train.fit import TrainSettings

    for name, aoi in config["aois"].items():
        if aoi["source"] == "synthetic":
            from_mapping(SyntheticSettings, aoi["synthetic"], f"aois.{name}.synthetic")
        else:
            from_mapping(RealAOISettings, aoi, f"aois.{name}")
    from_mapping(DownloadSettings, config["downloads"], "downloads")
    from_mapping(TilingSettings, config["tiling"], "tiling")
    from_mapping(SplitSettings, config["split"], "split")
    from_mapping(TrainSettings, config["training"], "training")
    from_mapping(PredictSettings, config["prediction"], "prediction")
    from_mapping(IntervalSettings, config["intervals"], "intervals")
    from_mapping(ShardingSettings, config["sharding"], "sharding")
    for name, model in config["models"].items():
        from_mapping(ModelSettings, model, f"models.{name}")
    corrections(config)
    product_pairs(config)


def check_config(config: dict[str, Any]) -> None:
    """Raise :class:`~aefheight.core.errors.ConfigError` naming the first bad key; fill defaults."""
    fill_defaults(config)
    check_sections(config)


def _rows(node: dict[str, Any], key: str) -> list[tuple[str, str, str]]:
    """(key, default, description) of ``node`` and every key below it."""
    rows = []
    if key and "description" in node:
        default = json.dumps(node["default"]) if "default" in node else "—"
        rows.append((key, default, " ".join(node["description"].split())))
    for name, sub in node.get("properties", {}).items():
        if "description" in sub:  # fractions' train/val/test have none: one row for the three
            rows += _rows(sub, f"{key}.{name}" if key else name)
    if isinstance(node.get("additionalProperties"), dict):
        rows += _rows(node["additionalProperties"], f"{key}.<name>")
    return rows


def key_tables() -> str:
    """config/README.md's key tables: the study's keys, then the real-AOI keys."""
    study: list[tuple[str, str, str]] = []
    real: list[tuple[str, str, str]] = []
    real_only = (
        "aois.<name>.aoi",
        "aois.<name>.dsm",
        "aois.<name>.year",
        "aois.<name>.allow_partial_coverage",
        "aois.<name>.embeddings",
        "downloads",
    )
    for row in _rows(schema(), ""):
        (real if row[0].startswith(real_only) else study).append(row)
    out = []
    for title, rows in (("Every key", study), ("Real AOIs and downloads", real)):
        out += [f"### {title}", "", "| key | default | what it does |", "|---|---|---|"]
        out += [f"| `{k}` | `{d}` | {text} |" for k, d, text in rows]
        out.append("")
    return "\n".join(out)


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    """A YAML config file as a mapping; a syntax error names the file, line and column."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the config file ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        raise ConfigError(
            f"{where}: not valid YAML ({exc.problem or exc.context}); fix the file there"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}); fix the file") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file is a mapping of keys (aois:, models:, ...)")
    return data


def main(argv: list[str]) -> int:
    """``--key-tables``: print the key tables; ``FILE...``: check config files parse."""
    if argv == ["--key-tables"]:
        sys.stdout.write(key_tables())
        return 0
    try:
        for path in argv:
            load_yaml(path)
    except ConfigError as exc:
        print(f"aefheight: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
