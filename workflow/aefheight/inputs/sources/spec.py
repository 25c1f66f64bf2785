"""Settings of a downloaded AOI, read from the (schema-validated) config.

Three config sections feed the download steps:

* ``aois.<name>`` (``source``, ``year``, ``aoi``, ``dsm``): what to fetch, see
  :class:`RealAOISettings`, :class:`AOISpec` and :class:`DSMSettings`;
* ``downloads``: where from and how hard to retry, see :class:`DownloadSettings`.

Credentials never appear here: they come from the environment only (see :mod:`.http`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from rasterio.crs import CRS

from aefheight.core.errors import ConfigError
from aefheight.core.schema import from_mapping

# The public endpoints are the schema's defaults of the downloads section (checked against the
# providers' documentation, see README "Real data").


@dataclass(frozen=True)
class DownloadSettings:
    """Network settings shared by every download (config ``downloads``).

    The ``*_url`` keys are base URLs; point them at a mirror (the tests point them at a local
    server on 127.0.0.1). ``max_retry``/``retry_delay_s`` apply to every HTTP request, ours and
    GDAL's range requests alike; the delay doubles after each failure.
    """

    SECTION: ClassVar[str] = "downloads"
    source_coop_url: str
    gcs_url: str
    copernicus_glo30_url: str
    rge_alti_url: str
    tessera_url: str
    max_retry: int
    retry_delay_s: float
    timeout_s: float
    block_px: int  # embedding blocks fetched (and cached for resume) at once
    multiplex: bool  # HTTP/2 multiplexing of GDAL's range requests

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

    SECTION: ClassVar[str] = "aois.<name>.aoi"
    path: str | None
    layer: str | None
    bbox: tuple[float, float, float, float] | None
    crs: str
    target_crs: str | None
    resolution: float
    mask_outside: bool  # pixels outside the polygon become nodata in both rasters

    def check(self, section: str) -> None:
        """Cross-field rules: one of path or bbox; a bbox with xmin < xmax, ymin < ymax."""
        if (self.path is None) == (self.bbox is None):
            raise ConfigError(f"{section}: give exactly one of path (a polygon file) or bbox")
        from aefheight.core.raster import parse_crs

        crs = parse_crs(self.crs, f"{section}.crs")
        if self.target_crs is not None:
            parse_crs(self.target_crs, f"{section}.target_crs", metres=True)
        if self.bbox is not None:
            x0, y0, x1, y1 = self.bbox
            if not (x1 > x0 and y1 > y0):
                raise ConfigError(f"{section}.bbox must have xmin < xmax and ymin < ymax")
            if crs.is_geographic and not (-180 <= x0 and x1 <= 180 and -90 <= y0 and y1 <= 90):
                raise ConfigError(
                    f"{section}.bbox {list(self.bbox)} is not in degrees of {self.crs}: "
                    f"set {section}.crs to the bbox's CRS (e.g. EPSG:2154)"
                )


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

    SECTION: ClassVar[str] = "aois.<name>.dsm"
    source: str
    archives: tuple[str, ...]
    path: str | None
    crs: str | None
    nodata: float | None
    vertical_datum: str | None
    missing_tiles: str
    min_covered_fraction: float  # local: the share of the AOI its footprint must cover

    def check(self, section: str) -> None:
        """Cross-field rules: rge_alti needs its archives, local its path; a CRS PROJ reads."""
        if self.crs is not None:
            from aefheight.core.raster import parse_crs

            parse_crs(self.crs, f"{section}.crs")
        if self.source == "rge_alti" and not self.archives:
            raise ConfigError(
                f"{section}.archives must list the RGE ALTI archives covering the AOI "
                "(ids like RGEALTI_2-0_5M_ASC_LAMB93-IGN69_D033_2021-04-19; one per département)"
            )
        if self.source == "local" and not self.path:
            raise ConfigError(f"{section}.path must name the local DSM raster or VRT")


@dataclass(frozen=True)
class EmbeddingSettings:
    """Embeddings the user already has (config ``aois.<name>.embeddings``, ``source: local``).

    ``path``: a GeoTIFF, a VRT or a folder of tiles (``*.tif``, ``*.tiff``, ``*.vrt``). The
    ``product`` fixes how values become model input: ``aef`` int8 codes keep AEF's formula and
    float exports pass through; ``tessera`` is float32 (de-quantized); ``generic`` names its
    ``dequantization``: ``none`` (values as they are), ``aef`` (int8 codes, AEF's formula) or
    ``scale_offset`` (``value * scale + offset``).
    """

    SECTION: ClassVar[str] = "aois.<name>.embeddings"
    path: str | None
    product: str
    dequantization: str
    scale: float
    offset: float
    crs: str | None  # for files without one
    nodata: float | None  # for files without one
    min_covered_fraction: float

    def check(self, section: str) -> None:
        """Cross-field rules: a path; a de-quantization the product can take; a CRS PROJ reads."""
        if not self.path:
            raise ConfigError(f"{section}.path must name the embeddings (GeoTIFF, VRT or folder)")
        if self.product != "generic" and self.dequantization != "none":
            raise ConfigError(
                f"{section}.dequantization is for product generic; {self.product}'s is known: "
                "remove it"
            )
        if self.crs is not None:
            from aefheight.core.raster import parse_crs

            parse_crs(self.crs, f"{section}.crs")


@dataclass(frozen=True)
class RealAOISettings:
    """A downloaded AOI (config ``aois.<name>`` with a real ``source``)."""

    SECTION: ClassVar[str] = "aois.<name>"
    source: str
    year: int
    aoi: dict[str, Any]
    dsm: dict[str, Any]
    allow_partial_coverage: bool  # else an AOI partly outside AEF coverage stops
    embeddings: dict[str, Any]  # source local: the user's embeddings

    def check(self, section: str) -> None:
        """Cross-field rules: a download source, and valid aoi and dsm sub-sections."""
        if self.source == "synthetic":
            raise ConfigError(f"{section}.source is synthetic: nothing to download")
        self.aoi_spec(section)
        self.dsm_settings(section)
        if self.source == "local":
            self.embedding_settings(section)

    def embedding_settings(self, section: str) -> EmbeddingSettings:
        return from_mapping(EmbeddingSettings, self.embeddings, f"{section}.embeddings")

    def aoi_spec(self, section: str) -> AOISpec:
        return from_mapping(AOISpec, self.aoi, f"{section}.aoi")

    def dsm_settings(self, section: str) -> DSMSettings:
        return from_mapping(DSMSettings, self.dsm, f"{section}.dsm")


@dataclass
class DSMSource:
    """Local files of a DSM product and what is known about them."""

    source: str
    product: str
    files: list[Path]
    vertical_datum: str
    native_resolution: str
    crs: CRS | None = None  # override for files without one
    nodata: float | None = None  # override for files without one
    details: dict[str, Any] = field(default_factory=dict)
