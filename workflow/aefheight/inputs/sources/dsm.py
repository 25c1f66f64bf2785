"""Reference DSM sources: fetch (and cache) the files an AOI needs, say what they are.

Each ``fetch_*`` function returns a :class:`DSMSource`: the local raster files, their CRS and
nodata, and the product's vertical datum and native resolution, ready for
:func:`.coregister.coregister`. Downloads are cached under ``resources/dsm/<source>/`` with a
checksum sidecar each, so a re-run (or an interrupted one) fetches only what is missing.

* ``copernicus_glo30``: 1 x 1 degree COG tiles named by their lower-left corner,
  ``Copernicus_DSM_COG_10_{N|S}{lat:02d}_00_{E|W}{lon:03d}_00_DEM``, at
  ``<base>/<name>/<name>.tif``, EPSG:4326, heights above EGM2008. Ocean tiles do not exist:
  ``<base>/tileList.txt`` lists the tiles that do, so a tile absent from the list is sea
  (nodata); a listed tile that cannot be fetched is an error.
* ``rge_alti``: IGN RGE ALTI, one 7z archive per département
  (``<base>/<id>/<id>.7z``, ``id`` like ``RGEALTI_2-0_5M_ASC_LAMB93-IGN69_D033_2021-04-19``)
  holding ESRI ASCII grids of 1000 x 1000 px named ``RGEALTI_FXX_<xxxx>_<yyyy>_MNT_LAMB93_IGN69
  .asc`` (xxxx, yyyy: km coordinates of the tile's upper-left corner), Lambert-93 (EPSG:2154),
  heights in NGF-IGN69. Only the tiles under the AOI are extracted (and converted to GeoTIFF).
  IGN documents RGE ALTI as a terrain model (MNT); the paper calls its reference a DSM.
* ``local``: a raster or VRT the user already has (a LiDAR DSM, say), checked by :mod:`.local_dsm`.
"""

from __future__ import annotations

import logging
import math
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import rasterio
from rasterio.crs import CRS
from rasterio.warp import transform_bounds

from aefheight.core.errors import (
    ConfigError,
    MissingTile,
    NoValidData,
    RasterError,
)
from aefheight.core.files import atomic_path
from aefheight.core.raster import open_raster
from aefheight.inputs.sources.aoi import AOI
from aefheight.inputs.sources.http import NotFound, download_file
from aefheight.inputs.sources.local_dsm import local_dsm
from aefheight.inputs.sources.spec import DownloadSettings, DSMSettings, DSMSource

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ Copernicus


def copernicus_tile_name(lat: int, lon: int) -> str:
    """Name of the GLO-30 tile whose lower-left corner is (lat, lon) in whole degrees."""
    ns = "N" if lat >= 0 else "S"
    ew = "E" if lon >= 0 else "W"
    return f"Copernicus_DSM_COG_10_{ns}{abs(lat):02d}_00_{ew}{abs(lon):03d}_00_DEM"


def copernicus_tiles_for(bounds: tuple[float, float, float, float]) -> list[tuple[int, int]]:
    """(lat, lon) lower-left corners of the 1-degree tiles intersecting lon/lat ``bounds``."""
    w, s, e, n = bounds
    lats = range(math.floor(s), math.ceil(n) if n > math.floor(n) else math.floor(n) + 1)
    lons = range(math.floor(w), math.ceil(e) if e > math.floor(e) else math.floor(e) + 1)
    return [(la, lo) for la in lats for lo in lons]


