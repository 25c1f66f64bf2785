"""Spatial train/val/test split of the patch index, with a leakage buffer.

``contiguous`` puts one contiguous test area on one side of the AOI (the paper: ~30 % on one
side, the rest train/validation); ``blocks`` assigns square blocks of patches to test at random,
like a checkerboard. In both, a train or val patch closer than ``buffer_px`` pixels to a test
patch (touching is distance 0) becomes ``buffer`` and is used by nobody, so no train/val patch
overlaps or touches a test patch.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio

from .errors import ConfigError, TooFewPatches
from .raster import Grid, atomic_path, open_raster

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
CODES = {"train": 1, "val": 2, "test": 3, "buffer": 4}  # values of split.tif; 0 = no patch


@dataclass(frozen=True)
class SplitSettings:
    """Settings of the split step (config ``split``)."""

    method: str = "contiguous"  # contiguous | blocks
    fractions: dict = field(default_factory=lambda: {"train": 0.6, "val": 0.1, "test": 0.3})
    axis: str = "x"  # contiguous: the test area is cut along this axis
    test_side: str = "max"  # contiguous: max = east (x) or north (y); min = west or south
    block_patches: int = 2  # blocks: block side, in patches
    buffer_px: int = 1  # minimum gap between train/val and test footprints, pixels
    seed: int = 0

    def check(self, section: str) -> None:
        if self.method not in ("contiguous", "blocks"):
            raise ConfigError(f"{section}.method must be contiguous or blocks, got {self.method!r}")
        if set(self.fractions) != set(SPLITS):
            raise ConfigError(
                f"{section}.fractions needs exactly the keys train, val, test; "
                f"got {sorted(self.fractions)}"
            )
        total = sum(self.fractions.values())
        if abs(total - 1.0) > 1e-6 or min(self.fractions.values()) <= 0:
            raise ConfigError(
                f"{section}.fractions must be positive and add up to 1, "
                f"got {self.fractions} (sum {total:g})"
            )
        if self.axis not in ("x", "y") or self.test_side not in ("min", "max"):
            raise ConfigError(f"{section}.axis must be x|y and {section}.test_side min|max")
        if self.buffer_px < 1:
            raise ConfigError(f"{section}.buffer_px must be >= 1 (0 would let patches touch)")
        if self.block_patches < 1:
            raise ConfigError(f"{section}.block_patches must be >= 1")


def min_gap(rows: np.ndarray, cols: np.ndarray, size: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Smallest pixel gap from every patch to any test patch (0 = touching, < 0 = overlap)."""
    gaps = np.full(len(rows), np.iinfo(np.int64).max, dtype=np.int64)
    tr, tc, ts = rows[test], cols[test], size[test]
    if len(tr) == 0:
        return gaps
    for start in range(0, len(rows), 1024):  # chunks keep memory at 1024 x n_test
        r, c, s = (a[start : start + 1024, None] for a in (rows, cols, size))
        g = np.maximum.reduce([tr - (r + s), r - (tr + ts), tc - (c + s), c - (tc + ts)])
        gaps[start : start + 1024] = g.min(axis=1)
    return gaps


def assign(index: gpd.GeoDataFrame, s: SplitSettings) -> np.ndarray:
    """The split label of every patch (train, val, test or buffer)."""
    n = len(index)
    rows, cols = index["row"].to_numpy(np.int64), index["col"].to_numpy(np.int64)
    size = index["size"].to_numpy(np.int64)
    rng = np.random.default_rng(s.seed)
    n_test = max(1, round(s.fractions["test"] * n))
    if s.method == "contiguous":
        # rank patches along the axis (pixel rows grow southwards: north is min row)
        key = cols if s.axis == "x" else -rows
        if s.test_side == "min":
            key = -key
        levels = np.unique(key)[::-1]
        counts = np.array([(key >= lv).sum() for lv in levels])
        cut = levels[int(np.argmin(np.abs(counts - n_test)))]
        test = key >= cut
    else:
        b = s.block_patches * size
        block_id = (rows // b) * 1_000_003 + cols // b
        blocks = np.unique(block_id)
        rng.shuffle(blocks)
        test = np.zeros(n, bool)
        for blk in blocks:
            if test.sum() >= n_test:
                break
            test |= block_id == blk
    labels = np.where(test, "test", "train").astype(object)
    gaps = min_gap(rows, cols, size, test)
    labels[(~test) & (gaps < s.buffer_px)] = "buffer"
    candidates = np.flatnonzero(labels == "train")
    n_val = round(
        s.fractions["val"] / (s.fractions["train"] + s.fractions["val"]) * len(candidates)
    )
    n_val = min(max(1, n_val), max(0, len(candidates) - 1))
    labels[rng.choice(candidates, n_val, replace=False) if n_val > 0 else []] = "val"
    counts = {k: int((labels == k).sum()) for k in (*SPLITS, "buffer")}
    short = [k for k in SPLITS if counts[k] == 0]
    if short:
        raise TooFewPatches(
            f"the split needs at least 1 train, 1 val and 1 test patch; {n} patches give "
            f"{counts} (buffer = dropped next to test). Use a larger AOI, a smaller "
            "tiling.patch_size, a smaller split.buffer_px or another split.method"
        )
    log.info("split (%s): %s", s.method, counts)
    return labels


def write_split(
    index_path: Path, grid_raster: Path, gpkg_path: Path, raster_path: Path, s: SplitSettings
) -> gpd.GeoDataFrame:
    """Assign splits and write them as a GeoPackage of footprints and a uint8 label raster."""
    index = gpd.read_parquet(index_path)
    index["split"] = assign(index, s)
    with atomic_path(gpkg_path) as tmp:
        index.to_file(tmp, driver="GPKG", layer="patches")
    with open_raster(grid_raster) as ds:
        grid = Grid.of(ds)
    label = np.zeros((grid.height, grid.width), np.uint8)
    # paint low priority first so test wins over val over train where patches overlap
    for name in ("buffer", "train", "val", "test"):
        for r, c, p in index.loc[index["split"] == name, ["row", "col", "size"]].itertuples(
            index=False
        ):
            label[r : r + p, c : c + p] = CODES[name]
    with atomic_path(raster_path) as tmp:
        with rasterio.open(tmp, "w", **grid.profile(1, "uint8", 0)) as dst:
            dst.write(label, 1)
            dst.update_tags(codes=",".join(f"{v}:{k}" for k, v in CODES.items()))
    return index
