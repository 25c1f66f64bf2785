"""AOI geometry -> the target grid both downloaded rasters share.

Use :func:`target_grid` once per AOI: it reads the polygon (file or bbox), picks the UTM zone
of its centroid (or ``target_crs``), and snaps the bounds outward to multiples of the resolution
so that a 10 m AEF tile in the same zone maps onto the grid pixel for pixel (AEF's UTM grids
sit on multiples of 10 m). Both download steps call it with the same settings and get the same
grid, so they can run in parallel and still be co-registered.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import shapely
from affine import Affine
from pyproj import CRS as PCRS
from pyproj import Geod, Transformer
from rasterio.crs import CRS
from rasterio.features import geometry_mask
from shapely.geometry import box
from shapely.geometry.base import BaseGeometry

from aefheight.core.errors import ConfigError, NoValidData
from aefheight.core.raster import Grid
from aefheight.inputs.sources.spec import AOISpec

WGS84 = "EPSG:4326"


@dataclass(frozen=True)
class AOI:
    """An AOI on its target grid.

    Attributes:
        name: the config name (used in messages).
        grid: the 10 m target grid (UTM).
        polygon: the AOI in the grid's CRS.
        polygon_wgs84: the AOI in lon/lat (for index look-ups and tile names).
        mask_outside: whether pixels outside ``polygon`` are set to nodata.
    """

    name: str
    grid: Grid
    polygon: BaseGeometry
    polygon_wgs84: BaseGeometry
    mask_outside: bool = True

    @property
    def area_km2(self) -> float:
        """Ground area on the ellipsoid (a UTM area is off by far more for a large AOI)."""
        return geodesic_km2(self.polygon_wgs84)

    def inside(self, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
        """Boolean mask of the pixels whose centre is inside the AOI (all True if not masking)."""
        if not self.mask_outside:
            return np.ones(shape, bool)
        return geometry_mask([self.polygon], out_shape=shape, transform=transform, invert=True)

    def describe(self) -> str:
        x0, y0, x1, y1 = self.grid.bounds
        return (
            f"AOI {self.name!r} ({self.area_km2:,.0f} km², {self.grid.crs.to_string()} "
            f"[{x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}], {self.grid.width}x{self.grid.height} px)"
        )


def geodesic_km2(polygon_wgs84: BaseGeometry) -> float:
    """Area of a lon/lat polygon on the WGS 84 ellipsoid, in km².

    Edges are densified to 0.05° first, so a bbox's parallels are followed rather than cut
    short by geodesics.
    """
    dense = shapely.segmentize(polygon_wgs84, 0.05)
    area, _ = Geod(ellps="WGS84").geometry_area_perimeter(dense)
    return abs(area) / 1e6


def reproject_geometry(geom: BaseGeometry, src: str | CRS, dst: str | CRS) -> BaseGeometry:
    """Reproject a shapely geometry (densified first, so straight edges stay faithful)."""
    src_c, dst_c = PCRS.from_user_input(str(src)), PCRS.from_user_input(str(dst))
    if src_c == dst_c:
        return geom
    tr = Transformer.from_crs(src_c, dst_c, always_xy=True)
    minx, miny, maxx, maxy = geom.bounds
    step = max(maxx - minx, maxy - miny) / 64 or 1.0
    dense = shapely.segmentize(geom, step)
    return shapely.transform(dense, lambda x, y: tr.transform(x, y), interleaved=False)


def read_polygon(spec: AOISpec, section: str) -> tuple[BaseGeometry, str]:
    """The AOI polygon and its CRS, from a file (features unioned) or a bbox."""
    if spec.bbox is not None:
        return box(*spec.bbox), spec.crs
    import geopandas as gpd

    path = Path(spec.path or "")
    if not path.exists():
        raise ConfigError(f"{section}.path: AOI file {path} does not exist")
    try:
        gdf = gpd.read_file(path, layer=spec.layer) if spec.layer else gpd.read_file(path)
    except Exception as exc:
        raise ConfigError(f"{section}.path: cannot read AOI file {path}: {exc}") from exc
    if gdf.empty:
        raise ConfigError(f"{section}.path: AOI file {path} has no features")
    if gdf.crs is None:
        raise ConfigError(f"{section}.path: AOI file {path} has no CRS; set one (ogr2ogr -a_srs)")
    geom = shapely.union_all(gdf.geometry.values)
    if geom.is_empty or geom.area == 0:
        raise ConfigError(f"{section}.path: AOI file {path} has no polygon area")
    return shapely.make_valid(geom), gdf.crs.to_string()


def utm_crs_for(lon: float, lat: float) -> CRS:
    """WGS 84 / UTM CRS of the zone containing (lon, lat) (EPSG:326zz north, 327zz south)."""
    zone = math.floor((lon + 180.0) / 6.0) % 60 + 1
    return CRS.from_epsg((32600 if lat >= 0 else 32700) + zone)


def utm_zone_name(crs: CRS) -> str | None:
    """'30N' for EPSG:32630, '31S' for EPSG:32731, None for a non-UTM CRS (AEF's folder names)."""
    epsg = crs.to_epsg() or 0
    if 32601 <= epsg <= 32660:
        return f"{epsg - 32600}N"
    if 32701 <= epsg <= 32760:
        return f"{epsg - 32700}S"
    return None


def target_grid(name: str, spec: AOISpec, section: str = "aoi") -> AOI:
    """The AOI and its target grid: UTM zone of the centroid, bounds snapped to the resolution.

    Args:
        name: AOI name (config key) for messages.
        spec: the AOI settings.
        section: config path used in messages.
    """
    geom, crs = read_polygon(spec, section)
    wgs = reproject_geometry(geom, crs, WGS84)
    if spec.target_crs:
        try:
            dst = CRS.from_user_input(spec.target_crs)
        except Exception as exc:
            raise ConfigError(f"{section}.target_crs {spec.target_crs!r}: {exc}") from exc
    else:
        c = wgs.centroid
        dst = utm_crs_for(c.x, c.y)
    poly = reproject_geometry(geom, crs, dst.to_string())
    res = spec.resolution
    x0, y0, x1, y1 = poly.bounds
    left, bottom = math.floor(x0 / res) * res, math.floor(y0 / res) * res
    right, top = math.ceil(x1 / res) * res, math.ceil(y1 / res) * res
    width, height = round((right - left) / res), round((top - bottom) / res)
    if width < 1 or height < 1:
        raise NoValidData(f"AOI {name!r} is smaller than one {res:g} m pixel")
    grid = Grid(dst, Affine(res, 0, left, 0, -res, top), width, height)
    return AOI(name, grid, poly, wgs, spec.mask_outside)


@dataclass(frozen=True)
class Block:
    """A window of the target grid processed (and cached) as one unit."""

    row: int
    col: int
    height: int
    width: int
    transform: Affine

    @property
    def key(self) -> str:
        return f"r{self.row:06d}_c{self.col:06d}"

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        t = self.transform
        return (t.c, t.f + t.e * self.height, t.c + t.a * self.width, t.f)

    @property
    def window(self) -> tuple[tuple[int, int], tuple[int, int]]:
        return ((self.row, self.row + self.height), (self.col, self.col + self.width))


def blocks(grid: Grid, size: int) -> Iterator[Block]:
    """Row-major blocks of at most ``size`` x ``size`` px covering the grid."""
    for r in range(0, grid.height, size):
        for c in range(0, grid.width, size):
            h, w = min(size, grid.height - r), min(size, grid.width - c)
            yield Block(r, c, h, w, grid.transform @ Affine.translation(c, r))


def block_polygon(b: Block) -> BaseGeometry:
    """The footprint of block ``b`` as a rectangle in the target grid's CRS."""
    return box(*b.bounds)
