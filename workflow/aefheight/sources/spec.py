"""Settings of a downloaded AOI, read from the (schema-validated) config.

Three config sections feed the download steps:

* ``aois.<name>`` (``source``, ``year``, ``aoi``, ``dsm``): what to fetch, see
  :class:`RealAOISettings`, :class:`AOISpec` and :class:`DSMSettings`;
* ``downloads``: where from and how hard to retry, see :class:`DownloadSettings`.

Credentials never appear here: they come from the environment only (see :mod:`.http`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError
from ..settings import from_mapping

EMBEDDING_SOURCES = ("source_coop", "gcs", "earthengine")
DSM_SOURCES = ("copernicus_glo30", "rge_alti", "local")

# Public endpoints (checked against the providers' documentation, see README "Real data"):
SOURCE_COOP_URL = "https://data.source.coop/tge-labs/aef/v1/annual"
GCS_URL = "https://storage.googleapis.com/alphaearth_foundations/satellite_embedding/v1/annual"
COPERNICUS_GLO30_URL = "https://copernicus-dem-30m.s3.amazonaws.com"
RGE_ALTI_URL = "https://data.geopf.fr/telechargement/download/RGEALTI"


@dataclass(frozen=True)
class DownloadSettings:
    """Network settings shared by every download (config ``downloads``).

    The ``*_url`` keys are base URLs; point them at a mirror (the tests point them at a local
    server on 127.0.0.1). ``max_retry``/``retry_delay_s`` apply to every HTTP request, ours and
    GDAL's range requests alike; the delay doubles after each failure.
    """

    source_coop_url: str = SOURCE_COOP_URL
    gcs_url: str = GCS_URL
    copernicus_glo30_url: str = COPERNICUS_GLO30_URL
    rge_alti_url: str = RGE_ALTI_URL
    max_retry: int = 6
    retry_delay_s: float = 1.0
    timeout_s: float = 60.0
    block_px: int = 1024  # embedding blocks fetched (and cached for resume) at once
    multiplex: bool = True  # HTTP/2 multiplexing of GDAL's range requests

    def check(self, section: str) -> None:
        for key in ("source_coop_url", "gcs_url", "copernicus_glo30_url", "rge_alti_url"):
            url = getattr(self, key)
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"{section}.{key} must be an http(s) URL, got {url!r}")
        if self.max_retry < 0 or self.retry_delay_s < 0 or self.timeout_s <= 0:
            raise ConfigError(f"{section}: max_retry, retry_delay_s must be >= 0, timeout_s > 0")
        if self.block_px < 16:
            raise ConfigError(f"{section}.block_px must be >= 16")

    def base_url(self, source: str) -> str:
        """The base URL of a source, without a trailing slash."""
        return getattr(self, f"{source}_url").rstrip("/")


@dataclass(frozen=True)
class AOISpec:
    """Where the AOI is (config ``aois.<name>.aoi``): a polygon file or a bbox with its CRS.

    Use ``path`` for a GeoJSON/GeoPackage/any OGR file (all features are unioned; ``layer``
    picks a layer of a multi-layer GeoPackage), or ``bbox`` ``[xmin, ymin, xmax, ymax]`` in
    ``crs``. The target grid is the AOI's UTM zone (from its centroid) unless ``target_crs``
    names one.
    """

    path: str | None = None
    layer: str | None = None
    bbox: tuple[float, float, float, float] | None = None
    crs: str = "EPSG:4326"
    target_crs: str | None = None
    resolution: float = 10.0
    mask_outside: bool = True  # pixels outside the polygon become nodata in both rasters

    def check(self, section: str) -> None:
        if (self.path is None) == (self.bbox is None):
            raise ConfigError(f"{section}: give exactly one of path (a polygon file) or bbox")
        if self.bbox is not None:
            if len(self.bbox) != 4:
                raise ConfigError(f"{section}.bbox must be [xmin, ymin, xmax, ymax]")
            x0, y0, x1, y1 = self.bbox
            if not (x1 > x0 and y1 > y0):
                raise ConfigError(f"{section}.bbox must have xmin < xmax and ymin < ymax")
        if self.resolution <= 0:
            raise ConfigError(f"{section}.resolution must be > 0")


@dataclass(frozen=True)
class DSMSettings:
    """The reference DSM (config ``aois.<name>.dsm``).

    * ``copernicus_glo30``: public 1x1 degree COG tiles (EGM2008 heights), fetched as needed;
    * ``rge_alti``: IGN RGE ALTI per-département 7z archives named in ``archives`` (their ids,
      e.g. ``RGEALTI_2-0_5M_ASC_LAMB93-IGN69_D033_2021-04-19``), IGN69 heights;
    * ``local``: any raster or VRT at ``path`` (``crs``/``nodata`` override what it lacks).

    ``missing_tiles``: ``error`` stops when a tile the AOI needs is missing (name it);
    ``nodata`` leaves its pixels as nodata (an AOI reaching the sea or a border).
    """

    source: str = "copernicus_glo30"
    archives: tuple[str, ...] = ()
    path: str | None = None
    crs: str | None = None
    nodata: float | None = None
    vertical_datum: str | None = None
    missing_tiles: str = "error"

    def check(self, section: str) -> None:
        if self.source not in DSM_SOURCES:
            raise ConfigError(
                f"{section}.source {self.source!r} is not one of {', '.join(DSM_SOURCES)}"
            )
        if self.missing_tiles not in ("error", "nodata"):
            raise ConfigError(f"{section}.missing_tiles must be 'error' or 'nodata'")
        if self.source == "rge_alti" and not self.archives:
            raise ConfigError(
                f"{section}.archives must list the RGE ALTI archives covering the AOI "
                "(ids like RGEALTI_2-0_5M_ASC_LAMB93-IGN69_D033_2021-04-19; one per département)"
            )
        if self.source == "local" and not self.path:
            raise ConfigError(f"{section}.path must name the local DSM raster or VRT")


@dataclass(frozen=True)
class RealAOISettings:
    """A downloaded AOI (config ``aois.<name>`` with a real ``source``)."""

    source: str = "source_coop"
    year: int = 2020
    aoi: dict[str, Any] = field(default_factory=dict)
    dsm: dict[str, Any] = field(default_factory=dict)
    allow_partial_coverage: bool = False  # else an AOI partly outside AEF coverage stops
    synthetic: dict[str, Any] | None = None  # ignored here (the synthetic AOI's section)

    def check(self, section: str) -> None:
        if self.source not in EMBEDDING_SOURCES:
            raise ConfigError(
                f"{section}.source {self.source!r} is not a download source "
                f"({', '.join(EMBEDDING_SOURCES)})"
            )
        if not self.aoi:
            raise ConfigError(f"{section}.aoi is required (a polygon path or a bbox)")

    def aoi_spec(self, section: str) -> AOISpec:
        return from_mapping(AOISpec, self.aoi, f"{section}.aoi")

    def dsm_settings(self, section: str) -> DSMSettings:
        return from_mapping(DSMSettings, self.dsm, f"{section}.dsm")
