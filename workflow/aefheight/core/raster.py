"""Raster I/O: the target grid, checked opening, windows and atomic (COG) writes.

Plain functions over rasterio. Every file this package writes goes to a temporary name in the
destination folder first and is renamed when complete, so an interrupted step never leaves a
partial file under its final name.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import numpy as np
import rasterio
from affine import Affine
from rasterio.crs import CRS
from rasterio.errors import CRSError, RasterioIOError
from rasterio.transform import array_bounds
from rasterio.windows import Window

from aefheight.core.errors import ConfigError, GridMismatch, RasterError, first_line
from aefheight.core.files import atomic_path, scratch_path

BLOCK = 256  # internal tile size of every GeoTIFF we write; patch sizes align to it
NODATA = -9999.0  # of the float32 rasters we write (DSMs, predictions): same as the synthetic DSM


@dataclass(frozen=True)
class Grid:
    """A raster grid: CRS, affine transform and shape. Two co-registered rasters share one."""

    crs: CRS
    transform: Affine
    width: int
    height: int

    @classmethod
    def of(cls, ds: rasterio.io.DatasetReader) -> Grid:
        """The grid of an open dataset."""
        return cls(ds.crs, ds.transform, ds.width, ds.height)

    @property
    def res(self) -> float:
        return float(self.transform.a)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) in CRS units."""
        return array_bounds(self.height, self.width, self.transform)

    def part(self, window: Window) -> Grid:
        """The grid of a window of this grid (e.g. a shard)."""
        t = rasterio.windows.transform(window, self.transform)
        return Grid(self.crs, t, int(window.width), int(window.height))

    def profile(self, count: int, dtype: str, nodata: float | int) -> dict:
        """A tiled, compressed GeoTIFF profile on this grid."""
        return {
            "driver": "GTiff",
            "crs": self.crs,
            "transform": self.transform,
            "width": self.width,
            "height": self.height,
            "count": count,
            "dtype": dtype,
            "nodata": nodata,
            "tiled": True,
            "blockxsize": BLOCK,
            "blockysize": BLOCK,
            "compress": "deflate",
            "interleave": "pixel",
            "bigtiff": "if_safer",
        }


# More pixels than any AOI (a 2600 km square at 10 m): a header declaring more is damaged
MAX_PIXELS = 2**36


def open_raster(path: str | os.PathLike, bands: int | None = None) -> rasterio.io.DatasetReader:
    """Open a raster, turning GDAL's errors into one clear :class:`RasterError`.

    Args:
        path: the raster.
        bands: the band count the step needs (checked), or None for any.
    """
    try:
        ds = rasterio.open(path)
    except RasterioIOError as exc:
        raise RasterError(
            f"cannot read raster {path} (missing, corrupt or truncated?): {first_line(exc)}"
        ) from None
    problem = None
    if ds.width * ds.height > MAX_PIXELS:
        problem = f"declares {ds.width} x {ds.height} px, more than any AOI (damaged header?)"
    elif bands is not None and ds.count != bands:
        problem = f"has {ds.count} bands; the step reads {bands}"
    elif not _last_block_reads(ds):
        problem = "is corrupt or truncated (last block unreadable): rerun the step that wrote it"
    if problem:
        ds.close()
        raise RasterError(f"raster {path} {problem}")
    return ds


def _last_block_reads(ds: rasterio.io.DatasetReader) -> bool:
    """Whether the last block of the last band reads.

    A file cut short (an interrupted copy or download) loses its end, also where the header at
    its start is intact and a step would read only the grid.
    """
    bh, bw = ds.block_shapes[-1]
    r0, c0 = (ds.height - 1) // bh * bh, (ds.width - 1) // bw * bw
    try:
        ds.read(ds.count, window=Window(c0, r0, min(bw, ds.width - c0), min(bh, ds.height - r0)))
    except RasterioIOError:
        return False
    return True


def check_same_grid(a: Grid, b: Grid, name_a: str, name_b: str) -> None:
    """Raise :class:`GridMismatch` naming what differs between two grids."""
    if a.crs is None or b.crs is None:
        missing = name_a if a.crs is None else name_b
        raise GridMismatch(f"{missing} has no CRS; assign one (e.g. gdal_edit.py -a_srs)")
    if a.crs != b.crs:
        raise GridMismatch(
            f"CRS differs: {name_a} is {a.crs.to_string()}, {name_b} is {b.crs.to_string()}; "
            "reproject one onto the other's grid (co-registration step)"
        )
    if (a.width, a.height) != (b.width, b.height) or not a.transform.almost_equals(
        b.transform, precision=1e-6
    ):
        raise GridMismatch(
            f"grid differs: {name_a} is {a.width}x{a.height} px at {tuple(a.transform)[:6]}, "
            f"{name_b} is {b.width}x{b.height} px at {tuple(b.transform)[:6]}"
        )


def read_checked(
    ds: rasterio.io.DatasetReader, window: Window | None = None, **kwargs: Any
) -> np.ndarray:
    """``ds.read`` that reports a truncated or corrupt file as :class:`RasterError`."""
    try:
        return ds.read(window=window, **kwargs)
    except RasterioIOError as exc:
        raise RasterError(f"{ds.name} is corrupt or truncated: {exc}") from exc


