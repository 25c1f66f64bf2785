"""TESSERA embeddings for an AOI (``source: tessera``) through ``geotessera`` (pinned 0.7.5).

TESSERA ships 0.1 degree tiles named by their centre: int8 values (H, W, 128) with one float32
scale per pixel, and a UTM landmask GeoTIFF that georeferences the tile. geotessera lists the
tiles an AOI needs from its registry, downloads each file (checked against the registry's
sha256) and de-quantizes it (value x scale). We mask what the scales mark as no data (NaN,
zero, or the huge sentinels of the published files: 0.11's rule, ``0 < scale < 1``), then
mosaic the tiles onto the AOI's grid (nearest, across UTM zones) as float32, NaN nodata.

geotessera 0.7.5 retries an HTTP error a few times but not a dropped connection or a
truncated body, and reports a failed tile only as a log warning from its batch call; so each
tile is fetched alone under :func:`~aefheight.inputs.sources.http.with_retries` (the
``downloads`` section's retries), a retry forcing a fresh download. Its base URL is a module
constant, pointed at ``downloads.tessera_url`` (a mirror, or the tests' local server).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.transform import array_bounds
from rasterio.warp import reproject, transform_bounds

from aefheight.core.embeddings import PRODUCT_TAG, band_names, valid_mask
from aefheight.core.errors import AOIOutsideCoverage, NoValidData, YearNotAvailable
from aefheight.core.files import atomic_path
from aefheight.inputs.sources.aoi import AOI, blocks
from aefheight.inputs.sources.http import with_retries
from aefheight.inputs.sources.spec import DownloadSettings

log = logging.getLogger(__name__)
BANDS = 128
BLOCK_PX = 1024
MAX_VALID_SCALE = 1.0  # geotessera 0.11's rule: larger scales are no-data sentinels
ATTRIBUTION = "TESSERA embeddings (University of Cambridge), through geotessera"


def client(downloads: DownloadSettings, cache: Path) -> Any:
    """A geotessera client whose registry and tiles come from ``downloads.tessera_url``."""
    import geotessera
    import geotessera.registry as registry

    registry.TESSERA_BASE_URL = downloads.tessera_url.rstrip("/")  # read at each request
    return with_retries(
        lambda: geotessera.GeoTessera(
            dataset_version="v1",
            cache_dir=cache / "registry",
            embeddings_dir=cache / "tiles",
            verify_hashes=True,
        ),
        "the TESSERA registry",
        downloads,
        retry_on=(RuntimeError, OSError),
    )


def aoi_tiles(gt: Any, aoi: AOI, year: int) -> list[tuple[float, float]]:
    """The (lon, lat) centres of the tiles covering the AOI in ``year``."""
    bounds = transform_bounds(aoi.grid.crs, "EPSG:4326", *aoi.grid.bounds, densify_pts=21)
    years = gt.registry.get_available_years()
    if year not in years:
        raise YearNotAvailable(
            f"{aoi.describe()}: TESSERA has no {year} (its years: "
            f"{', '.join(map(str, years))}); set the AOI's year to one of them"
        )
    tiles = [(lon, lat) for _, lon, lat in gt.registry.load_blocks_for_region(bounds, year)]
    if not tiles:
        raise AOIOutsideCoverage(f"{aoi.describe()}: no TESSERA tile of {year} covers it")
    return tiles


def fetch_tile(
    gt: Any, lon: float, lat: float, year: int, downloads: DownloadSettings
) -> tuple[np.ndarray, Any, Any]:
    """One tile as (float32 (128, H, W) with NaN where its scale marks no data, CRS, transform)."""
    attempt = [0]

    def once() -> tuple[np.ndarray, Any, Any, np.ndarray]:
        refresh, attempt[0] = attempt[0] > 0, attempt[0] + 1  # a retry replaces partial files
        emb, crs, transform = gt.fetch_embedding(lon, lat, year, refresh=refresh)
        path = gt.registry.fetch(year=year, lon=lon, lat=lat, is_scales=True, progressbar=False)
        scales = np.load(path)
        return emb, crs, transform, scales

    emb, crs, transform, scales = with_retries(
        once, f"TESSERA tile {lon:.2f}, {lat:.2f} ({year})", downloads,
        retry_on=(OSError, ValueError, RuntimeError),
    )  # fmt: skip
    s = scales if scales.ndim == 2 else scales.max(axis=-1)
    bad = ~(np.isfinite(s) & (s > 0) & (s < MAX_VALID_SCALE))
    values = np.moveaxis(emb.astype(np.float32, copy=False), -1, 0)
    values[:, bad] = np.nan
    return np.ascontiguousarray(values), crs, transform


def _paste(
    dst: rasterio.io.DatasetWriter, aoi: AOI, values: np.ndarray, crs: Any, transform: Any
) -> None:
    """Reproject one tile (nearest) into every block of ``dst`` it reaches; first valid wins."""
    h, w = values.shape[1:]
    x0, y0, x1, y1 = transform_bounds(crs, aoi.grid.crs, *array_bounds(h, w, transform))
    for block in blocks(aoi.grid, BLOCK_PX):
        bx0, by0, bx1, by1 = block.bounds
        if bx0 >= x1 or bx1 <= x0 or by0 >= y1 or by1 <= y0:
            continue  # the tile misses this block
        tmp = np.full((BANDS, block.height, block.width), np.nan, np.float32)
        reproject(
            values, tmp, src_transform=transform, src_crs=crs, src_nodata=np.nan,
            dst_transform=block.transform, dst_crs=aoi.grid.crs, dst_nodata=np.nan,
            resampling=Resampling.nearest,
        )  # fmt: skip
        new = valid_mask(tmp)
        if not new.any():
            continue
        cur = dst.read(window=block.window)
        take = new & ~valid_mask(cur)
        cur[:, take] = tmp[:, take]
        dst.write(cur, window=block.window)


def fetch_tessera(
    name: str,
    aoi: AOI,
    year: int,
    downloads: DownloadSettings,
    out: str | os.PathLike,
    cache: str | os.PathLike,
) -> dict[str, Any]:
    """Download the AOI's TESSERA tiles of ``year`` and mosaic them into ``out`` (float32)."""
    gt = client(downloads, Path(cache))
    tiles = aoi_tiles(gt, aoi, year)
    log.info("%d TESSERA tiles of %d cover %s", len(tiles), year, aoi.describe())
    with atomic_path(out) as tmp:
        prof = aoi.grid.profile(BANDS, "float32", float("nan"))
        with rasterio.open(tmp, "w+", **prof) as dst:
            for i, (lon, lat) in enumerate(tiles, 1):
                _paste(dst, aoi, *fetch_tile(gt, lon, lat, year, downloads))
                log.info("mosaicked tile %d/%d (%.2f, %.2f)", i, len(tiles), lon, lat)
            fraction = _mask_outside(dst, aoi)
            for i, band in enumerate(band_names("tessera", BANDS), start=1):
                dst.set_band_description(i, band)
            dst.update_tags(
                source="tessera", year=str(year), aoi=name, tiles=str(len(tiles)),
                quantization="TESSERA int8 x per-pixel scale, de-quantized by geotessera",
                attribution=ATTRIBUTION, **{PRODUCT_TAG: "tessera"},
            )  # fmt: skip
        if fraction == 0:
            raise NoValidData(f"{aoi.describe()}: the TESSERA tiles hold no valid pixel in it")
    import geotessera

    return {
        "aoi": name, "source": "tessera", "product": "tessera", "year": year,
        "tiles": [f"grid_{lon:.2f}_{lat:.2f}" for lon, lat in tiles],
        "geotessera": geotessera.__version__, "valid_fraction": round(fraction, 6),
        "attribution": ATTRIBUTION,
    }  # fmt: skip


def _mask_outside(dst: rasterio.io.DatasetWriter, aoi: AOI) -> float:
    """Nodata outside the AOI's polygon (when asked); the valid share of the pixels inside."""
    valid = inside_total = 0
    for block in blocks(aoi.grid, BLOCK_PX):
        inside = aoi.inside(block.transform, (block.height, block.width))
        cur = dst.read(window=block.window)
        if aoi.mask_outside and not inside.all():
            cur[:, ~inside] = np.nan
            dst.write(cur, window=block.window)
        valid += int((valid_mask(cur) & inside).sum())
        inside_total += int(inside.sum())
    return valid / inside_total if inside_total else 0.0
