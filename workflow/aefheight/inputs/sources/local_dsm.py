"""A DSM the user already has (``dsm.source: local``): checked before it is used.

A raster or VRT must cover ``dsm.min_covered_fraction`` of the AOI (a VRT's footprint is the
union of its files, so a missing tile is uncovered) and may not hide holes behind a fill
value: an integer raster without declared nodata whose 0 / min / max holds
:data:`FILL_SHARE` of the AOI's pixels is refused. The main process runs the same checks before
any job (:mod:`aefheight.guards`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.errors import CRSError, RasterioError, WindowError
from rasterio.warp import transform_bounds
from rasterio.windows import Window, from_bounds
from shapely import unary_union
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from aefheight.core.errors import (
    AOIOutsideCoverage,
    ConfigError,
    RasterError,
    SuspiciousValues,
)
from aefheight.core.raster import open_raster
from aefheight.inputs.sources.aoi import AOI
from aefheight.inputs.sources.spec import DSMSettings, DSMSource


def local_dsm(aoi: AOI, dsm: DSMSettings, section: str = "dsm") -> DSMSource:
    """A DSM the user has: any raster or VRT GDAL reads, covering the AOI, holes declared.

    Raises:
        AOIOutsideCoverage: its footprint covers less than ``dsm.min_covered_fraction`` of
            the AOI.
        SuspiciousValues: an integer raster without nodata (declared or ``dsm.nodata``) in
            which 0 or its type's minimum or maximum holds a large share of the pixels.
    """
    path = Path(dsm.path or "")
    if not path.exists():
        raise ConfigError(f"{section}.path: {path} does not exist")
    crs_override = CRS.from_user_input(dsm.crs) if dsm.crs else None
    with open_raster(path) as ds:
        if ds.crs is None and crs_override is None:
            raise ConfigError(f"{section}.path: {path} has no CRS; set {section}.crs")
        if ds.count != 1:  # band 1 would be taken as height without a word
            raise RasterError(
                f"{section}.path: {path} has {ds.count} bands; a DSM has one height band "
                "(extract it first, e.g. gdal_translate -b 1)"
            )
        crs = crs_override or ds.crs
        unit = "deg" if crs.is_geographic else "m"
        native = f"{abs(ds.transform.a):g} {unit}"
        try:  # the AOI in the raster's CRS, and the raster's footprint in the grid's
            aoi_bounds = transform_bounds(aoi.grid.crs, crs, *aoi.grid.bounds, densify_pts=21)
            footprint = footprint_of(ds, crs, aoi.grid.crs)
        except (RasterioError, CRSError) as exc:
            raise RasterError(
                f"{section}.path: cannot place {path} on the AOI's grid: {exc}"
            ) from None
        check_coverage(aoi, footprint, dsm.min_covered_fraction, path, section)
        if dsm.nodata is None:
            check_fill_value(ds, path, f"{section}.nodata", aoi_bounds)
    return DSMSource(
        "local",
        f"local raster {path.name}",
        [path],
        dsm.vertical_datum or "unknown (set dsm.vertical_datum)",
        native,
        crs=crs_override,
        nodata=dsm.nodata,
        details={"path": str(path)},
    )


def footprint_of(ds: rasterio.io.DatasetReader, crs: CRS, grid_crs: CRS) -> BaseGeometry:
    """Where a raster has pixels, in the grid's CRS: its bounds, or a VRT's files' bounds.

    A VRT's extent spans its tiles, also where one is missing; its files do not.
    """
    files = ds.files[1:] if ds.driver == "VRT" else []
    bounds = [ds.bounds]
    if files:
        bounds = []
        for f in files:
            with rasterio.open(f) as part:
                bounds.append(part.bounds)
    return unary_union([box(*transform_bounds(crs, grid_crs, *b, densify_pts=21)) for b in bounds])


def check_coverage(
    aoi: AOI, footprint: BaseGeometry, minimum: float, path: Path, section: str
) -> None:
    """Refuse a raster whose footprint (in the grid's CRS) covers too little of the AOI."""
    covered = aoi.polygon.intersection(footprint).area / aoi.polygon.area
    if covered < minimum:
        raise AOIOutsideCoverage(
            f"{section}.path: {path} covers {covered:.1%} of {aoi.describe()}, less than "
            f"{section}.min_covered_fraction ({minimum:g}); shrink the AOI to the raster, give "
            f"the missing tiles (a VRT of all of them), or lower {section}.min_covered_fraction"
        )


FILL_SHARE = 0.05  # a fill-like value on this share of the pixels is taken for holes


SAMPLE_PX = 1024  # a raster is checked on a nearest-neighbour sample at most this wide


def fill_value(
    ds: rasterio.io.DatasetReader, bounds: tuple[float, ...] | None = None
) -> tuple[int, float] | None:
    """(value, share) of a fill-like value in an integer raster without nodata, or None.

    The value is 0 or the type's minimum or maximum, holding at least :data:`FILL_SHARE` of
    a nearest-neighbour sample (at most :data:`SAMPLE_PX` px a side) of the raster, or of its
    part inside ``bounds`` (the AOI, in the raster's CRS).
    """
    dtype = np.dtype(ds.dtypes[0])
    if ds.nodata is not None or not np.issubdtype(dtype, np.integer):
        return None
    window = Window(0, 0, ds.width, ds.height)
    if bounds is not None:
        try:
            aoi = from_bounds(*bounds, transform=ds.transform).round_offsets().round_lengths()
            window = window.intersection(aoi)
        except WindowError:  # the raster misses the AOI (or is rotated): the whole of it
            pass
    step = max(1.0, max(window.width, window.height) / SAMPLE_PX)
    shape = (max(1, round(window.height / step)), max(1, round(window.width / step)))
    sample = ds.read(1, window=window, out_shape=shape, resampling=Resampling.nearest)
    info = np.iinfo(dtype)
    for value in dict.fromkeys((0, int(info.min), int(info.max))):
        share = float((sample == value).mean())
        if share >= FILL_SHARE:
            return value, share
    return None


def check_fill_value(
    ds: rasterio.io.DatasetReader,
    path: Path | str,
    key: str | None,
    bounds: tuple[float, ...] | None = None,
) -> None:
    """Raise :class:`SuspiciousValues` naming the value, its share and the fix.

    Args:
        ds: the opened raster.
        path: its path, for the message.
        key: the config key declaring its nodata, or None (the fix is then in the file).
        bounds: the AOI in the raster's CRS (only that part is sampled), or None.
    """
    hit = fill_value(ds, bounds)
    if hit is None:
        return
    value, share = hit
    if key is None:
        fix = f"if they are holes declare it in the file (gdal_edit.py -a_nodata {value} {path})"
    else:
        fix = (
            f"if they are holes set {key}: {value}, if they are heights set {key} to a value "
            "it never takes (e.g. -9999)"
        )
    raise SuspiciousValues(
        f"{path}: {share:.1%} of its pixels are {value} and it declares no nodata; {fix}"
    )
