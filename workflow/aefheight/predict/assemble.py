"""The shards' predictions joined into one COG (kept apart from :mod:`.infer`: no torch)."""

from __future__ import annotations

from pathlib import Path

from aefheight.core.raster import mosaic_cog
from aefheight.core.steps import step


@step
def assemble_prediction(*, shards: list[Path], prediction: Path, threads: int = 1) -> None:
    """Write the shards' predictions as one COG of the AOI.

    ``threads`` is GDAL's (the command line sets ``GDAL_NUM_THREADS`` from it).
    """
    mosaic_cog(shards, prediction)
