"""Tiling: cut co-registered patches into a patch store with a GeoParquet index.

The store is two ``.npy`` files that training memory-maps: ``embeddings.npy`` (N, bands, P, P)
as the embeddings raster stores them (int8 AEF codes, or float32 values:
:mod:`aefheight.core.embeddings`), and ``dsm.npy`` (N, P, P) float32 heights with NaN for
nodata. Each patch is one contiguous run of bytes, so reading a patch is one sequential read.
``index.parquet`` has one row per patch: pixel offsets, footprint, valid fraction and height
statistics. De-quantization happens on the training device
(:func:`aefheight.train.dataset.model_input`).
No torch here: the tiling env and every raster step stay torch-free.

About 410 lines: the writer and the shard-index merge share the store's layout, defined here once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, ClassVar

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
from rasterio.crs import CRS
from rasterio.windows import Window
from shapely.geometry import box
from tqdm import tqdm

from aefheight.core import embeddings
from aefheight.core.errors import ConfigError, NoValidData, RasterError, TooFewPatches
from aefheight.core.files import atomic_path
from aefheight.core.raster import Grid, check_same_grid, open_raster, read_checked, read_dsm_block
from aefheight.core.steps import step
from aefheight.inputs.shards import ShardingSettings, shard_of

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TilingSettings:
    """Settings of the tiling step (config ``tiling``)."""

    SECTION: ClassVar[str] = "tiling"
    patch_size: int
    stride: int | None  # None: patch_size (no overlap)
    min_valid_fraction: float


def check_inputs(
    emb: rasterio.io.DatasetReader,
    dsm: rasterio.io.DatasetReader,
    coarse: rasterio.io.DatasetReader | None = None,
) -> Grid:
    """Check the embedding, DSM (and coarse DEM) rasters fit together; return their grid."""
    embeddings.describe(emb)  # int8 codes or float32 values, the band count its product's
    if dsm.count != 1:
        raise RasterError(f"{dsm.name} has {dsm.count} bands; a DSM has 1")
    grid = Grid.of(emb)
    check_same_grid(grid, Grid.of(dsm), emb.name, dsm.name)
    if coarse is not None:
        if coarse.count != 1:
            raise RasterError(f"{coarse.name} has {coarse.count} bands; a coarse DEM has 1")
        check_same_grid(grid, Grid.of(coarse), emb.name, coarse.name)
    return grid


def _check_nan_declared(dsm: rasterio.io.DatasetReader, z: np.ndarray) -> None:
    if np.isnan(z).any() and (dsm.nodata is None) and np.issubdtype(z.dtype, np.floating):
        raise RasterError(
            f"{dsm.name} holds NaN but declares no nodata value; declare it "
            "(e.g. gdal_edit.py -a_nodata nan) so NaN is not taken for a height"
        )


def _shrink_npy(path: Path, n: int) -> None:
    """Rewrite a .npy header to keep only the first ``n`` rows and truncate the file."""
    with open(path, "r+b") as fh:
        version = np.lib.format.read_magic(fh)
        read_header = (
            np.lib.format.read_array_header_1_0
            if version == (1, 0)
            else np.lib.format.read_array_header_2_0
        )
        shape, fortran, dtype = read_header(fh)
        offset = fh.tell()
        new_shape = (n, *shape[1:])
        header = {
            "descr": np.lib.format.dtype_to_descr(dtype),
            "fortran_order": fortran,
            "shape": new_shape,
        }
        text = repr(header)
        start = 8 + (2 if version == (1, 0) else 4)  # magic + version + header length field
        room = offset - start
        text = text + " " * (room - len(text) - 1) + "\n"
        fh.seek(start)
        fh.write(text.encode("latin1"))
        fh.truncate(offset + n * int(np.prod(shape[1:])) * dtype.itemsize)
    if np.load(path, mmap_mode="r").shape != new_shape:  # numpy must read the new header
        raise RuntimeError(f"could not shrink {path} to {new_shape}")


def patch_origins(size: int, patch: int, stride: int) -> list[int]:
    """Offsets of patches fully inside ``size`` pixels."""
    if size < patch:
        return []
    return list(range(0, size - patch + 1, stride))


INDEX_COLUMNS = (
    *("patch_id", "row", "col", "size", "valid_fraction"),
    *("h_mean", "h_min", "h_max", "h_std", "geometry"),
)


def _record(n: int, r0: int, c0: int, p: int, frac: float, zp: np.ndarray, grid: Grid) -> dict:
    """The index row of patch ``n`` (pixel offsets, footprint, validity, height statistics)."""
    x0, y0 = grid.transform @ (c0, r0)
    x1, y1 = grid.transform @ (c0 + p, r0 + p)
    heights = (float(f(zp)) for f in (np.nanmean, np.nanmin, np.nanmax, np.nanstd))
    footprint = box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
    return dict(zip(INDEX_COLUMNS, (n, r0, c0, p, frac, *heights, footprint), strict=True))


def _no_patch(n: int, n_max: int, any_valid: bool, s: TilingSettings, names: str) -> None:
    """Stop with the reason when no patch was kept."""
    if not any_valid:
        raise NoValidData(
            f"no pixel has both valid embeddings and a valid DSM ({names}): check nodata "
            "values and that both cover the AOI"
        )
    if n == 0:
        raise TooFewPatches(
            f"none of the {n_max} patches has >= {s.min_valid_fraction:.0%} valid "
            "pixels; lower tiling.min_valid_fraction or check the inputs' nodata"
        )


def _origins(
    grid: Grid, s: TilingSettings, window: Window | None = None
) -> tuple[list[int], list[int]]:
    """Row and column origins of the patches, or stop if the AOI holds none.

    With ``window`` (a shard), only the origins inside it.
    """
    p = s.patch_size
    stride = s.stride or p
    rows, cols = patch_origins(grid.height, p, stride), patch_origins(grid.width, p, stride)
    if not rows or not cols:
        raise TooFewPatches(
            f"the AOI ({grid.width}x{grid.height} px) is smaller than one "
            f"{p}x{p} px patch; use a larger AOI or a smaller tiling.patch_size"
        )
    if window is not None:
        (r0, r1), (c0, c1) = window.toranges()
        rows, cols = [r for r in rows if r0 <= r < r1], [c for c in cols if c0 <= c < c1]
    return rows, cols


def _open_stores(
    paths: dict[str, Path],
    n_max: int,
    p: int,
    emb: rasterio.io.DatasetReader,
    stack: contextlib.ExitStack,
) -> dict[str, BinaryIO]:
    """The stores being written (``paths``: name -> temporary path), as files open in ``stack``.

    Each is positioned after its ``.npy`` header for ``n_max`` patches (:func:`_shrink_npy`
    sets the kept count at the end). Patches are appended with plain writes: through a memory
    map, every written page counted in the step's RSS (2.2 GB at 84 M px, benchmarks/README.md).
    """
    dtypes = {"embeddings": (np.dtype(emb.dtypes[0]), (n_max, emb.count, p, p))}
    stores: dict[str, BinaryIO] = {}
    for k, v in paths.items():
        dtype, shape = dtypes.get(k, (np.float32, (n_max, p, p)))
        fh = stack.enter_context(open(v, "wb"))  # tile closes it before rewriting the header
        header = {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape}
        np.lib.format.write_array_header_1_0(fh, header)
        stores[k] = fh
    return stores


def _append(fh: BinaryIO, a: np.ndarray, dtype: Any) -> None:
    """Append one patch to a store as C-ordered bytes."""
    fh.write(np.ascontiguousarray(a, dtype).data)


def _read_window(
    emb: rasterio.io.DatasetReader,
    dsm: rasterio.io.DatasetReader,
    coarse: rasterio.io.DatasetReader | None,
    win: tuple[tuple[int, int], tuple[int, int]],
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    z = read_dsm_block(dsm, win)
    _check_nan_declared(dsm, z)
    return read_checked(emb, win), z, None if coarse is None else read_dsm_block(coarse, win)


CHUNK_PX = 2048  # columns read at once: tiling memory does not grow with the AOI's width


def _column_chunks(cols: list[int], p: int, lo: int, hi: int) -> list[tuple[int, int, list[int]]]:
    """``(start, stop, patch columns)``: windows that cover ``[lo, hi)`` and each patch once.

    Whole windows, so that "no valid pixel at all" still looks at every column.
    """
    if not cols:
        return []
    per = max(1, CHUNK_PX // p)
    groups = [cols[i : i + per] for i in range(0, len(cols), per)]
    starts = [lo] + [g[0] for g in groups[1:]]
    stops = [max(g[-1] + p, nxt) for g, nxt in zip(groups, [*starts[1:], hi], strict=True)]
    return list(zip(starts, stops, groups, strict=True))


def _tile_chunk(
    chunk: tuple[np.ndarray, np.ndarray, np.ndarray | None],
    r0: int,
    c_start: int,
    cols: list[int],
    s: TilingSettings,
    grid: Grid,
    stores: dict[str, BinaryIO],
    records: list[dict],
) -> bool:
    """Store the kept patches of one chunk of a patch row; whether it had any valid pixel."""
    codes, z, c = chunk
    p = s.patch_size
    valid = embeddings.valid_mask(codes) & ~np.isnan(z)
    for c0 in cols:
        j = c0 - c_start
        frac = float(valid[:, j : j + p].mean())
        if frac < s.min_valid_fraction:
            continue
        zp = np.where(valid[:, j : j + p], z[:, j : j + p], np.nan)
        n = len(records)
        _append(stores["embeddings"], codes[:, :, j : j + p], codes.dtype)
        _append(stores["dsm"], zp, np.float32)
        if c is not None:
            _append(stores["coarse_dem"], c[:, j : j + p], np.float32)
        records.append(_record(n, r0, c0, p, frac, zp, grid))
    return bool(valid.any())


def _index_table(records: list[dict], crs: CRS) -> gpd.GeoDataFrame:
    """The index of ``records`` (also of none: a shard may hold no patch)."""
    frame = pd.DataFrame.from_records(records, columns=list(INDEX_COLUMNS))
    return gpd.GeoDataFrame(frame, geometry="geometry", crs=crs)


def _tile_rows(
    sources: tuple[rasterio.io.DatasetReader, rasterio.io.DatasetReader, Any],
    rows: list[int],
    cols: list[int],
    span: tuple[int, int],
    s: TilingSettings,
    grid: Grid,
    stores: dict[str, BinaryIO],
    records: list[dict],
) -> bool:
    """Store the kept patches of every patch row; whether any pixel was valid.

    Reads the columns ``span`` (the AOI's, or a shard's with its patches' far sides) in chunks.
    """
    p, any_valid = s.patch_size, False
    chunks = _column_chunks(cols, p, *span)
    with tqdm(total=len(rows), desc="tiling", unit="patch row", mininterval=5) as bar:
        for r0 in rows:
            for start, stop, group in chunks:
                chunk = _read_window(*sources, ((r0, r0 + p), (start, stop)))
                any_valid |= _tile_chunk(chunk, r0, start, group, s, grid, stores, records)
            bar.update()
    return any_valid


def cut_patches(
    embeddings_path: Path,
    dsm_path: Path,
    s: TilingSettings,
    index: Path,
    store_embeddings: Path,
    store_dsm: Path,
    coarse_dem_path: Path | None = None,
    store_coarse_dem: Path | None = None,
    window: Window | None = None,
) -> gpd.GeoDataFrame:
    """Cut the AOI into patches: the patch store (``.npy`` files) and its index.

    Patches lie fully inside the AOI on a regular grid (``stride`` apart); a patch is kept when
    at least ``min_valid_fraction`` of its pixels have both valid embeddings and a valid DSM.

    Args:
        embeddings_path: the AOI's embeddings (int8 AEF codes or float32, N bands).
        dsm_path: its reference DSM on the same grid.
        s: the tiling settings.
        index: the GeoParquet index written (one row per patch).
        store_embeddings: the embeddings written as stored, (N, bands, P, P).
        store_dsm: the float32 heights written, (N, P, P), NaN where invalid.
        coarse_dem_path: the AOI's coarse DEM on the same grid (given with the next).
        store_coarse_dem: its float32 patches written, (N, P, P), NaN where nodata.
        window: a shard (:mod:`aefheight.inputs.shards`): only the patches whose origin lies in it,
            possibly none (:func:`merge_shard_indexes` checks the AOI as a whole).

    Returns:
        The index.
    """
    if (coarse_dem_path is None) != (store_coarse_dem is None):
        raise ConfigError("tile: give both the coarse DEM and its store, or neither")
    p = s.patch_size
    named = {"embeddings": store_embeddings, "dsm": store_dsm, "coarse_dem": store_coarse_dem}
    outputs = {k: v for k, v in named.items() if v is not None}
    with contextlib.ExitStack() as stack:
        emb, dsm = (stack.enter_context(open_raster(q)) for q in (embeddings_path, dsm_path))
        coarse = (
            None if coarse_dem_path is None else stack.enter_context(open_raster(coarse_dem_path))
        )
        grid = check_inputs(emb, dsm, coarse)
        rows, cols = _origins(grid, s, window)
        n_max = len(rows) * len(cols)
        tmp = {k: stack.enter_context(atomic_path(v)) for k, v in outputs.items()}
        stores = _open_stores(tmp, n_max, p, emb, stack)
        records: list[dict] = []
        span = (0, grid.width) if window is None else window.toranges()[1]
        any_valid = _tile_rows((emb, dsm, coarse), rows, cols, span, s, grid, stores, records)
        for fh in stores.values():
            fh.close()
        if window is None:
            _no_patch(len(records), n_max, any_valid, s, f"{embeddings_path}, {dsm_path}")
        for t in tmp.values():
            _shrink_npy(t, len(records))
        table = _index_table(records, grid.crs)
        table.to_parquet(stack.enter_context(atomic_path(index)))
    log.info("kept %d of %d patches of %d px", len(records), n_max, p)
    return table


def merge_shard_indexes(shards: Sequence[Path], index: Path) -> gpd.GeoDataFrame:
    """One index over the patch stores of all shards, in the unsharded index's order.

    ``patch_id`` becomes the patch's position in the shards' stores taken one after another,
    in the order given (:class:`PatchStore` opens them in the same order); ``shard`` and
    ``shard_row`` say where it lies, so that a store list in another order is caught.
    """
    tables = []
    offset = 0
    for i, path in enumerate(shards):
        t = gpd.read_parquet(path)
        t["shard"], t["shard_row"] = i, t["patch_id"]
        t["patch_id"] = t["patch_id"] + offset
        offset += len(t)
        tables.append(t)
    kept = [t for t in tables if len(t)] or tables[:1]  # an empty shard's index has no dtypes
    table = pd.concat(kept, ignore_index=True).sort_values(["row", "col"], kind="stable")
    table = gpd.GeoDataFrame(table.reset_index(drop=True), geometry="geometry", crs=tables[0].crs)
    if table.empty:
        raise TooFewPatches(
            f"none of the {len(shards)} shards kept a patch: check the inputs' nodata and "
            "that they cover the AOI, or lower tiling.min_valid_fraction"
        )
    with atomic_path(index) as tmp:
        table.to_parquet(tmp)
    log.info("merged %d patches of %d shards", len(table), len(shards))
    return table


@step
def tile(
    *,
    settings: TilingSettings,
    embeddings: Path,
    dsm: Path,
    coarse_dem: Path,
    index: Path,
    store_embeddings: Path,
    store_dsm: Path,
    store_coarse_dem: Path,
    shard: str | None = None,
    sharding: ShardingSettings | None = None,
) -> None:
    """Cut the AOI (or one shard of it: ``shard`` and ``sharding``) into the patch store.

    Args:
        settings: The config's ``tiling`` section (JSON; ``'{}'`` for the defaults).
        embeddings: The co-registered embeddings GeoTIFF (its grid is the AOI grid).
        dsm: The reference DSM on the same grid.
        coarse_dem: The coarse DEM on the same grid.
        index: Written: one row per patch (window, valid share, height statistics).
        store_embeddings: Written: the embeddings' patches, one array per patch.
        store_dsm: Written: the DSM's patches, in the index's order.
        store_coarse_dem: Written: the coarse DEM's patches, in the index's order.
        shard: The shard's name (``r<row>c<col>``) to cut only its window.
        sharding: The config's ``sharding`` section (JSON), given with ``shard``.
    """
    window = shard_of(embeddings, shard, sharding)
    cut_patches(
        embeddings,
        dsm,
        settings,
        index,
        store_embeddings,
        store_dsm,
        coarse_dem_path=coarse_dem,
        store_coarse_dem=store_coarse_dem,
        window=window,
    )


@step
def merge_patches(*, indexes: list[Path], index: Path) -> None:
    """Write one patch index over every shard's patch store (in the shards' order)."""
    merge_shard_indexes(indexes, index)
