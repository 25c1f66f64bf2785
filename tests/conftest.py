"""Shared fixtures: tiny synthetic rasters built by code with fixed seeds."""

from __future__ import annotations

from pathlib import Path

import pytest
from aefheight.core.schema import make
from aefheight.inputs.synthetic import SyntheticSettings, write_synthetic

TINY = make(SyntheticSettings, width=256, height=192, seed=3, holes=2)


@pytest.fixture(scope="session")
def tiny_settings() -> SyntheticSettings:
    """Settings of the tiny AOI (for tests that regenerate it)."""
    return TINY


@pytest.fixture(scope="session")
def tiny_aoi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A 256 x 192 px synthetic AOI: embeddings, DSM, land cover and coarse DEM GeoTIFFs."""
    d = tmp_path_factory.mktemp("tiny_aoi")
    paths = {k: d / f"{k}.tif" for k in ("embeddings", "dsm", "landcover", "coarse_dem")}
    write_synthetic(TINY, *paths.values())
    return paths
