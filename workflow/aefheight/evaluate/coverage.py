"""Coverage and width of a prediction interval against the reference DSM, streamed by blocks.

Use to tell whether an interval written by :mod:`aefheight.predict.intervals` holds where the
model is used: per split, by reference-height bin (the shift the study is about) and, when the
area of applicability is mapped (``split.folds >= 2``), inside and outside it. Counts are
integers and the width sums float64 added block by block in a fixed order, so a sharded AOI
(whose interval is made from the assembled prediction) gives the same table.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio

from aefheight.core.errors import NoValidData
from aefheight.core.files import write_csv
from aefheight.core.names import CODES, SPLITS
from aefheight.core.raster import Grid, check_same_grid, open_raster, read_checked, read_dsm_block
from aefheight.core.steps import step
from aefheight.evaluate.stats import HEIGHT_BIN

log = logging.getLogger(__name__)

ALL = "all"  # the area and height-bin label of the totals
COLUMNS = ["split", "area", "height_lo_m", "height_hi_m", "n", "covered_pct", "mean_width_m"]


def _areas(di: np.ndarray | None, threshold: float) -> dict[str, np.ndarray | None]:
    """Masks of the areas a block is tallied over: all, and inside/outside the AOA if mapped."""
    if di is None:
        return {ALL: None}
    ok = np.isfinite(di)
    return {ALL: None, "inside": ok & (di <= threshold), "outside": ok & (di > threshold)}


def _tally(
    counts: dict, ref: np.ndarray, lo: np.ndarray, hi: np.ndarray, key: tuple[str, str]
) -> None:
    """Add one block's pixels of (split, area) to ``counts`` per height bin (and in all)."""
    if ref.size == 0:
        return
    hit = ((ref >= lo) & (ref <= hi)).astype(np.float64)
    width = (hi - lo).astype(np.float64)
    bins = np.floor(ref / HEIGHT_BIN).astype(np.int64)
    first = int(bins.min())
    per_bin = [np.bincount(bins - first, weights=w) for w in (None, hit, width)]
    for i in np.flatnonzero(per_bin[0]):
        c = counts[(*key, first + int(i))]
        c[0] += int(per_bin[0][i])
        c[1] += int(per_bin[1][i])
        c[2] += float(per_bin[2][i])
    c = counts[(*key, None)]
    c[0] += ref.size
    c[1] += int(hit.sum())
    c[2] += float(width.sum())


def coverage_table(interval: Path, dsm: Path, split: Path, aoa: Path | None = None) -> pd.DataFrame:
    """Coverage (% of reference heights in [lower, upper]) and mean width of an interval.

    One row per split, area and reference-height bin (``height_lo_m`` NaN: every height).
    """
    counts: dict[tuple, list] = defaultdict(lambda: [0, 0, 0.0])
    with (
        open_raster(interval, bands=2) as iv,
        open_raster(dsm, bands=1) as dm,
        open_raster(split, bands=1) as sp,
        open_raster(aoa, bands=1) if aoa else contextlib.nullcontext() as ao,
    ):
        threshold = float(ao.tags()["threshold"]) if ao else np.inf
        for ds in (dm, sp, *([ao] if ao else [])):
            check_same_grid(Grid.of(iv), Grid.of(ds), iv.name, ds.name)
        for _, win in iv.block_windows(1):
            lo, hi = read_dsm_block(iv, win, 1), read_dsm_block(iv, win, 2)
            ref, lab = read_dsm_block(dm, win), read_checked(sp, win, indexes=1)
            areas = _areas(read_dsm_block(ao, win) if ao else None, threshold)
            ok = np.isfinite(lo) & np.isfinite(hi) & np.isfinite(ref)
            for k in SPLITS:
                for area, mask in areas.items():
                    sel = ok & (lab == CODES[k]) & (True if mask is None else mask)
                    _tally(counts, ref[sel], lo[sel], hi[sel], (k, area))
    rows = []
    for (k, area, b), (n, hit, width) in counts.items():
        lo_m, hi_m = (np.nan, np.nan) if b is None else (b * HEIGHT_BIN, (b + 1) * HEIGHT_BIN)
        rows.append([k, area, lo_m, hi_m, n, 100.0 * hit / n, width / n])
    if not rows:
        raise NoValidData(f"no pixel where {interval} and {dsm} are both valid")
    table = pd.DataFrame(rows, columns=COLUMNS)
    return table.sort_values(["split", "area", "height_lo_m"], na_position="first", kind="stable")


@step
def interval_coverage(
    *,
    model: str,
    seed: int,
    intervals: list[Path],
    dsm: Path,
    split: Path,
    coverage: Path,
    aoa: Path | None = None,
) -> None:
    """Score one prediction's intervals: coverage and mean width per split, height bin, area.

    Args:
        model: The model's name (a column of the table).
        seed: The training seed (a column).
        intervals: The two-band interval COGs (lower_m, upper_m), one per method (its tag).
        dsm: The reference DSM on the same grid.
        split: The split raster (train, validation, test).
        coverage: Written: one row per method, split, area and reference-height bin.
        aoa: The area-of-applicability map (its ``threshold`` tag), when mapped.
    """
    tables = []
    for interval in intervals:
        with rasterio.open(interval) as ds:
            tags = ds.tags()
        t = coverage_table(interval, dsm, split, aoa)
        head = {"model": model, "seed": seed, "method": tags.get("method", "?")}
        head |= {"level": float(tags.get("level", "nan"))}
        tables.append(t.assign(**head, calibration_px=int(tags.get("calibration_px", -1))))
    table = pd.concat(tables, ignore_index=True)
    table = table[["model", "seed", "method", "level", "calibration_px", *COLUMNS]]
    write_csv(table, coverage)
    tot = table[(table["area"] == ALL) & table["height_lo_m"].isna()]
    for r in tot.itertuples(index=False):
        log.info(
            "%s seed %d %s %s: coverage %.1f %%", model, seed, r.method, r.split, r.covered_pct
        )
