"""What a training reads from the split: each part's patches, loss masks and target scale.

Loss masks come from the split raster: buffer pixels near the test area never enter a loss.
The target's mean and SD (and the coarse DEM's relief SD) are computed over train pixels only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd

from aefheight.core import embeddings
from aefheight.core.dem import DemUse, dem_relief
from aefheight.core.errors import NoValidData
from aefheight.core.names import CODES
from aefheight.core.raster import open_raster
from aefheight.tiles.store import PatchStore


@dataclass
class SplitPatches:
    """The patches of one split: store ids, origins (row, col) and loss masks (N, P, P)."""

    ids: np.ndarray
    origins: np.ndarray
    masks: np.ndarray


def split_patches(
    split_gpkg: Path, split_tif: Path, store: PatchStore | None = None
) -> dict[str, SplitPatches]:
    """The train and val patches, with their loss masks (pixels of the split in ``split.tif``).

    ``store``: the patch store they will be read from, checked against the index.
    """
    df = gpd.read_file(split_gpkg, layer="patches", ignore_geometry=True)
    if store is not None:
        store.check_index(df)
    out = {}
    for name in ("train", "val"):
        sub = df[df["split"] == name]
        out[name] = SplitPatches(
            sub["patch_id"].to_numpy(),
            sub[["row", "col"]].to_numpy(np.int64),
            loss_masks(split_tif, sub, name),
        )
    return out


def with_valid_data(store: PatchStore, part: SplitPatches) -> SplitPatches:
    """``part`` whose masks also require valid embeddings and a valid reference height.

    Reads one band of the embeddings (nodata is in every band at once) and the DSM per patch, so
    that each epoch's windows are drawn on the pixels that will enter the loss.
    """
    masks = part.masks.copy()
    for i, k in enumerate(part.ids):
        first = np.asarray(store.embeddings[k][:1])
        masks[i] &= embeddings.valid_mask(first)[0] & ~np.isnan(np.asarray(store.dsm[k]))
    return SplitPatches(part.ids, part.origins, masks)


def _masked_values(store: PatchStore, k: int, mask: np.ndarray, dem: DemUse | None) -> np.ndarray:
    """Patch ``k``'s target values where valid and in ``mask`` (float64)."""
    z = np.asarray(store.dsm[k], dtype=np.float64)
    if dem is not None and store.coarse_dem is not None:
        c = np.asarray(store.coarse_dem[k], dtype=np.float64)
        z = z - c if dem.residual else np.where(np.isnan(c), np.nan, z)
    return z[~np.isnan(z) & mask]


def _mean_sd(chunks: Iterable[np.ndarray], what: str) -> tuple[float, float]:
    n, s1, s2 = 0, 0.0, 0.0
    for z in chunks:
        n, s1, s2 = n + z.size, s1 + z.sum(), s2 + (z * z).sum()
    if n == 0:
        raise NoValidData(f"the train patches hold no valid {what}")
    mean = s1 / n
    return mean, max(float(np.sqrt(max(s2 / n - mean * mean, 0.0))), 1e-6)


def target_stats(
    store: PatchStore,
    ids: np.ndarray,
    masks: np.ndarray | None = None,
    dem: DemUse | None = None,
) -> tuple[float, float]:
    """Mean and SD of the valid (unmasked) targets over the patches (float64).

    The target is the height, or reference minus coarse DEM for ``dem.residual``.
    """
    full = np.ones(store.dsm.shape[1:], bool)
    chunks = (
        _masked_values(store, k, full if masks is None else masks[i], dem)
        for i, k in enumerate(ids)
    )
    return _mean_sd(chunks, "height")


def relief_sd(store: PatchStore, ids: np.ndarray, masks: np.ndarray) -> float:
    """SD of the coarse DEM's relief (:func:`~aefheight.core.dem.dem_relief`) over train pixels."""
    assert store.coarse_dem is not None
    chunks = (dem_relief(np.asarray(store.coarse_dem[k]))[masks[i]] for i, k in enumerate(ids))
    return _mean_sd((c.astype(np.float64) for c in chunks), "coarse DEM")[1]


def loss_masks(split_tif: Path, index: pd.DataFrame, name: str) -> np.ndarray:
    """Per patch of ``index``, the pixels labelled ``name`` in ``split.tif`` (N, P, P) bool."""
    with open_raster(split_tif, bands=1) as ds:
        out = []
        for r, c, p in index[["row", "col", "size"]].itertuples(index=False):
            out.append(ds.read(1, window=((r, r + p), (c, c + p))) == CODES[name])
    return np.stack(out) if out else np.zeros((0, 0, 0), bool)
