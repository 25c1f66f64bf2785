"""The AEF tile index: fetch it once, record its checksum, and pick the tiles an AOI needs.

Both hosts publish ``aef_index.parquet`` under ``.../v1/annual/`` (Google also ``.gpkg`` and
``.csv``): one row per COG with the columns ``geometry`` (the footprint in lon/lat), ``crs``
(``EPSG:326zz``), ``path`` (``gs://`` or ``s3://`` URI of the COG), ``year``, ``utm_zone``
(``30N``), ``utm_west/south/east/north`` (metres, in ``crs``) and
``wgs84_west/south/east/north``. The selection below uses only the ``utm_*``/``wgs84_*``
bounds, ``crs``, ``year`` and ``path``, so it does not depend on how the geometry is encoded.

Use :func:`fetch_index` in the index rule (once per source; cached under
``resources/aef/index/<source>/``), then :func:`load_index` and :func:`select_tiles` per AOI.
"""

from __future__ import annotations

import logging
import os
import posixpath
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from rasterio.crs import CRS
from shapely.geometry import box
from shapely.ops import unary_union

from aefheight.core.errors import AOIOutsideCoverage, DownloadError, YearNotAvailable
from aefheight.inputs.sources.aoi import AOI, reproject_geometry
from aefheight.inputs.sources.http import FileRecord, download_file, sha256_of, sidecar
from aefheight.inputs.sources.spec import DownloadSettings

log = logging.getLogger(__name__)

INDEX_NAME = "aef_index.parquet"
COLUMNS = (
    "crs",
    "path",
    "year",
    "utm_zone",
    "utm_west",
    "utm_south",
    "utm_east",
    "utm_north",
    "wgs84_west",
    "wgs84_south",
    "wgs84_east",
    "wgs84_north",
)


def index_url(source: str, settings: DownloadSettings) -> str:
    """URL of a source's ``aef_index.parquet`` (``source_coop`` or ``gcs``)."""
    return f"{settings.base_url(source)}/{INDEX_NAME}"


def gcs_auth() -> tuple[dict[str, str], dict[str, str]]:
    """(headers, query params) for a GCS HTTPS request, from the environment only.

    Google's bucket has been requester-pays (a later README says provider-pays from July
    2026): the billing project comes from ``GS_USER_PROJECT`` or ``GOOGLE_CLOUD_PROJECT``
    (sent as ``userProject``), the token from ``GOOGLE_OAUTH_ACCESS_TOKEN`` (e.g.
    ``gcloud auth print-access-token``) or Application Default Credentials via google-auth.
    Without either the request is anonymous. Nothing here is ever logged.
    """
    headers: dict[str, str] = {}
    params: dict[str, str] = {}
    project = os.environ.get("GS_USER_PROJECT") or os.environ.get("GOOGLE_CLOUD_PROJECT")
    if project:
        params["userProject"] = project
    token = os.environ.get("GOOGLE_OAUTH_ACCESS_TOKEN")
    if not token and (os.environ.get("GOOGLE_APPLICATION_CREDENTIALS") or project):
        try:
            import google.auth
            import google.auth.transport.requests

            creds, _ = google.auth.default(
                scopes=["https://www.googleapis.com/auth/devstorage.read_only"]
            )
            creds.refresh(google.auth.transport.requests.Request())
            token = creds.token
        except Exception as exc:
            log.warning(
                "no Google credentials found (%s); requesting anonymously", type(exc).__name__
            )
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return headers, params


def fetch_index(source: str, settings: DownloadSettings, out: str | os.PathLike) -> FileRecord:
    """Download a source's index to ``out`` (atomic, resumable) and record its SHA-256 beside it.

    Use it in the index rule: the checksum sidecar ``<out>.sha256`` lets later steps verify
    the cached index before trusting it.
    """
    url = index_url(source, settings)
    headers: dict[str, str] = {}
    if source == "gcs":
        headers, params = gcs_auth()
        if params:
            url = f"{url}?{urllib.parse.urlencode(params)}"
    rec = download_file(url, out, settings, headers=headers)
    log.info("AEF index (%s): %s, %d bytes, sha256 %s", source, out, rec.bytes, rec.sha256)
    return rec


