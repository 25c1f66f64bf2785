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
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import pandas as pd
import rasterio
from scipy import ndimage

from aefheight.core.errors import ConfigError, TooFewPatches
from aefheight.core.files import atomic_path, write_csv
from aefheight.core.names import CODES, SPLITS
from aefheight.core.raster import Grid, open_raster
from aefheight.core.steps import step

if TYPE_CHECKING:  # geopandas only where the split is written (the AOA step reads the strips)
    import geopandas as gpd

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
    folds: int  # 0 = no cross-validation; k >= 2 = k contiguous strips, each held out in turn

    def check(self, section: str) -> None:
        """Cross-field rule: the three fractions add up to 1."""
        if self.folds in (1, 2):  # with 2, each fold trains on one strip: no CV for the AOA
            raise ConfigError(
                f"{section}.folds: {self.folds} leaves each fold's training area in one strip, so "
                "the area of applicability has no other fold to take its threshold from; use 0 "
                "(off) or >= 3"
            )
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


def line_folds(per_line: np.ndarray, folds: int) -> np.ndarray:
    """Fold of every line (column for axis x, row for y) from its covered-pixel count.

    Lines in order, cut into ``folds`` runs holding ~1/k of the covered pixels each.
    """
    per_line = np.asarray(per_line, np.float64)
    before = np.cumsum(per_line) - per_line  # covered pixels before each line
    return np.minimum((before * folds / max(per_line.sum(), 1)).astype(np.int64), folds - 1)


def fold_strips(cov: np.ndarray, axis: str, folds: int) -> np.ndarray:
    """Fold of every pixel (-1 outside ``cov``): ``folds`` strips of ~1/k of ``cov`` each.

    Strips run along ``axis`` (x: columns west to east; y: rows north to south). Whole lines go
    to one fold, so the strips partition the covered AOI: every pixel is held out exactly once.
    The AOA step recomputes the same strips from ``split.tif`` (non-zero = covered) with
    :func:`line_folds`, so both see identical folds.
    """
    fold = line_folds(cov.sum(axis=0 if axis == "x" else 1), folds)
    fold = fold[None, :] if axis == "x" else fold[:, None]
    return np.where(cov, np.broadcast_to(fold, cov.shape), -1)


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


def test_area(
    index: pd.DataFrame, cov: np.ndarray, s: SplitSettings, fold: int | None
) -> np.ndarray:
    """The test pixels: fold ``fold``'s strip (k-fold), else the configured method's area."""
    if fold is not None:
        return fold_strips(cov, s.axis, s.folds) == fold
    if s.method == "contiguous":
        return contiguous_test_area(cov, s)
    return block_test_area(index, cov, s)


def label_pixels(
    index: pd.DataFrame, shape: tuple[int, int], s: SplitSettings, fold: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Split labels per patch (``train``/``val``/``test``/``buffer``) and per pixel (codes).

    ``fold`` (0 .. ``s.folds`` - 1) holds out that k-fold strip instead of the configured
    test area; buffer and validation follow the same rules.
    """
    cov = coverage(index, shape)
    test = test_area(index, cov, s, fold)
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
    how = s.method if fold is None else f"fold {fold} of {s.folds}"
    log.info("split (%s, val %s): %s patches", how, s.val, counts)
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
    fold: int | None = None,
) -> gpd.GeoDataFrame:
    """Assign splits; write the patches' GeoPackage, the pixel label raster and the areas.

    With ``fold``, the test area is that k-fold strip (rule ``split_fold``).
    """
    if fold is not None and not 0 <= fold < s.folds:
        raise ConfigError(f"--fold {fold}: split.folds is {s.folds}, so folds are 0..{s.folds - 1}")
    import geopandas as gpd

    index = gpd.read_parquet(index_path)
    with open_raster(grid_raster) as ds:
        grid = Grid.of(ds)
    labels, pix = label_pixels(index, (grid.height, grid.width), s, fold)
    method = s.method if fold is None else "kfold"
    index["split"] = labels
    with atomic_path(gpkg_path) as tmp:
        index.to_file(tmp, driver="GPKG", layer="patches")
    with atomic_path(raster_path) as tmp:
        with rasterio.open(tmp, "w", **grid.profile(1, "uint8", 0)) as dst:
            dst.write(pix, 1)
            dst.update_tags(
                codes=",".join(f"{v}:{k}" for k, v in CODES.items()),
                method=method,
                fold="" if fold is None else str(fold),
                folds=str(s.folds),
                val=s.val,
                buffer_px=str(s.buffer_px),
            )
    px_area = abs(grid.transform.a * grid.transform.e)
    areas = area_table(pix, px_area).assign(method=method, val=s.val, buffer_px=s.buffer_px)
    write_csv(areas, areas_path)
    log.info("realized areas: %s", areas[["split", "area_km2", "pct"]].to_dict("records"))
    return index


@step
def split(
    *,
    settings: SplitSettings,
    index: Path,
    grid: Path,
    gpkg: Path,
    raster: Path,
    areas: Path,
    fold: int | None = None,
) -> None:
    """Split the AOI's pixels into train/val/test (or hold out k-fold strip ``fold``).

    Args:
        settings: The config's ``split`` section (JSON; ``'{}'`` for the defaults).
        index: The patch index (which pixels hold data).
        grid: A raster on the AOI grid (the embeddings) the split raster copies.
        gpkg: Written: the split's polygons, one layer.
        raster: Written: the split's codes per pixel (train, validation, test, buffer).
        areas: Written: the realized share of each split (pixels and per cent).
        fold: The k-fold strip to hold out as test; without it, the single split.
    """
    write_split(index, grid, gpkg, raster, areas, settings, fold=fold)
