"""The seed ensemble: the mean of one model's seeds' predictions, scored as a model of its own.

Use it as the challenge's best teams submit: one map per model, its seeds averaged. A pixel is
nodata where any seed's prediction is (so the ensemble is scored on the seeds' common pixels).
Streamed block by block; memory is one block per seed.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np
import rasterio

from aefheight.core.errors import ConfigError
from aefheight.core.files import scratch_path
from aefheight.core.names import ENSEMBLE
from aefheight.core.raster import Grid, check_same_grid, open_raster, read_dsm_block, to_cog
from aefheight.core.steps import step
from aefheight.predict import PRED_NODATA

log = logging.getLogger(__name__)

ENSEMBLE_SEED = -1  # its seed in the metrics tables: no one seed


def write_ensemble(predictions: list[Path], out: Path, model: str) -> None:
    """Write the pixel-wise mean of ``predictions`` (one model's seeds) as a COG at ``out``."""
    if len(predictions) < 2:
        raise ConfigError(f"an ensemble of {model} needs two seeds or more; add seeds")
    with contextlib.ExitStack() as stack:
        srcs = [stack.enter_context(open_raster(p, bands=1)) for p in predictions]
        grid = Grid.of(srcs[0])
        for s in srcs[1:]:
            check_same_grid(grid, Grid.of(s), srcs[0].name, s.name)
        seeds = ",".join(s.tags().get("seed", "?") for s in srcs)
        with scratch_path(out, ".tif") as tmp:
            with rasterio.open(tmp, "w", **grid.profile(1, "float32", PRED_NODATA)) as dst:
                for _, win in srcs[0].block_windows(1):
                    mean = np.mean([read_dsm_block(s, win) for s in srcs], axis=0)  # NaN: nodata
                    mean = np.where(np.isnan(mean), PRED_NODATA, mean)
                    dst.write(mean.astype(np.float32), 1, window=win)
                tags = {"model": f"{model}_{ENSEMBLE}", "seed": str(ENSEMBLE_SEED)}
                dst.update_tags(units="m", seeds=seeds, quantity="mean of the seeds", **tags)
                dst.set_band_description(1, "height_m")
            to_cog(tmp, out)
    log.info("wrote %s: the mean of %d seeds (%s) of %s", out, len(srcs), seeds, model)


@step
def ensemble(*, model: str, predictions: list[Path], prediction: Path) -> None:
    """Write the mean of one model's seeds' predictions (its seed ensemble).

    Args:
        model: The model's name (the ensemble is ``<model>_ensemble``).
        predictions: Every seed's prediction of the model, on one grid.
        prediction: Written: the mean height map, a COG (nodata where any seed has none).
    """
    write_ensemble(predictions, prediction, model)
