"""Spatial train/val/test split of the AOI, with a pixel-level leakage buffer.

``contiguous`` puts one contiguous test area on one side of the AOI (the paper: ~30 % on one
side, the rest train/validation), cut at pixel level so that the test area holds the configured
fraction of the patch-covered AOI; ``blocks`` assigns square blocks of patches to test at
random, like a checkerboard. Then:

* a patch that reaches into the test area is a ``test`` patch (never trained on);
* every other pixel within ``buffer_px`` (chessboard distance) of the test area is ``buffer``:
  masked out of every loss and fit, and of the metrics; a train/val patch keeps its pixels
  farther away, so a buffer costs a strip of ``buffer_px``, not a patch column;
* validation patches are drawn from the rest: ``random`` (anywhere among them) or ``spatial``
  (the ones nearest the test area: a band next to the buffer, which sees the shift).

``split.tif`` holds the label of every pixel (its codes in :data:`CODES`); training reads its
loss masks from it and evaluation its areas, so both count exactly the same pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from scipy import ndimage

from .errors import ConfigError, TooFewPatches
from .files import atomic_path, write_csv
from .names import CODES, SPLITS
from .raster import Grid, open_raster

log = logging.getLogger(__name__)

MIN_KEPT_FRACTION = 0.25  # a train/val patch needs this share of its pixels outside the buffer


@dataclass(frozen=True)
class SplitSettings:
    """Settings of the split step (config ``split``)."""

    SECTION: ClassVar[str] = "split"
    method: str  # contiguous | blocks
    fractions: dict[str, float]
    axis: str  # contiguous: the test area is cut along this axis
    test_side: str  # contiguous: max = east (x) or north (y); min = west or south
    block_patches: int  # blocks: block side, in patches
    buffer_px: int  # train/val pixels this close to the test area are masked
    val: str  # random | spatial (the patches nearest the test area)
    seed: int

    def check(self, section: str) -> None:
        """Cross-field rule: the three fractions add up to 1."""
        total = sum(self.fractions.values())
        if abs(total - 1.0) > 1e-6 or min(self.fractions.values()) <= 0:
            raise ConfigError(
                f"{section}.fractions must be positive and add up to 1, "
                f"got {self.fractions} (sum {total:g})"
            )


def coverage(index: pd.DataFrame, shape: tuple[int, int]) -> np.ndarray:
    """Pixels covered by at least one kept patch."""
    cov = np.zeros(shape, bool)
    for r, c, p in index[["row", "col", "size"]].itertuples(index=False):
        cov[r : r + p, c : c + p] = True
    return cov


def contiguous_test_area(cov: np.ndarray, s: SplitSettings) -> np.ndarray:
    """The covered pixels of one side strip holding ``fractions.test`` of the covered area."""
    per_line = cov.sum(axis=0 if s.axis == "x" else 1).astype(np.float64)
    # pixel rows grow southwards: the north (max) side is the first rows
    from_max = (s.axis == "x") == (s.test_side == "max")
    order = per_line[::-1] if from_max else per_line
    cum = np.cumsum(order)
    k = int(np.searchsorted(cum, s.fractions["test"] * cum[-1])) + 1  # lines in the strip
    line = np.zeros(per_line.size, bool)
    line[-k:] = from_max
    line[:k] |= not from_max
    strip = line[None, :] if s.axis == "x" else line[:, None]
    return cov & strip


def block_test_area(index: pd.DataFrame, cov: np.ndarray, s: SplitSettings) -> np.ndarray:
    """Random blocks of ``block_patches`` patches, until ``fractions.test`` of the patches."""
    rng = np.random.default_rng(s.seed)
    rows, cols, size = (index[c].to_numpy(np.int64) for c in ("row", "col", "size"))
    block_id = (rows // (s.block_patches * size)) * 1_000_003 + cols // (s.block_patches * size)
    blocks = np.unique(block_id)
    rng.shuffle(blocks)
    n_test = max(1, round(s.fractions["test"] * len(index)))
    chosen = np.zeros(len(index), bool)
    for blk in blocks:
        if chosen.sum() >= n_test:
            break
        chosen |= block_id == blk
    return coverage(index[chosen], cov.shape)


def _window_stat(
    a: np.ndarray, index: pd.DataFrame, fn: Callable[[np.ndarray], np.generic]
) -> np.ndarray:
    return np.array(
        [fn(a[r : r + p, c : c + p]) for r, c, p in index[["row", "col", "size"]].itertuples(False)]
    )


def label_pixels(
    index: pd.DataFrame, shape: tuple[int, int], s: SplitSettings
) -> tuple[np.ndarray, np.ndarray]:
    """Split labels per patch (``train``/``val``/``test``/``buffer``) and per pixel (codes)."""
    cov = coverage(index, shape)
    test = (
        contiguous_test_area(cov, s) if s.method == "contiguous" else block_test_area(index, cov, s)
    )
    # chessboard distance of every pixel to the nearest test pixel (0 inside the test area)
    dist = ndimage.distance_transform_cdt(~test, metric="chessboard") if test.any() else None
    if dist is None:
        raise TooFewPatches("the split put no pixel into the test area; use a larger AOI")
    near = dist <= s.buffer_px
    labels = np.full(len(index), "buffer", dtype=object)
    touches_test = _window_stat(test, index, np.any)
    kept = _window_stat(~near, index, np.mean)
    gap = _window_stat(dist, index, np.min)
    labels[touches_test] = "test"
    candidates = np.flatnonzero(~touches_test & (kept >= MIN_KEPT_FRACTION))
    labels[candidates] = "train"
    f = s.fractions
    n_val = round(f["val"] / (f["train"] + f["val"]) * len(candidates))
    n_val = min(max(1, n_val), max(0, len(candidates) - 1))
    if s.val == "spatial":  # nearest the test area first; ties in index order
        val = candidates[np.argsort(gap[candidates], kind="stable")[:n_val]]
    else:
        val = np.random.default_rng(s.seed).choice(candidates, n_val, replace=False)
    labels[val] = "val"
    counts = {k: int((labels == k).sum()) for k in (*SPLITS, "buffer")}
    if any(counts[k] == 0 for k in SPLITS):
        raise TooFewPatches(
            f"the split needs at least 1 train, 1 val and 1 test patch; {len(index)} patches "
            f"give {counts} (buffer = patches mostly within split.buffer_px of the test area). "
            "Use a larger AOI, a smaller tiling.patch_size or tiling.stride, a smaller "
            "split.buffer_px, another split.block_patches or another split.method"
        )
    pix = np.where(cov, CODES["unused"], 0).astype(np.uint8)
    for name in ("train", "val"):  # val painted last: it wins where patches overlap
        for r, c, p in index.loc[labels == name, ["row", "col", "size"]].itertuples(index=False):
            pix[r : r + p, c : c + p] = CODES[name]
    pix[near & cov] = CODES["buffer"]
    pix[test] = CODES["test"]
    log.info("split (%s, val %s): %s patches", s.method, s.val, counts)
    return labels, pix


def area_table(pix: np.ndarray, pixel_area_m2: float) -> pd.DataFrame:
    """Realized area of every split label: pixels, km² and % of the patch-covered AOI."""
    covered = int((pix > 0).sum())
    rows = []
    for name, code in CODES.items():
        n = int((pix == code).sum())
        rows.append(
            {
                "split": name,
                "pixels": n,
                "area_km2": n * pixel_area_m2 / 1e6,
                "pct": 100.0 * n / covered if covered else float("nan"),
            }
        )
    return pd.DataFrame(rows)


def write_split(
    index_path: Path,
    grid_raster: Path,
    gpkg_path: Path,
    raster_path: Path,
    areas_path: Path,
    s: SplitSettings,
) -> gpd.GeoDataFrame:
    """Assign splits; write the patches' GeoPackage, the pixel label raster and the areas."""
    index = gpd.read_parquet(index_path)
    with open_raster(grid_raster) as ds:
        grid = Grid.of(ds)
    labels, pix = label_pixels(index, (grid.height, grid.width), s)
    index["split"] = labels
    with atomic_path(gpkg_path) as tmp:
        index.to_file(tmp, driver="GPKG", layer="patches")
    with atomic_path(raster_path) as tmp:
        with rasterio.open(tmp, "w", **grid.profile(1, "uint8", 0)) as dst:
            dst.write(pix, 1)
            dst.update_tags(
                codes=",".join(f"{v}:{k}" for k, v in CODES.items()),
                method=s.method,
                val=s.val,
                buffer_px=str(s.buffer_px),
            )
    px_area = abs(grid.transform.a * grid.transform.e)
    areas = area_table(pix, px_area).assign(method=s.method, val=s.val, buffer_px=s.buffer_px)
    write_csv(areas, areas_path)
    log.info("realized areas: %s", areas[["split", "area_km2", "pct"]].to_dict("records"))
    return index


def loss_masks(split_tif: Path, index: pd.DataFrame, name: str) -> np.ndarray:
    """Per patch of ``index``, the pixels labelled ``name`` in ``split.tif`` (N, P, P) bool."""
    with open_raster(split_tif, bands=1) as ds:
        out = []
        for r, c, p in index[["row", "col", "size"]].itertuples(index=False):
            out.append(ds.read(1, window=((r, r + p), (c, c + p))) == CODES[name])
    return np.stack(out) if out else np.zeros((0, 0, 0), bool)
