"""Whole-config check with the steps' own settings classes, for Snakemake at DAG build time.

The JSON schema catches unknown keys and wrong types; this adds what a schema cannot say
(split fractions that do not add up, an architecture or encoder smp does not know, an overlap
not smaller than the window), so a bad config stops before any job runs.
"""

from __future__ import annotations

from typing import Any

from .models import ModelSettings
from .patches import TilingSettings
from .predict import PredictSettings
from .settings import from_mapping
from .split import SplitSettings
from .synthetic import SyntheticSettings
from .train import TrainSettings


def check_config(config: dict[str, Any]) -> None:
    """Raise :class:`~aefheight.errors.ConfigError` naming the first bad key."""
    for name, aoi in config.get("aois", {}).items():
        if aoi.get("source") == "synthetic":
            from_mapping(SyntheticSettings, aoi.get("synthetic"), f"aois.{name}.synthetic")
    from_mapping(TilingSettings, config.get("tiling"), "tiling")
    from_mapping(SplitSettings, config.get("split"), "split")
    from_mapping(TrainSettings, config.get("training"), "training")
    from_mapping(PredictSettings, config.get("prediction"), "prediction")
    for name, model in config.get("models", {}).items():
        from_mapping(ModelSettings, model, f"models.{name}")