def fetch_copernicus(
    aoi: AOI, dsm: DSMSettings, downloads: DownloadSettings, cache: Path
) -> DSMSource:
    """Fetch the Copernicus GLO-30 tiles under the AOI (ocean tiles skipped)."""
    base = downloads.base_url("copernicus_glo30")
    cache = cache / "copernicus_glo30"
    margin = 0.002  # degrees (~200 m): the bilinear kernel at the AOI's edge
    w, s, e, n = aoi.polygon_wgs84.bounds
    wanted = copernicus_tiles_for((w - margin, s - margin, e + margin, n + margin))
    needed = set(copernicus_tiles_for((w, s, e, n)))
    try:
        download_file(f"{base}/tileList.txt", cache / "tileList.txt", downloads)
        text = (cache / "tileList.txt").read_text(errors="replace")
        listed: set[str] | None = {line.strip() for line in text.splitlines() if line.strip()}
    except NotFound:
        log.warning("no tileList.txt at %s: every tile is assumed to exist", base)
        listed = None
    files, ocean, missing = [], [], []
    for lat, lon in wanted:
        name = copernicus_tile_name(lat, lon)
        if listed is not None and name not in listed:
            ocean.append(name)
            continue
        try:
            download_file(f"{base}/{name}/{name}.tif", cache / f"{name}.tif", downloads)
            files.append(cache / f"{name}.tif")
        except NotFound:
            if (lat, lon) in needed:
                missing.append(name)
    if ocean:
        log.info("no GLO-30 tile (sea) for %s: left nodata", ", ".join(ocean))
    if missing and dsm.missing_tiles == "error":
        raise MissingTile(
            f"{aoi.describe()}: Copernicus GLO-30 cut_patches(s) missing at {base}: "
            f"{', '.join(missing)} (set dsm.missing_tiles: nodata to accept the gap)"
        )
    if not files:
        raise NoValidData(f"{aoi.describe()}: no Copernicus GLO-30 tile covers it (all sea?)")
    return DSMSource(
        "copernicus_glo30",
        "Copernicus DEM GLO-30 (DSM)",
        files,
        "EGM2008 geoid (EPSG:3855)",
        "1 arc-second (~30 m)",
        details={
            "tiles": [f.stem for f in files],
            "sea_tiles": ocean,
            "missing_tiles": missing,
            "base_url": base,
        },
    )


# ------------------------------------------------------------------------------ RGE ALTI

ARCHIVE_RE = re.compile(
    r"^RGEALTI_(?P<version>[\d-]+)_(?P<res>\d+)M_ASC_(?P<proj>[A-Z0-9]+)-(?P<datum>[A-Z0-9]+)"
    r"_D(?P<dep>\w+?)_(?P<date>\d{4}-\d{2}-\d{2})$"
)
TILE_RE = re.compile(r"_(\d{4})_(\d{4})_MNT_[A-Z0-9]+_[A-Z0-9]+\.asc$", re.IGNORECASE)
RGE_PROJ = {"LAMB93": "EPSG:2154"}
RGE_DATUM = {"IGN69": "NGF-IGN69 (EPSG:5720)", "IGN78C": "NGF-IGN78 Corse (EPSG:5721)"}


@dataclass(frozen=True)
class Archive:
    """An RGE ALTI delivery (one département) parsed from its id."""

    id: str
    res_m: int
    crs: str
    datum: str
    departement: str

    @classmethod
    def parse(cls, archive_id: str, section: str) -> Archive:
        m = ARCHIVE_RE.match(archive_id)
        if not m:
            raise ConfigError(
                f"{section}: {archive_id!r} is not an RGE ALTI archive id like "
                "RGEALTI_2-0_5M_ASC_LAMB93-IGN69_D033_2021-04-19"
            )
        if m["proj"] not in RGE_PROJ or m["datum"] not in RGE_DATUM:
            raise ConfigError(
                f"{section}: {archive_id}: projection {m['proj']} / datum "
                f"{m['datum']} not supported (LAMB93 with IGN69 or IGN78C)"
            )
        return cls(archive_id, int(m["res"]), RGE_PROJ[m["proj"]], RGE_DATUM[m["datum"]], m["dep"])

    @property
    def tile_m(self) -> int:
        """Side of a 1000 x 1000 px tile in metres (5 km for the 5 m product)."""
        return 1000 * self.res_m


