"""Shards: an AOI cut into a grid of independent jobs (config ``sharding.shard_px``).

Use sharding when an AOI outgrows one job per step (a region, a country): tiling, prediction
and evaluation then run one job per shard, side by side on a cluster, and a rerun repeats only
a failed shard. Shard ``r<i>c<j>`` covers rows ``[i S, (i + 1) S)`` and columns
``[j S, (j + 1) S)`` of the AOI's grid (``S = shard_px``, clipped at the AOI's edges).

A shard owns the patches whose origin lies in it and the prediction pixels inside it; it reads
past its edges whatever those need (a patch's far side, the windows reaching in from its
neighbours), so every sharded output equals the unsharded one pixel for pixel. ``shard_px`` is
a multiple of :data:`BLOCK_PX`, the blocks whose statistics evaluation merges in one fixed
order (:mod:`aefheight.evaluate.metrics`): metrics do not depend on the shard size either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from aefheight.core.errors import ConfigError

if TYPE_CHECKING:  # rasterio only where a window is made: the Snakefile imports this module
    from rasterio.windows import Window

# Evaluation blocks (metrics.evaluate_prediction): the GeoTIFF blocks we write (raster.BLOCK; not
# imported, so that the Snakefile can import this module without rasterio); shards are whole
# blocks.
BLOCK_PX = 256
NAME = re.compile(r"r(\d+)c(\d+)")


@dataclass(frozen=True)
class ShardingSettings:
    """Settings of sharding (config ``sharding``)."""

    SECTION: ClassVar[str] = "sharding"
    shard_px: int | None  # None: one job per AOI and step


def shard_names(height: int, width: int, shard_px: int) -> list[str]:
    """Names of the shards of a ``height`` x ``width`` px AOI, row by row."""
    rows, cols = -(-height // shard_px), -(-width // shard_px)
    return [f"r{i}c{j}" for i in range(rows) for j in range(cols)]


def shard_window(name: str, height: int, width: int, shard_px: int) -> Window:
    """The pixel window of shard ``name`` in a ``height`` x ``width`` px AOI."""
    from rasterio.windows import Window

    m = NAME.fullmatch(name)
    if m is None or name not in shard_names(height, width, shard_px):
        raise ConfigError(
            f"shard {name!r} is not one of the {len(shard_names(height, width, shard_px))} "
            f"shards r<i>c<j> of a {width}x{height} px AOI in {shard_px} px shards"
        )
    r0, c0 = int(m[1]) * shard_px, int(m[2]) * shard_px
    return Window(c0, r0, min(shard_px, width - c0), min(shard_px, height - r0))


def shard_of(raster: Path, name: str | None, s: ShardingSettings | None) -> Window | None:
    """The window of shard ``name`` in the AOI of ``raster`` (one of its co-registered inputs).

    A step's ``--shard`` and ``--sharding``: None for no shard (the whole AOI).
    """
    from aefheight.core.raster import open_raster

    if name is None:
        return None
    if s is None:
        raise ConfigError(f"shard {name!r}: --shard needs --sharding (the config's sharding)")
    if s.shard_px is None:
        raise ConfigError(f"shard {name!r}: sharding.shard_px is null; set it to run shards")
    with open_raster(raster) as ds:
        return shard_window(name, ds.height, ds.width, s.shard_px)


def aoi_shape(name: str, aoi: dict) -> tuple[int, int]:
    """(height, width) in px of a configured AOI (filled section ``aois.<name>``).

    Known before any download: a synthetic AOI's size is configured; a real AOI's grid
    follows from its polygon (:func:`aefheight.inputs.sources.aoi.target_grid`).
    """
    if aoi["source"] == "synthetic":
        return int(aoi["synthetic"]["height"]), int(aoi["synthetic"]["width"])
    from aefheight.core.schema import from_mapping
    from aefheight.inputs.sources.aoi import target_grid
    from aefheight.inputs.sources.spec import RealAOISettings

    spec = from_mapping(RealAOISettings, aoi, f"aois.{name}")
    grid = target_grid(name, spec.aoi_spec(f"aois.{name}"), f"aois.{name}.aoi").grid
    return grid.height, grid.width
