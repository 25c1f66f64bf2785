"""The download steps (`aefheight fetch-aef-index|fetch-embeddings|fetch-dsm|fetch-coarse-dem`).

Each takes the config sections as plain mappings (checked against the settings dataclasses,
so a bad key is named), does its work, and writes a small provenance JSON beside its raster
when asked. Use these from the command line or a notebook; the Snakemake rules call the CLI.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from aefheight.core.errors import ConfigError
from aefheight.core.files import atomic_path
from aefheight.core.schema import from_mapping
from aefheight.core.steps import step
from aefheight.inputs.sources.spec import DownloadSettings, RealAOISettings

log = logging.getLogger(__name__)


def _write_json(path: str | os.PathLike | None, data: dict[str, Any]) -> None:
    if path is None:
        return
    with atomic_path(path) as tmp:
        Path(tmp).write_text(json.dumps(data, indent=1, sort_keys=True, default=str) + "\n")


def run_index(
    source: str,
    downloads: dict[str, Any],
    out: str | os.PathLike,
    checksum: str | os.PathLike | None = None,
) -> None:
    """Fetch a source's AEF index into ``out`` with its checksum record ``<out>.sha256``.

    ``checksum``, when given (the rule's declared output), must be that record's path: every
    cached download keeps its checksum beside it (:func:`.http.sidecar`).
    """
    from aefheight.inputs.sources.aef_index import fetch_index
    from aefheight.inputs.sources.http import sidecar

    if checksum is not None and Path(checksum) != Path(sidecar(out)):
        raise ConfigError(f"--checksum must be {sidecar(out)} (the index's checksum record)")
    fetch_index(source, from_mapping(DownloadSettings, downloads, "downloads"), out)


def _aoi_settings(
    name: str, section: dict[str, Any], aoi_file: str | os.PathLike | None
) -> RealAOISettings:
    """The AOI's settings; ``aoi_file`` (the rule's input) must be the file the config names."""
    s = from_mapping(RealAOISettings, section, f"aois.{name}")
    named = s.aoi.get("path")
    if aoi_file is not None and (named is None or Path(named) != Path(aoi_file)):
        raise ConfigError(f"--aoi-file {aoi_file} is not aois.{name}.aoi.path ({named})")
    return s


def run_embeddings(
    name: str,
    aoi_section: dict[str, Any],
    downloads: dict[str, Any],
    out: str | os.PathLike,
    cache: str | os.PathLike,
    index: str | os.PathLike | None = None,
    threads: int = 1,
    provenance: str | os.PathLike | None = None,
    aoi_file: str | os.PathLike | None = None,
    local: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Download the embeddings of AOI ``name`` (config ``aois.<name>``) into ``out``.

    ``source: local`` reads the user's files instead (``local``, the rule's input, must be the
    path the config names); ``source: tessera`` fetches TESSERA's tiles through geotessera.
    """
    s = _aoi_settings(name, aoi_section, aoi_file)
    section = f"aois.{name}"
    if s.source == "local":
        from aefheight.inputs.sources.aoi import target_grid
        from aefheight.inputs.sources.local_embeddings import write_local_embeddings

        e = s.embedding_settings(section)
        if local is not None and Path(local) != Path(e.path or ""):
            raise ConfigError(f"--local-embeddings {local} is not {section}.embeddings.path")
        aoi = target_grid(name, s.aoi_spec(section), f"{section}.aoi")
        info = write_local_embeddings(name, aoi, e, s.year, out, f"{section}.embeddings")
        _write_json(provenance, info)
        return info
    d = from_mapping(DownloadSettings, downloads, "downloads")
    if s.source == "tessera":
        from aefheight.inputs.sources.aoi import target_grid
        from aefheight.inputs.sources.tessera import fetch_tessera

        aoi = target_grid(name, s.aoi_spec(section), f"{section}.aoi")
        info = fetch_tessera(name, aoi, s.year, d, out, cache)
        _write_json(provenance, info)
        return info
    from aefheight.inputs.sources.aef_download import fetch_embeddings

    info = fetch_embeddings(name, s, d, out, cache, index, threads, section)
    _write_json(provenance, info)
    return info