def parse_crs(value: str, key: str, metres: bool = False) -> CRS:
    """A CRS named in the config, or one line naming the key.

    Args:
        value: what the user wrote (``EPSG:32630``, a WKT or PROJ string).
        key: the config key, for the message.
        metres: require a projected CRS in metres (a grid whose pixel size is in m).
    """
    import pyproj  # checked by pyproj first: GDAL would print PROJ's raw error line as well

    try:
        pyproj.CRS.from_user_input(value)
        crs = CRS.from_user_input(value)
    except (pyproj.exceptions.CRSError, CRSError) as exc:
        raise ConfigError(
            f"{key} {value!r} is not a CRS PROJ knows ({exc}); e.g. EPSG:32630"
        ) from None
    units = (crs.linear_units or "").lower()
    if metres and not (crs.is_projected and units in ("metre", "meter", "m")):
        raise ConfigError(
            f"{key} {value!r} is not a projected CRS in metres (its pixel size is in m); "
            "use the AOI's UTM zone, e.g. EPSG:32630"
        )
    return crs


def read_dsm_block(
    ds: rasterio.io.DatasetReader, window: Window | None = None, band: int = 1
) -> np.ndarray:
    """Read a height band (a DSM, a prediction, an interval bound) as float32, NaN for nodata.

    Only declared nodata counts.
    """
    z = read_checked(ds, window, indexes=band).astype(np.float32, copy=False)
    nd = ds.nodata
    if nd is not None and not np.isnan(nd):
        z[z == nd] = np.nan
    return z


def strips(height: int, rows: int) -> Iterator[tuple[int, int]]:
    """(row_off, n_rows) pairs covering ``height`` in strips of ``rows`` rows."""
    for r in range(0, height, rows):
        yield r, min(rows, height - r)


def _vrt_metadata(tags: dict[str, str], indent: str) -> list[str]:
    if not tags:
        return []
    items = [f'{indent}  <MDI key="{escape(k)}">{escape(v)}</MDI>' for k, v in tags.items()]
    return [f"{indent}<Metadata>", *items, f"{indent}</Metadata>"]


def build_vrt(
    files: list[Path],
    out: Path,
    crs: CRS,
    nodata: float | None,
    tags: dict[str, str] | None = None,
    description: str | None = None,
) -> Path:
    """Write a mosaic VRT of north-up float32 rasters sharing a CRS and pixel size, atomically.

    Later files fill only where earlier ones are nodata (ComplexSource with NODATA), so tiles
    delivered twice (a département border) combine. ``tags`` and the band's ``description``
    go into the VRT, so that a copy of it (e.g. :func:`to_cog`) carries them.
    """
    infos = []
    for f in files:
        with open_raster(f) as ds:
            infos.append((f, ds.transform, ds.width, ds.height, ds.nodata, ds.dtypes[0]))
    a, e = infos[0][1].a, infos[0][1].e
    x0 = min(t.c for _, t, *_ in infos)
    y0 = max(t.f for _, t, *_ in infos)
    x1 = max(t.c + a * w for _, t, w, *_ in infos)
    y1 = min(t.f + e * h for _, t, _, h, *_ in infos)
    width, height = round((x1 - x0) / a), round((y1 - y0) / e)
    band_nodata = NODATA if nodata is None else nodata
    parts = [
        f'<VRTDataset rasterXSize="{width}" rasterYSize="{height}">',
        f"  <SRS>{escape(crs.to_wkt())}</SRS>",
        f"  <GeoTransform>{x0!r}, {a!r}, 0.0, {y0!r}, 0.0, {e!r}</GeoTransform>",
        *_vrt_metadata(tags or {}, "  "),
        '  <VRTRasterBand dataType="Float32" band="1">',
        *([f"    <Description>{escape(description)}</Description>"] if description else []),
        f"    <NoDataValue>{band_nodata!r}</NoDataValue>",
    ]
    for f, t, w, h, nd, _dt in infos:
        xo, yo = round((t.c - x0) / a), round((t.f - y0) / e)
        src_nd = nodata if nodata is not None else nd
        parts += [
            "    <ComplexSource>",
            f'      <SourceFilename relativeToVRT="0">{escape(str(Path(f).resolve()))}'
            "</SourceFilename>",
            "      <SourceBand>1</SourceBand>",
            f'      <SrcRect xOff="0" yOff="0" xSize="{w}" ySize="{h}"/>',
            f'      <DstRect xOff="{xo}" yOff="{yo}" xSize="{w}" ySize="{h}"/>',
            *([f"      <NODATA>{src_nd!r}</NODATA>"] if src_nd is not None else []),
            "    </ComplexSource>",
        ]
    parts += ["  </VRTRasterBand>", "</VRTDataset>"]
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(parts) + "\n")
    return out


def mosaic_cog(parts: Sequence[Path], out: Path) -> None:
    """One COG of the float32 rasters ``parts`` (e.g. a sharded AOI's predictions).

    Through a mosaic VRT: pixel values are copied as they are; the first part's tags and band
    description are carried over.
    """
    with open_raster(parts[0], bands=1) as first:
        tags, crs, nodata, description = (
            first.tags(),
            first.crs,
            first.nodata,
            first.descriptions[0],
        )
    with scratch_path(out, ".vrt") as vrt:
        build_vrt(list(parts), vrt, crs, nodata, tags, description)
        to_cog(vrt, out)


def window_origins(length: int, window: int, stride: int) -> list[int]:
    """Offsets of sliding windows covering ``length``; the last window ends at the edge."""
    if length <= window:
        return [0]
    origins = list(range(0, length - window, stride))
    return [*origins, length - window]


def to_cog(src: str | os.PathLike, dst: str | os.PathLike, resampling: str = "average") -> None:
    """Copy a tiled GeoTIFF into a Cloud Optimized GeoTIFF (with overviews), atomically.

    GDAL's COG driver streams by blocks, so memory stays bounded for any raster size.
    """
    from rasterio.shutil import copy

    with atomic_path(dst) as tmp:
        copy(
            src,
            tmp,
            driver="COG",
            compress="DEFLATE",
            blocksize=BLOCK,
            overview_resampling=resampling,
            bigtiff="IF_SAFER",
            num_threads="ALL_CPUS",
        )