def load_index(path: str | os.PathLike) -> pd.DataFrame:
    """Read a cached index, verifying it against its recorded checksum."""
    path = Path(path)
    rec = FileRecord.read(sidecar(path))
    if rec is None:
        raise DownloadError(f"{path} has no checksum record {sidecar(path)}; delete it and re-run")
    if sha256_of(path) != rec.sha256:
        raise DownloadError(
            f"{path} does not match its recorded checksum (corrupt or changed); delete it and "
            "re-run to fetch the index again"
        )
    cols = list(COLUMNS)
    try:
        df = pd.read_parquet(path, columns=cols)
    except Exception as exc:
        raise DownloadError(
            f"{path} is not an AEF index with the columns {', '.join(cols)}: {exc}"
        ) from exc
    df["year"] = df["year"].astype(int)
    return df


@dataclass(frozen=True)
class Tile:
    """One AEF COG the AOI needs."""

    path: str  # as in the index (gs:// or s3://)
    crs: CRS
    year: int
    utm_zone: str
    utm_bounds: tuple[float, float, float, float]

    @property
    def key(self) -> str:
        """``<year>/<zone>/<file>.tiff``: the part of the path shared by both hosts."""
        marker = "/v1/annual/"
        if marker in self.path:
            return self.path.split(marker, 1)[1]
        return f"{self.year}/{self.utm_zone}/{posixpath.basename(self.path)}"


def select_tiles(
    index: pd.DataFrame, aoi: AOI, year: int, allow_partial: bool = False
) -> list[Tile]:
    """The tiles of ``year`` that intersect the AOI, checking that together they cover it.

    Raises:
        YearNotAvailable: the index has no tile of ``year`` at all.
        AOIOutsideCoverage: no tile of ``year`` intersects the AOI, or (unless
            ``allow_partial``) part of the AOI lies outside every tile.
    """
    years = sorted(int(y) for y in index["year"].unique())
    if year not in years:
        span = ", ".join(map(str, years)) if years else "none"
        raise YearNotAvailable(
            f"{aoi.describe()}: AEF year {year} is not in the index (years available: {span})"
        )
    w, s, e, n = aoi.polygon_wgs84.bounds
    rows = index[
        (index["year"] == year)
        & (index["wgs84_west"] <= e)
        & (index["wgs84_east"] >= w)
        & (index["wgs84_south"] <= n)
        & (index["wgs84_north"] >= s)
    ]
    tiles: list[Tile] = []
    footprints = []
    for row in rows.itertuples(index=False):
        crs = CRS.from_user_input(row.crs)
        ub = (float(row.utm_west), float(row.utm_south), float(row.utm_east), float(row.utm_north))
        poly_tile_crs = reproject_geometry(aoi.polygon, aoi.grid.crs, crs)
        if not poly_tile_crs.intersects(box(*ub)):
            continue
        tiles.append(Tile(str(row.path), crs, int(row.year), str(row.utm_zone), ub))
        footprints.append(reproject_geometry(box(*ub), crs, aoi.grid.crs))
    if not tiles:
        raise AOIOutsideCoverage(
            f"{aoi.describe()} lies outside the AEF coverage of {year}: no tile intersects it "
            f"(lon {w:.4f}..{e:.4f}, lat {s:.4f}..{n:.4f})"
        )
    uncovered = aoi.polygon.difference(unary_union(footprints))
    frac = uncovered.area / aoi.polygon.area if aoi.polygon.area else 0.0
    if frac > 1e-6:
        x0, y0, x1, y1 = uncovered.bounds
        msg = (
            f"{aoi.describe()}: {100 * frac:.2f} % of it lies outside the AEF tiles of "
            f"{year} (uncovered part within [{x0:.0f}, {y0:.0f}, {x1:.0f}, {y1:.0f}] in "
            f"{aoi.grid.crs.to_string()})"
        )
        if not allow_partial:
            raise AOIOutsideCoverage(msg + "; set allow_partial_coverage: true to accept nodata")
        log.warning("%s; those pixels stay nodata", msg)
    log.info(
        "%d AEF tiles of %d cover %s (zones %s)",
        len(tiles),
        year,
        aoi.name,
        ", ".join(sorted({t.utm_zone for t in tiles})),
    )
    return tiles