def run_dsm(
    name: str,
    aoi_section: dict[str, Any],
    downloads: dict[str, Any],
    out: str | os.PathLike,
    cache: str | os.PathLike,
    provenance: str | os.PathLike | None = None,
    aoi_file: str | os.PathLike | None = None,
    local_dsm: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Fetch the reference DSM of AOI ``name`` and co-register it onto the embedding grid.

    ``aoi_file`` and ``local_dsm`` are the rule's inputs (so editing them reruns the step);
    each must be the file the config names.
    """
    from aefheight.inputs.sources import dsm as dsm_mod
    from aefheight.inputs.sources.aoi import target_grid
    from aefheight.inputs.sources.coregister import coregister

    section = f"aois.{name}"
    s = _aoi_settings(name, aoi_section, aoi_file)
    d = from_mapping(DownloadSettings, downloads, "downloads")
    dsm = s.dsm_settings(section)
    if local_dsm is not None and (dsm.path is None or Path(dsm.path) != Path(local_dsm)):
        raise ConfigError(f"--local-dsm {local_dsm} is not {section}.dsm.path ({dsm.path})")
    aoi = target_grid(name, s.aoi_spec(section), f"{section}.aoi")
    log.info("target grid: %s; DSM source %s", aoi.describe(), dsm.source)
    dsm_mod.clean_extractions(cache)
    src = dsm_mod.prepare(aoi, dsm, d, cache, f"{section}.dsm")
    info = coregister(aoi, src, out, Path(cache) / "vrt" / name)
    info["aoi"] = name
    _write_json(provenance, info)
    return info


def run_coarse_dem(
    name: str,
    aoi_section: dict[str, Any],
    downloads: dict[str, Any],
    reference: str | os.PathLike,
    out: str | os.PathLike,
    cache: str | os.PathLike,
    provenance: str | os.PathLike | None = None,
    aoi_file: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Fetch Copernicus GLO-30 for AOI ``name`` as its coarse DEM, on the embedding grid.

    Bilinear onto the grid (nodata propagated), then onto the vertical datum of the reference
    DSM, whose provenance is ``reference`` (``dsm.json``), where PROJ has the grids; the
    raster's ``vertical_datum_conversion`` tag says what was done.
    """
    from aefheight.inputs.sources import dsm as dsm_mod
    from aefheight.inputs.sources.aoi import target_grid
    from aefheight.inputs.sources.coregister import coregister
    from aefheight.inputs.sources.datum import convert
    from aefheight.inputs.sources.spec import DSMSettings

    section = f"aois.{name}"
    s = _aoi_settings(name, aoi_section, aoi_file)
    d = from_mapping(DownloadSettings, downloads, "downloads")
    ref = json.loads(Path(reference).read_text(encoding="utf-8"))
    missing = s.dsm_settings(section).missing_tiles
    glo = DSMSettings(
        source="copernicus_glo30",
        archives=(),
        path=None,
        crs=None,
        nodata=None,
        vertical_datum=None,
        missing_tiles=missing,
        min_covered_fraction=0.0,  # tiles: their coverage is missing_tiles' business
    )
    aoi = target_grid(name, s.aoi_spec(section), f"{section}.aoi")
    src = dsm_mod.fetch_copernicus(aoi, glo, d, Path(cache))
    with atomic_path(out) as tmp:
        info = coregister(aoi, src, tmp, Path(cache) / "vrt" / f"{name}_coarse_dem")
        info["vertical_datum_conversion"] = convert(tmp, str(ref.get("vertical_datum", "")))
    if ref.get("source") == "copernicus_glo30":
        log.warning("the reference DSM is GLO-30 too: the coarse-DEM baseline is the reference")
    info |= {"aoi": name, "reference_vertical_datum": ref.get("vertical_datum")}
    _write_json(provenance, info)
    return info


@step
def fetch_aef_index(*, source: str, downloads: dict[str, Any], index: Path, checksum: Path) -> None:
    """Fetch one source's AEF tile index and its checksum record."""
    run_index(source, downloads, index, checksum)


@step
def fetch_embeddings(
    *,
    aoi: str,
    settings: dict[str, Any],
    downloads: dict[str, Any],
    embeddings: Path,
    provenance: Path,
    cache_dir: Path,
    index: Path | None = None,
    aoi_file: Path | None = None,
    local_embeddings: Path | None = None,
    threads: int = 1,
) -> None:
    """Download one AOI's AEF embeddings onto its grid (``settings``: its ``aois`` entry).

    ``source: local`` mosaics and co-registers ``local_embeddings`` (the config's path) instead.
    """
    run_embeddings(
        aoi,
        settings,
        downloads,
        embeddings,
        cache_dir,
        index,
        threads,
        provenance,
        aoi_file,
        local_embeddings,
    )


@step
def fetch_dsm(
    *,
    aoi: str,
    settings: dict[str, Any],
    downloads: dict[str, Any],
    dsm: Path,
    provenance: Path,
    cache_dir: Path,
    aoi_file: Path | None = None,
    local_dsm: Path | None = None,
) -> None:
    """Download one AOI's reference DSM and co-register it onto the AOI's grid."""
    run_dsm(aoi, settings, downloads, dsm, cache_dir, provenance, aoi_file, local_dsm)


@step
def fetch_coarse_dem(
    *,
    aoi: str,
    settings: dict[str, Any],
    downloads: dict[str, Any],
    reference: Path,
    coarse_dem: Path,
    provenance: Path,
    cache_dir: Path,
    aoi_file: Path | None = None,
) -> None:
    """Download GLO-30 as one AOI's coarse DEM, onto its grid and its reference's datum."""
    run_coarse_dem(aoi, settings, downloads, reference, coarse_dem, cache_dir, provenance, aoi_file)
