"""AEF embeddings for an AOI: read only the windows it needs, flip, mosaic, write int8.

The published COGs (8192 x 8192 px, 64 int8 bands, nodata -128, one UTM zone each) are stored
**bottom-up**: their geotransform has a positive y resolution, so row 0 is the southern edge.
Source Cooperative ships ``.vrt`` files that flip them; we read the raw ``.tiff`` instead
(faster: no warp VRT) and flip the window ourselves (:func:`read_window`), which also works
for north-up files. Each block of the target grid is filled from every tile that intersects it
(nearest resampling, so int8 codes are never mixed), across tile edges and UTM zones, then
written to a block cache; an interrupted run resumes from the blocks already cached. The
finished raster has the same form as the synthetic AOI's: int8 x 64 bands ``A00..A63``,
nodata -128, on the AOI's 10 m UTM grid.

Sources (``aois.<name>.source``):

* ``source_coop``: free HTTPS mirror, read with GDAL ``/vsicurl/`` range requests;
* ``gcs``: Google's bucket through GDAL ``/vsigs/`` (credentials and billing project from the
  environment: ``GOOGLE_APPLICATION_CREDENTIALS``, ``GS_USER_PROJECT``);
* ``earthengine``: computePixels block by block (:mod:`.earthengine`).

One module for the block pipeline (plan, read, cache, assemble) and its two COG readers: the
cache's layout and resume rules are read in one place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import threading
import urllib.parse
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import rasterio
from affine import Affine
from rasterio.enums import Resampling
from rasterio.errors import RasterioError
from rasterio.warp import reproject, transform_bounds
from rasterio.windows import Window
from rasterio.windows import transform as window_transform
from shapely.geometry import box

from aefheight.core import aef
from aefheight.core.errors import (
    ConfigError,
    MissingTile,
    NoValidData,
    RasterError,
)
from aefheight.core.files import atomic_path
from aefheight.inputs.sources.aef_index import Tile, load_index, select_tiles
from aefheight.inputs.sources.aoi import (
    AOI,
    Block,
    block_polygon,
    blocks,
    reproject_geometry,
    target_grid,
)
from aefheight.inputs.sources.earthengine import EE_COLLECTION, ee_block_reader
from aefheight.inputs.sources.http import gdal_env, with_retries
from aefheight.inputs.sources.spec import DownloadSettings, RealAOISettings

if TYPE_CHECKING:
    from rasterio.crs import CRS

log = logging.getLogger(__name__)

ATTRIBUTION = (
    "The AlphaEarth Foundations Satellite Embedding dataset is produced by Google and "
    "Google DeepMind."
)
GS_CREDENTIAL_VARS = (
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GS_OAUTH2_REFRESH_TOKEN",
    "GS_SECRET_ACCESS_KEY",
    "CPL_GS_CREDENTIALS_FILE",
    "GS_ACCESS_TOKEN",
)


def gdal_source(tile: Tile, source: str, settings: DownloadSettings) -> tuple[str, dict[str, str]]:
    """The GDAL path of a tile's COG and the extra GDAL options it needs.

    ``source_coop``: ``/vsicurl/<base>/<year>/<zone>/<file>.tiff``. ``gcs``: ``/vsigs/`` with
    the endpoint taken from ``downloads.gcs_url`` (default ``https://storage.googleapis.com/``);
    anonymous (``GS_NO_SIGN_REQUEST``) when no credential variable is set.
    """
    if source == "source_coop":
        return f"/vsicurl/{settings.base_url('source_coop')}/{tile.key}", {}
    if source == "gcs":
        p = urllib.parse.urlsplit(settings.base_url("gcs"))
        opts = {"CPL_GS_ENDPOINT": f"{p.scheme}://{p.netloc}/"}
        if not any(os.environ.get(v) for v in GS_CREDENTIAL_VARS):
            opts["GS_NO_SIGN_REQUEST"] = "YES"
        project = os.environ.get("GS_USER_PROJECT") or os.environ.get("GOOGLE_CLOUD_PROJECT")
        if project:
            opts["GS_USER_PROJECT"] = project
        return f"/vsigs/{p.path.strip('/')}/{tile.key}", opts
    raise ConfigError(f"no COG path for source {source!r}")


def read_window(
    ds: rasterio.io.DatasetReader, bounds: tuple[float, float, float, float], crs: CRS
) -> tuple[np.ndarray, Affine] | None:
    """Read the part of ``ds`` under ``bounds`` (in ``crs``), north-up.

    Returns the (bands, rows, cols) array with row 0 at the north and its north-up transform,
    or None if the bounds miss the dataset. A bottom-up file (positive y resolution) is read in
    its own row order and flipped; a north-up file is read as is.
    """
    t = ds.transform
    if t.b != 0 or t.d != 0:
        raise RasterError(f"{ds.name} has a rotated geotransform; not an AEF COG")
    x0, y0, x1, y1 = transform_bounds(crs, ds.crs, *bounds, densify_pts=21)
    inv = ~t
    cols, rows = zip(*(inv @ (x, y) for x in (x0, x1) for y in (y0, y1)), strict=True)
    c0, c1 = max(0, math.floor(min(cols)) - 1), min(ds.width, math.ceil(max(cols)) + 1)
    r0, r1 = max(0, math.floor(min(rows)) - 1), min(ds.height, math.ceil(max(rows)) + 1)
    if c1 <= c0 or r1 <= r0:
        return None
    win = Window(c0, r0, c1 - c0, r1 - r0)
    arr = ds.read(window=win)
    if t.e > 0:  # bottom-up: flip rows, origin moves to the window's northern edge
        arr = arr[:, ::-1, :]
        tr = Affine(t.a, 0.0, t.c + c0 * t.a, 0.0, -t.e, t.f + r1 * t.e)
    else:
        tr = window_transform(win, t)
    return np.ascontiguousarray(arr), tr


def fill_block(
    dst: np.ndarray,
    src: np.ndarray,
    src_transform: Affine,
    src_crs: CRS,
    block: Block,
    dst_crs: CRS,
) -> None:
    """Reproject int8 codes (nearest) onto ``block`` and fill pixels still nodata in ``dst``."""
    tmp = np.full_like(dst, aef.NODATA)
    reproject(
        src,
        tmp,
        src_transform=src_transform,
        src_crs=src_crs,
        src_nodata=aef.NODATA,
        dst_transform=block.transform,
        dst_crs=dst_crs,
        dst_nodata=aef.NODATA,
        resampling=Resampling.nearest,
    )
    take = ~aef.valid_mask(dst) & aef.valid_mask(tmp)
    dst[:, take] = tmp[:, take]


class RemoteStats(logging.Handler):
    """Counts remote window reads, their attempts and GDAL's own per-request retries.

    Installed on rasterio's GDAL log while a download runs; GDAL reports each retried request
    as a warning ("... Retrying again in ..."), which this counts.
    """

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.reads = self.attempts = self.gdal_retries = self.bytes = 0
        self.counts_lock = threading.Lock()  # not Handler.lock: handle() holds that in emit()

    def emit(self, record: logging.LogRecord) -> None:
        if "Retrying" in record.getMessage():
            with self.counts_lock:
                self.gdal_retries += 1

    def add(self, reads: int = 0, attempts: int = 0, nbytes: int = 0) -> None:
        with self.counts_lock:
            self.reads, self.attempts = self.reads + reads, self.attempts + attempts
            self.bytes += nbytes

    def summary(self) -> str:
        return (
            f"remote reads: {self.reads} windows in {self.attempts} attempts "
            f"({self.attempts - self.reads} retried whole), {self.gdal_retries} requests "
            f"retried by GDAL, {self.bytes / 1e6:.1f} MB of codes"
        )


def cog_block_reader(
    aoi: AOI,
    tiles: Sequence[Tile],
    source: str,
    settings: DownloadSettings,
    stats: RemoteStats | None = None,
) -> Callable[[Block], np.ndarray]:
    """A function block -> int8 (64, h, w) codes read from the tiles' COGs."""
    stats = stats or RemoteStats()
    boxes = [(t, box(*t.utm_bounds)) for t in tiles]

    def read_block(block: Block) -> np.ndarray:
        out = np.full((aef.BANDS, block.height, block.width), aef.NODATA, np.int8)
        bpoly = block_polygon(block)
        for tile, tbox in boxes:
            if not reproject_geometry(bpoly, aoi.grid.crs, tile.crs).intersects(tbox):
                continue
            path, extra = gdal_source(tile, source, settings)

            def read(
                path: str = path, extra: dict[str, str] = extra, tile: Tile = tile
            ) -> tuple[tuple[np.ndarray, Affine] | None, CRS]:
                stats.add(attempts=1)
                try:
                    with gdal_env(settings, **extra), rasterio.open(path) as ds:
                        if ds.count != aef.BANDS or ds.dtypes[0] != "int8":
                            raise RasterError(
                                f"{tile.key}: expected 64 int8 bands, got {ds.count} {ds.dtypes[0]}"
                            )
                        return read_window(ds, block.bounds, aoi.grid.crs), ds.crs
                except RasterioError as exc:
                    if "HTTP response code: 404" in str(exc):  # no retry helps
                        raise MissingTile(
                            f"{aoi.describe()}: AEF tile {tile.key} of {tile.year} is in the "
                            f"{source} index but missing at {settings.base_url(source)}"
                        ) from exc
                    raise

            got, src_crs = with_retries(
                read,
                f"reading {tile.key} for block {block.key}",
                settings,
                retry_on=(RasterioError, OSError),
                never_retry=(MissingTile,),
            )
            stats.add(reads=1, nbytes=got[0].nbytes if got is not None else 0)
            if got is not None:
                fill_block(out, got[0], got[1], src_crs, block, aoi.grid.crs)
        return out

    return read_block


# ------------------------------------------------------------------------------ earthengine


# ------------------------------------------------------------------------------ the whole AOI


def cache_signature(aoi: AOI, source: str, year: int, tiles: Sequence[str], block_px: int) -> str:
    """A short hash of what determines the block contents (a changed config never reuses)."""
    g = aoi.grid
    blob = json.dumps(
        {
            "source": source,
            "year": year,
            "crs": g.crs.to_wkt(),
            "transform": list(g.transform)[:6],
            "shape": [g.width, g.height],
            "block": block_px,
            "tiles": sorted(tiles),
            "mask": aoi.mask_outside,
            "poly": aoi.polygon.wkb_hex if aoi.mask_outside else "",
        },
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def write_block(path: Path, codes: np.ndarray, block: Block, crs: CRS) -> None:
    """Write one cached block (deflate GeoTIFF), atomically."""
    prof = {
        "driver": "GTiff",
        "width": block.width,
        "height": block.height,
        "count": aef.BANDS,
        "dtype": "int8",
        "nodata": aef.NODATA,
        "crs": crs,
        "transform": block.transform,
        "compress": "deflate",
        "tiled": False,
    }
    with atomic_path(path) as tmp, rasterio.open(tmp, "w", **prof) as dst:
        dst.write(codes)


def fetch_embeddings(
    name: str,
    s: RealAOISettings,
    downloads: DownloadSettings,
    out: str | os.PathLike,
    cache_root: str | os.PathLike,
    index_path: str | os.PathLike | None = None,
    threads: int = 1,
    section: str | None = None,
) -> dict[str, Any]:
    """Download the AOI's AEF embeddings into ``out`` (int8 x 64, nodata -128), resumably.

    Use it in the ``fetch_embeddings`` rule. Blocks of ``downloads.block_px`` px are read in
    parallel (``threads``) and cached under ``cache_root/<aoi>/<signature>/``; a re-run after an
    interruption fetches only the missing blocks. The cache is removed once ``out`` is written.

    Returns:
        Provenance (source, year, tiles, grid, valid fraction) for the report.
    """
    section = section or f"aois.{name}"
    stats = RemoteStats()
    gdal_log = logging.getLogger("rasterio")
    gdal_log.addHandler(stats)
    try:
        return _fetch(name, s, downloads, out, cache_root, index_path, threads, section, stats)
    finally:
        gdal_log.removeHandler(stats)
        log.info(stats.summary())


def _block_source(
    aoi: AOI,
    s: RealAOISettings,
    downloads: DownloadSettings,
    index_path: str | os.PathLike | None,
    stats: RemoteStats,
) -> tuple[list[str], Callable[[Block], np.ndarray], str | None]:
    """The tile keys, the block reader and the index checksum for the configured source."""
    if s.source == "earthengine":
        return [f"ee:{EE_COLLECTION}:{s.year}"], ee_block_reader(aoi, s.year), None
    if index_path is None:
        raise ConfigError(f"source {s.source} needs the AEF index (--index)")
    index = load_index(index_path)
    tiles = select_tiles(index, aoi, s.year, s.allow_partial_coverage)
    tile_keys = [t.key for t in tiles]
    reader = cog_block_reader(aoi, tiles, s.source, downloads, stats)
    from aefheight.inputs.sources.http import FileRecord, sidecar

    rec = FileRecord.read(sidecar(index_path))
    return tile_keys, reader, rec.sha256 if rec else None


def _plan_blocks(
    aoi: AOI, cache: Path, block_px: int
) -> tuple[list[Block], list[Block], list[Block]]:
    """All blocks of the grid, those already in ``cache`` and those to fetch; log the counts."""
    todo = list(blocks(aoi.grid, block_px))
    done = [b for b in todo if (cache / f"{b.key}.tif").exists()]
    missing = [b for b in todo if not (cache / f"{b.key}.tif").exists()]
    log.info(
        "%d blocks of %d px: %d cached from an earlier run, %d to fetch",
        len(todo),
        block_px,
        len(done),
        len(missing),
    )
    return todo, done, missing


def _fetch_blocks(
    aoi: AOI,
    reader: Callable[[Block], np.ndarray],
    cache: Path,
    missing: list[Block],
    threads: int,
) -> None:
    """Read the missing blocks in parallel, mask them to the AOI and write them to ``cache``."""

    def job(block: Block) -> None:
        codes = reader(block)
        inside = aoi.inside(block.transform, (block.height, block.width))
        codes[:, ~inside] = aef.NODATA
        write_block(cache / f"{block.key}.tif", codes, block, aoi.grid.crs)

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        for i, _ in enumerate(pool.map(job, missing), 1):
            if i % 10 == 0 or i == len(missing):
                log.info("fetched %d/%d blocks", i, len(missing))


def _copy_blocks(
    dst: rasterio.io.DatasetWriter, aoi: AOI, cache: Path, todo: list[Block]
) -> tuple[int, int]:
    """Copy the cached blocks into ``dst``; return (valid, inside) pixel counts."""
    valid = inside_total = 0
    for block in todo:
        with rasterio.open(cache / f"{block.key}.tif") as src:
            codes = src.read()
        dst.write(codes, window=block.window)
        inside = aoi.inside(block.transform, (block.height, block.width))
        valid += int((aef.valid_mask(codes) & inside).sum())
        inside_total += int(inside.sum())
    return valid, inside_total


def _assemble(
    aoi: AOI,
    s: RealAOISettings,
    name: str,
    out: str | os.PathLike,
    cache: Path,
    todo: list[Block],
    tile_keys: list[str],
    index_sha: str | None,
) -> float:
    """Mosaic the cached blocks into ``out`` with its tags, atomically; return valid fraction."""
    with atomic_path(out) as tmp:
        prof = aoi.grid.profile(aef.BANDS, "int8", aef.NODATA)
        with rasterio.open(tmp, "w", **prof) as dst:
            valid, inside_total = _copy_blocks(dst, aoi, cache, todo)
            for i, band in enumerate(aef.BAND_NAMES, start=1):
                dst.set_band_description(i, band)
            fraction = valid / inside_total if inside_total else 0.0
            dst.update_tags(
                source=s.source,
                year=str(s.year),
                collection=EE_COLLECTION,
                quantization="AEF int8; float = ((v / 127.5) ** 2) * sign(v)",
                aoi=name,
                tiles=str(len(tile_keys)),
                valid_fraction=f"{fraction:.6f}",
                attribution=ATTRIBUTION,
                **({"index_sha256": index_sha} if index_sha else {}),
            )
        if valid == 0:  # inside atomic_path: no empty ``out`` is left behind
            raise NoValidData(
                f"{aoi.describe()}: the {s.source} embeddings of {s.year} hold "
                "no valid pixel inside the AOI"
            )
    return fraction


def _fetch(
    name: str,
    s: RealAOISettings,
    downloads: DownloadSettings,
    out: str | os.PathLike,
    cache_root: str | os.PathLike,
    index_path: str | os.PathLike | None,
    threads: int,
    section: str,
    stats: RemoteStats,
) -> dict[str, Any]:
    """:func:`fetch_embeddings` without its request accounting."""
    aoi = target_grid(name, s.aoi_spec(section), f"{section}.aoi")
    log.info("target grid: %s", aoi.describe())
    tile_keys, reader, index_sha = _block_source(aoi, s, downloads, index_path, stats)
    sig = cache_signature(aoi, s.source, s.year, tile_keys, downloads.block_px)
    cache = Path(cache_root) / name / sig
    cache.mkdir(parents=True, exist_ok=True)
    todo, done, missing = _plan_blocks(aoi, cache, downloads.block_px)
    _fetch_blocks(aoi, reader, cache, missing, threads)
    fraction = _assemble(aoi, s, name, out, cache, todo, tile_keys, index_sha)
    shutil.rmtree(cache, ignore_errors=True)
    log.info("wrote %s (valid fraction inside the AOI: %.4f)", out, fraction)
    return {
        "aoi": name,
        "source": s.source,
        "year": s.year,
        "collection": EE_COLLECTION,
        "tiles": tile_keys,
        "index_sha256": index_sha,
        "crs": aoi.grid.crs.to_string(),
        "transform": list(aoi.grid.transform)[:6],
        "shape": [aoi.grid.height, aoi.grid.width],
        "area_km2": round(aoi.area_km2, 3),
        "valid_fraction": round(fraction, 6),
        "blocks": len(todo),
        "blocks_cached": len(done),
        "blocks_fetched": len(missing),
        "attribution": ATTRIBUTION,
    }