def rge_alti_tile_keys(
    bounds: tuple[float, float, float, float], tile_m: int, res_m: float
) -> list[str]:
    """``xxxx_yyyy`` keys of the tiles over Lambert-93 ``bounds``.

    ``xxxx``/``yyyy`` are the km coordinates of a tile's upper-left corner; the grid is
    pixel-is-point, so tile ``0980_6730`` (5 m) spans x 979997.5-984997.5 and
    y 6725002.5-6730002.5: half a pixel west and north of its nominal square.
    """
    h = res_m / 2
    x0, y0, x1, y1 = bounds[0] + h, bounds[1] - h, bounds[2] + h, bounds[3] - h
    keys = []
    for x in range(math.floor(x0 / tile_m) * tile_m, math.ceil(x1 / tile_m) * tile_m, tile_m):
        for y in range(math.floor(y0 / tile_m) * tile_m, math.ceil(y1 / tile_m) * tile_m, tile_m):
            keys.append(f"{x // 1000:04d}_{(y + tile_m) // 1000:04d}")
    return keys


def asc_to_tif(asc: Path, tif: Path, crs: str) -> None:
    """Convert one ESRI ASCII grid into a float32 GeoTIFF with its CRS, atomically."""
    with open_raster(asc) as src:
        arr = src.read(1).astype("float32")
        prof = {
            "driver": "GTiff",
            "width": src.width,
            "height": src.height,
            "count": 1,
            "dtype": "float32",
            "crs": CRS.from_user_input(crs),
            "transform": src.transform,
            "nodata": src.nodata,
            "compress": "deflate",
            "tiled": True,
            "blockxsize": 256,
            "blockysize": 256,
        }
    with atomic_path(tif) as tmp, rasterio.open(tmp, "w", **prof) as dst:
        dst.write(arr, 1)


def _rge_alti_keys(aoi: AOI, arc: Archive) -> tuple[list[str], set[str]]:
    """Tile keys over the grid plus a margin (wanted) and under the AOI polygon (needed)."""
    bounds = transform_bounds(aoi.grid.crs, arc.crs, *aoi.grid.bounds, densify_pts=21)
    margin = 2 * aoi.grid.res
    wanted = rge_alti_tile_keys(
        (bounds[0] - margin, bounds[1] - margin, bounds[2] + margin, bounds[3] + margin),
        arc.tile_m,
        arc.res_m,
    )
    pb = aoi.polygon.bounds
    needed = set(
        rge_alti_tile_keys(
            transform_bounds(aoi.grid.crs, arc.crs, *pb, densify_pts=21), arc.tile_m, arc.res_m
        )
    )
    return wanted, needed


def _archive_members(path: Path) -> dict[str, str]:
    """Map the ``xxxx_yyyy`` key of each tile in a 7z archive to its member name."""
    import py7zr

    try:
        with py7zr.SevenZipFile(path, "r") as z:
            members = {}
            for m in z.getnames():
                hit = TILE_RE.search(m)
                if hit:
                    members[f"{hit.group(1)}_{hit.group(2)}"] = m
    except (py7zr.exceptions.Bad7zFile, OSError, EOFError) as exc:
        raise RasterError(
            f"{path} is not a readable 7z archive ({exc}); delete it and re-run"
        ) from exc
    return members


def _fetch_archive_tiles(
    arc: Archive, wanted: list[str], base: str, downloads: DownloadSettings, cache: Path
) -> list[str]:
    """Download one archive, convert its wanted tiles not yet cached; return the keys it holds."""
    import py7zr

    path = cache / f"{arc.id}.7z"
    download_file(f"{base}/{arc.id}/{arc.id}.7z", path, downloads)
    out_dir = cache / arc.id
    members = _archive_members(path)
    here = [k for k in wanted if k in members]
    todo = [k for k in here if not (out_dir / f"{k}.tif").exists()]
    log.info("%s: %d tiles under the AOI (%d to extract)", arc.id, len(here), len(todo))
    if todo:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=cache, prefix=".extract-") as tmp:
            with py7zr.SevenZipFile(path, "r") as z:
                z.extract(path=tmp, targets=[members[k] for k in todo])
            for k in todo:
                asc_to_tif(Path(tmp) / members[k], out_dir / f"{k}.tif", arc.crs)
    return here


