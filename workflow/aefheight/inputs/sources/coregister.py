"""Co-register a DSM onto the embedding grid (the AOI's 10 m UTM grid).

Use :func:`coregister` after :func:`.dsm.prepare`. Files sharing a CRS and pixel size are
mosaicked through a VRT (so a 10 m pixel straddling two 5 m tiles sees both); each VRT is
warped strip by strip onto the target grid, so memory stays bounded for any AOI:

* going from finer to 10 m (RGE ALTI 5 m, a LiDAR DSM): ``average`` resampling (the mean of
  the valid source pixels under each target pixel);
* otherwise (Copernicus 30 m): ``bilinear``.

Source nodata is honoured by the warper (a target pixel with no valid source pixel is nodata),
pixels outside the AOI polygon are set to nodata, and the product, its native resolution,
vertical datum and the resampling used are recorded in the raster's tags.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import calculate_default_transform, reproject, transform_bounds

from aefheight.core.errors import NoValidData, RasterError
from aefheight.core.files import atomic_path
from aefheight.core.raster import NODATA, Grid, build_vrt, open_raster, strips
from aefheight.inputs.sources.aoi import AOI
from aefheight.inputs.sources.local_dsm import check_fill_value
from aefheight.inputs.sources.spec import DSMSource

log = logging.getLogger(__name__)

STRIP_ROWS = 1024


def mosaics(src: DSMSource, work: Path, g: Grid) -> list[Path]:
    """One raster per (CRS, pixel size) group of the source's files: a VRT, or the file.

    An integer file without nodata is checked for holes written as a value (its part over
    the grid ``g``): they would become heights.
    """
    groups: dict[tuple, list[Path]] = defaultdict(list)
    singles: list[Path] = []
    for f in src.files:
        with open_raster(f) as ds:
            crs = src.crs or ds.crs
            t = ds.transform
            if crs is None:
                raise RasterError(f"{f} has no CRS")
            if src.nodata is None:
                check_fill_value(ds, f, None, transform_bounds(g.crs, crs, *g.bounds))
            if t.b or t.d or t.e >= 0:  # rotated or bottom-up: warped on its own
                if ds.crs is None or (src.crs and src.crs != ds.crs):
                    raise RasterError(
                        f"{f}: a rotated or bottom-up raster must carry its "
                        "own CRS (convert it with gdalwarp first)"
                    )
                singles.append(f)
                continue
            key = (
                crs.to_wkt(),
                round(t.a, 12),
                round(t.e, 12),
                round((t.c / t.a) % 1, 6),
                round((t.f / t.e) % 1, 6),
            )
            groups[key].append(f)
    out = []
    for i, files in enumerate(groups.values()):
        with open_raster(files[0]) as ds:
            crs = src.crs or ds.crs
        out.append(build_vrt(files, work / f"mosaic_{i}.vrt", crs, src.nodata))
    return out + singles


def source_resolution(ds: rasterio.io.DatasetReader, crs: CRS, dst_crs: CRS) -> float:
    """Approximate pixel size of ``ds`` in the target CRS's units."""
    tr, _, _ = calculate_default_transform(crs, dst_crs, ds.width, ds.height, *ds.bounds)
    return abs(tr.a)


class _Source(NamedTuple):
    """One opened mosaic and how it is warped onto the target grid."""

    ds: rasterio.io.DatasetReader
    crs: CRS
    bounds: tuple[float, float, float, float]
    method: Resampling
    nodata: float | None


def _open_sources(src: DSMSource, work: Path, g: Grid) -> list[_Source]:
    """Open each mosaic of ``src`` and choose its resampling; log the choice."""
    sources = []
    for path in mosaics(src, work, g):
        ds = open_raster(path)
        crs = ds.crs  # a VRT carries the CRS override
        res = source_resolution(ds, crs, g.crs)
        method = Resampling.average if res < 0.9 * g.res else Resampling.bilinear
        bounds = transform_bounds(crs, g.crs, *ds.bounds, densify_pts=21)
        nodata = src.nodata if src.nodata is not None else ds.nodata
        sources.append(_Source(ds, crs, bounds, method, nodata))
        log.info(
            "%s: %.2f m pixels in %s -> %s resampling",
            Path(path).name,
            res,
            g.crs.to_string(),
            method.name,
        )
    return sources


