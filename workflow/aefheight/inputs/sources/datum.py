"""Vertical datums: bring the coarse DEM (GLO-30, EGM2008) onto the reference DSM's datum.

PROJ converts between vertical datums with geoid grids (e.g. ``fr_ign_RAF18.tif`` for
NGF-IGN69). Where the best transformation's grids are installed, :func:`convert` adds the
datum offset, computed on a lattice every ``LATTICE_PX`` pixels and interpolated bilinearly
(geoid offsets vary over tens of km); otherwise the heights stay as they are and the raster's
``vertical_datum_conversion`` tag (and the provenance) says which grid was missing. Nothing is
downloaded: PROJ's network access stays off.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import rasterio
from scipy.interpolate import RegularGridInterpolator

from aefheight.core.files import atomic_path
from aefheight.core.raster import Grid, open_raster, read_dsm_block, strips

log = logging.getLogger(__name__)

GLO30_VERTICAL = 3855  # EGM2008 height
LATTICE_PX = 64
EPSG_RE = re.compile(r"EPSG:(\d+)")

Offset = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (lon, lat) -> metres to add


def vertical_epsg(text: str) -> int | None:
    """The EPSG code named in a datum description (``"EGM2008 geoid (EPSG:3855)"``)."""
    m = EPSG_RE.search(text or "")
    return int(m.group(1)) if m else None


def proj_offset(from_epsg: int, to_epsg: int) -> tuple[Offset | None, str]:
    """PROJ's offset function from one vertical datum to another, or None and the reason."""
    from pyproj.transformer import TransformerGroup

    tg = TransformerGroup(f"EPSG:4326+{from_epsg}", f"EPSG:4326+{to_epsg}", always_xy=True)
    if tg.transformers and tg.best_available:
        t = tg.transformers[0]

        def offset(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
            return np.asarray(t.transform(lon, lat, np.zeros_like(lon))[2])

        return offset, f"EPSG:{from_epsg} -> EPSG:{to_epsg} by PROJ: {t.description}"
    grids = sorted({g.short_name for op in tg.unavailable_operations for g in op.grids})
    return None, (
        f"not applied: PROJ lacks the grid for EPSG:{from_epsg} -> EPSG:{to_epsg} here "
        f"({', '.join(grids) or 'no transformation'}); heights stay EGM2008, so the datum "
        "offset shows in the coarse DEM's bias"
    )


def lattice_offsets(grid: Grid, offset: Offset, step: int = LATTICE_PX) -> RegularGridInterpolator:
    """The offset on a lattice of pixel centres every ``step`` px, interpolated bilinearly."""
    from pyproj import Transformer

    rows = np.unique(np.r_[np.arange(0, grid.height, step), grid.height - 1]).astype(float)
    cols = np.unique(np.r_[np.arange(0, grid.width, step), grid.width - 1]).astype(float)
    rr, cc = np.meshgrid(rows, cols, indexing="ij")
    x, y = grid.transform @ (cc + 0.5, rr + 0.5)
    lon, lat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(x, y)
    return RegularGridInterpolator((rows, cols), offset(np.asarray(lon), np.asarray(lat)))


def add_offsets(path: Path, offset: Offset, strip_rows: int = 512) -> None:
    """Add the datum offset to a height raster in place (atomically), strip by strip."""
    with open_raster(path, bands=1) as src:
        grid, profile, tags = Grid.of(src), src.profile, src.tags()
        interp = lattice_offsets(grid, offset)
        with atomic_path(path) as tmp, rasterio.open(tmp, "w", **profile) as dst:
            cols = np.arange(grid.width, dtype=float)
            for r0, n in strips(grid.height, strip_rows):
                win = ((r0, r0 + n), (0, grid.width))
                z = read_dsm_block(src, win)
                rr, cc = np.meshgrid(np.arange(r0, r0 + n, dtype=float), cols, indexing="ij")
                z = z + interp((rr, cc)).astype(np.float32)
                dst.write(np.where(np.isnan(z), src.nodata, z).astype(np.float32), 1, window=win)
            dst.update_tags(**tags)


def convert(path: Path, reference_datum: str) -> str:
    """Bring GLO-30 heights at ``path`` onto ``reference_datum``; the note for the tags."""
    to = vertical_epsg(reference_datum)
    if to is None:
        note = f"not applied: the reference's datum {reference_datum!r} names no EPSG code"
    elif to == GLO30_VERTICAL:
        note = "none needed (the reference is on EGM2008 too)"
    else:
        offset, note = proj_offset(GLO30_VERTICAL, to)
        if offset is not None:
            add_offsets(path, offset)
    log.info("vertical datum: %s", note)
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(vertical_datum_conversion=note)
    return note