def _missing_rge_tiles(
    aoi: AOI,
    dsm: DSMSettings,
    archives: list[Archive],
    needed: set[str],
    found: dict[str, list[Path]],
) -> list[str]:
    """Needed tile keys no archive holds; raise MissingTile unless gaps are accepted."""
    missing = sorted(k for k in needed if k not in found)
    if missing and dsm.missing_tiles == "error":
        names = [f"RGEALTI_FXX_{k}_MNT_*.asc" for k in missing]
        raise MissingTile(
            f"{aoi.describe()}: RGE ALTI cut_patches(s) {', '.join(names[:12])}"
            f"{' ...' if len(names) > 12 else ''} ({len(missing)} in all) are in none of the "
            f"archives {', '.join(a.id for a in archives)}; add the archive of the neighbouring "
            "département, or set dsm.missing_tiles: nodata if the AOI reaches the sea/border"
        )
    return missing


def fetch_rge_alti(
    aoi: AOI, dsm: DSMSettings, downloads: DownloadSettings, cache: Path, section: str = "dsm"
) -> DSMSource:
    """Fetch the listed RGE ALTI archives and extract the tiles under the AOI."""
    import py7zr  # noqa: F401  (optional dependency: fail before parsing or downloading)

    archives = [Archive.parse(a, f"{section}.archives") for a in dsm.archives]
    if len({(a.crs, a.res_m) for a in archives}) > 1:
        raise ConfigError(f"{section}.archives mix projections or resolutions")
    base = downloads.base_url("rge_alti")
    crs = archives[0].crs
    cache = cache / "rge_alti"
    wanted, needed = _rge_alti_keys(aoi, archives[0])
    found: dict[str, list[Path]] = {}
    for arc in archives:
        for k in _fetch_archive_tiles(arc, wanted, base, downloads, cache):
            found.setdefault(k, []).append(cache / arc.id / f"{k}.tif")
    missing = _missing_rge_tiles(aoi, dsm, archives, needed, found)
    if not found:
        raise NoValidData(f"{aoi.describe()}: no RGE ALTI tile of the listed archives covers it")
    files = [p for k in sorted(found) for p in found[k]]
    return DSMSource(
        "rge_alti",
        f"IGN RGE ALTI {archives[0].res_m} m",
        files,
        archives[0].datum,
        f"{archives[0].res_m} m",
        crs=CRS.from_user_input(crs),
        details={
            "archives": [a.id for a in archives],
            "tiles": sorted(found),
            "missing_tiles": missing,
            "base_url": base,
        },
    )


# ------------------------------------------------------------------------------ local


def prepare(
    aoi: AOI,
    dsm: DSMSettings,
    downloads: DownloadSettings,
    cache: str | os.PathLike,
    section: str = "dsm",
) -> DSMSource:
    """Fetch (or find) the DSM files for ``aoi`` from the configured source."""
    cache = Path(cache)
    if dsm.source == "copernicus_glo30":
        src = fetch_copernicus(aoi, dsm, downloads, cache)
    elif dsm.source == "rge_alti":
        src = fetch_rge_alti(aoi, dsm, downloads, cache, section)
    else:
        src = local_dsm(aoi, dsm, section)
    if dsm.vertical_datum and src.source != "local":
        log.info("dsm.vertical_datum %r overrides %r", dsm.vertical_datum, src.vertical_datum)
        src.vertical_datum = dsm.vertical_datum
    return src


def clean_extractions(cache: str | os.PathLike) -> None:
    """Remove leftover temporary extraction folders (from an interrupted run)."""
    for p in Path(cache, "rge_alti").glob(".extract-*"):
        shutil.rmtree(p, ignore_errors=True)