def _warp_strip(sources: list[_Source], t: Affine, n: int, g: Grid) -> np.ndarray:
    """Warp the sources onto one strip of ``n`` rows at ``t``; NaN where none is valid."""
    sb = (t.c, t.f + t.e * n, t.c + t.a * g.width, t.f)
    acc = np.full((n, g.width), np.nan, np.float32)
    for ds, crs, b, method, nodata in sources:
        if b[0] > sb[2] or b[2] < sb[0] or b[1] > sb[3] or b[3] < sb[1]:
            continue
        part = np.full_like(acc, np.nan)
        reproject(
            rasterio.band(ds, 1),
            part,
            src_crs=crs,
            src_nodata=nodata,
            dst_transform=t,
            dst_crs=g.crs,
            dst_nodata=np.nan,
            resampling=method,
        )
        take = np.isnan(acc) & ~np.isnan(part)  # earlier mosaics win where both are valid
        acc[take] = part[take]
    return acc


def _write_strips(
    dst: rasterio.io.DatasetWriter, aoi: AOI, sources: list[_Source], strip_rows: int
) -> tuple[int, int]:
    """Warp and write the grid strip by strip; return (valid, inside) pixel counts."""
    g = aoi.grid
    valid = inside_total = 0
    for r0, n in strips(g.height, strip_rows):
        t = g.transform @ Affine.translation(0, r0)
        acc = _warp_strip(sources, t, n, g)
        inside = aoi.inside(t, acc.shape)
        acc[~inside] = np.nan
        ok = ~np.isnan(acc)
        valid += int((ok & inside).sum())
        inside_total += int(inside.sum())
        dst.write(
            np.where(ok, acc, NODATA).astype(np.float32),
            1,
            window=((r0, r0 + n), (0, g.width)),
        )
    return valid, inside_total


def _tags(aoi: AOI, src: DSMSource, sources: list[_Source], fraction: float) -> dict[str, str]:
    """The provenance tags written into the co-registered raster."""
    return {
        "source": src.source,
        "product": src.product,
        "vertical_datum": src.vertical_datum,
        "native_resolution": src.native_resolution,
        "resolution_m": f"{aoi.grid.res:g}",
        "resampling": ",".join(sorted({s.method.name for s in sources})),
        "units": "m",
        "aoi": aoi.name,
        "valid_fraction": f"{fraction:.6f}",
    }


def _write_dsm(
    aoi: AOI, src: DSMSource, sources: list[_Source], out: str | os.PathLike, strip_rows: int
) -> tuple[dict[str, str], float]:
    """Write the warped DSM and its tags to ``out``, atomically; return (tags, valid fraction)."""
    with atomic_path(out) as tmp:
        with rasterio.open(tmp, "w", **aoi.grid.profile(1, "float32", NODATA)) as dst:
            valid, inside_total = _write_strips(dst, aoi, sources, strip_rows)
            fraction = valid / inside_total if inside_total else 0.0
            tags = _tags(aoi, src, sources, fraction)
            dst.update_tags(**tags)
            dst.set_band_description(1, "height_m")
        if valid == 0:  # raised inside atomic_path, so no partial ``out`` is left
            raise NoValidData(
                f"{aoi.describe()}: the {src.product} holds no valid height "
                "inside the AOI (wrong area or CRS?)"
            )
    return tags, fraction


def coregister(
    aoi: AOI,
    src: DSMSource,
    out: str | os.PathLike,
    work: str | os.PathLike,
    strip_rows: int = STRIP_ROWS,
) -> dict[str, Any]:
    """Warp the DSM onto ``aoi.grid`` and write ``out`` (float32, nodata -9999), atomically.

    Args:
        aoi: the AOI and its target grid (the embeddings' grid).
        src: the DSM files from :func:`.dsm.prepare`.
        out: the DSM GeoTIFF to write.
        work: a folder for the mosaic VRTs (kept: they are small).
        strip_rows: rows warped at once (bounds memory).

    Returns:
        Provenance: product, vertical datum, native resolution, resampling, valid fraction.
    """
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    g = aoi.grid
    sources = _open_sources(src, work, g)
    try:
        tags, fraction = _write_dsm(aoi, src, sources, out, strip_rows)
    finally:
        for s in sources:
            s.ds.close()
    log.info(
        "wrote %s: %s, %s, valid fraction inside the AOI %.4f",
        out,
        src.product,
        src.vertical_datum,
        fraction,
    )
    return {
        **tags,
        "valid_fraction": round(fraction, 6),
        "files": len(src.files),
        "details": src.details,
        "crs": g.crs.to_string(),
        "transform": list(g.transform)[:6],
        "shape": [g.height, g.width],
    }
