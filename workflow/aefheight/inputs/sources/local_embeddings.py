"""Embeddings the user already has (``source: local``): one raster, a VRT or a folder of tiles.

Use it for AEF exported from Earth Engine (float, bands ``A00``..``A63``), windows cut from the
Source Cooperative COGs (int8 codes, often south-up, some georeferenced by a
ModelTransformation tag), TESSERA tiles, or any other product. GDAL reads every
georeferencing form into the geotransform, and its warper places south-up rasters right, so
each file is reprojected onto the AOI's grid as it is (nearest: an embedding is a vector, and
int8 codes are never mixed); the first file with a valid pixel fills it. The result has one of
the two forms of :mod:`aefheight.core.embeddings`: int8 AEF codes stay codes, everything else
is de-quantized once into float32 (NaN nodata). Every check runs on the files' headers before
any pixel is read (:func:`check_local_embeddings`, also called before any job).
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.enums import Resampling
from rasterio.warp import reproject
from shapely import unary_union

from aefheight.core import aef, embeddings
from aefheight.core.embeddings import PRODUCT_TAG, PRODUCTS, band_names, valid_mask
from aefheight.core.errors import ConfigError, NoValidData, RasterError
from aefheight.core.files import atomic_path
from aefheight.core.raster import open_raster
from aefheight.inputs.sources.aoi import AOI, blocks
from aefheight.inputs.sources.local_dsm import check_coverage, footprint_of
from aefheight.inputs.sources.spec import EmbeddingSettings

log = logging.getLogger(__name__)
SUFFIXES = (".tif", ".tiff", ".vrt")
BLOCK_PX = 1024


@dataclass(frozen=True)
class LocalEmbeddings:
    """The checked files and the form they become (``codes``: int8 AEF codes kept)."""

    files: list[Path]
    bands: int
    codes: bool
    crs: CRS | None  # override for files without one
    nodata: float | None  # override for files without one

    @property
    def dtype(self) -> str:
        return "int8" if self.codes else "float32"


def local_files(path: str | os.PathLike, key: str) -> list[Path]:
    """The raster at ``path``, or the rasters in the folder ``path`` (sorted)."""
    p = Path(path)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in SUFFIXES)
        if not files:
            raise ConfigError(f"{key}: the folder {p} holds no {', '.join(SUFFIXES)} file")
        return files
    if not p.exists():
        raise ConfigError(f"{key}: {p} does not exist")
    return [p]


def _form(e: EmbeddingSettings, dtype: np.dtype, path: Path, key: str) -> bool:
    """Whether the files' values are kept as int8 AEF codes (else de-quantized to float32)."""
    codes = dtype == np.int8 and (
        e.product == "aef" or (e.product == "generic" and e.dequantization == "aef")
    )
    if e.product == "generic" and e.dequantization == "aef" and not codes:
        raise RasterError(f"{key}: {path} is {dtype.name}; AEF's formula de-quantizes int8 codes")
    if e.product == "tessera" and dtype == np.int8:
        raise RasterError(
            f"{key}: {path} is int8; TESSERA's int8 values need their per-pixel scales: give "
            "de-quantized float32 files, or use source: tessera"
        )
    if not np.issubdtype(dtype, np.number) or np.issubdtype(dtype, np.complexfloating):
        raise RasterError(f"{key}: {path} is {dtype.name}; embeddings are numbers")
    if e.product == "aef" and not (codes or np.issubdtype(dtype, np.floating)):
        raise RasterError(
            f"{key}: {path} is {dtype.name}; AEF is int8 codes or a float export (set product "
            "generic with a dequantization for other values)"
        )
    return bool(codes)


def check_local_embeddings(aoi: AOI, e: EmbeddingSettings, section: str) -> LocalEmbeddings:
    """The user's embedding files, checked against the product and the AOI before any job.

    Raises:
        ConfigError: a missing path or CRS.
        RasterError: a band count, dtype or georeferencing the product cannot take.
        AOIOutsideCoverage: the files cover less than ``min_covered_fraction`` of the AOI.
    """
    key = f"{section}.path"
    files = local_files(e.path or "", key)
    crs_override = CRS.from_user_input(e.crs) if e.crs else None
    forms, counts, footprints = set(), set(), []
    for f in files:
        with open_raster(f) as ds:
            crs = crs_override or ds.crs
            if crs is None:
                raise ConfigError(f"{key}: {f} has no CRS; set {section}.crs")
            counts.add(ds.count)
            forms.add(_form(e, np.dtype(ds.dtypes[0]), f, key))
            footprints.append(footprint_of(ds, crs, aoi.grid.crs))
    if len(counts) > 1 or len(forms) > 1:
        raise RasterError(f"{key}: the files mix band counts {sorted(counts)} or dtypes")
    bands, expected = counts.pop(), PRODUCTS[e.product]
    if expected is not None and bands != expected:
        raise RasterError(
            f"{key}: {files[0]} has {bands} bands; {e.product} embeddings have {expected} "
            "(set product generic for another product)"
        )
    path = Path(e.path or "")
    check_coverage(aoi, unary_union(footprints), e.min_covered_fraction, path, section)
    return LocalEmbeddings(files, bands, forms.pop(), crs_override, e.nodata)


def _fill_block(
    local: LocalEmbeddings,
    sources: list[rasterio.io.DatasetReader],
    e: EmbeddingSettings,
    aoi: AOI,
    block: Any,
    dst: np.ndarray,
) -> None:
    """Fill ``dst`` (the block, nodata where empty) from every file, first valid pixel wins.

    GDAL converts the values to the stored form as it warps (a float64 export to float32), and
    maps each file's nodata to the stored form's (-128 or NaN).
    """
    fill = embeddings.nodata(local.dtype)
    for ds in sources:
        tmp = np.full(dst.shape, fill, local.dtype)
        src_nodata = ds.nodata if ds.nodata is not None else local.nodata
        if src_nodata is None and local.codes:
            src_nodata = aef.NODATA
        reproject(
            rasterio.band(ds, list(range(1, ds.count + 1))),
            tmp,
            src_crs=local.crs or ds.crs,
            src_nodata=src_nodata,
            dst_transform=block.transform,
            dst_crs=aoi.grid.crs,
            dst_nodata=fill,
            resampling=Resampling.nearest,
        )
        if e.dequantization == "scale_offset":
            tmp = tmp * np.float32(e.scale) + np.float32(e.offset)
        take = ~valid_mask(dst) & valid_mask(tmp)
        dst[:, take] = tmp[:, take]


def write_local_embeddings(
    name: str, aoi: AOI, e: EmbeddingSettings, year: int, out: str | os.PathLike, section: str
) -> dict[str, Any]:
    """Mosaic and co-register the user's embeddings onto the AOI's grid into ``out``."""
    local = check_local_embeddings(aoi, e, section)
    fill = embeddings.nodata(local.dtype)
    valid = inside_total = 0
    with contextlib.ExitStack() as stack:
        sources = [stack.enter_context(open_raster(f)) for f in local.files]
        tmp = stack.enter_context(atomic_path(out))
        prof = aoi.grid.profile(local.bands, local.dtype, fill)
        with rasterio.open(tmp, "w", **prof) as dst:
            for block in blocks(aoi.grid, BLOCK_PX):
                arr = np.full((local.bands, block.height, block.width), fill, local.dtype)
                _fill_block(local, sources, e, aoi, block, arr)
                inside = aoi.inside(block.transform, (block.height, block.width))
                if aoi.mask_outside:
                    arr[:, ~inside] = fill
                dst.write(arr, window=block.window)
                valid += int((valid_mask(arr) & inside).sum())
                inside_total += int(inside.sum())
            for i, band in enumerate(band_names(e.product, local.bands), start=1):
                dst.set_band_description(i, band)
            dst.update_tags(
                source="local",
                year=str(year),
                aoi=name,
                files=str(len(local.files)),
                quantization=_quantization(e, local),
                **{PRODUCT_TAG: e.product},
            )
        if valid == 0:
            raise NoValidData(f"{aoi.describe()}: {e.path} holds no valid pixel inside the AOI")
    fraction = valid / inside_total if inside_total else 0.0
    log.info("wrote %s from %d file(s) (valid fraction %.4f)", out, len(local.files), fraction)
    return {
        "aoi": name,
        "source": "local",
        "product": e.product,
        "path": str(e.path),
        "files": [str(f) for f in local.files],
        "bands": local.bands,
        "stored_as": local.dtype,
        "quantization": _quantization(e, local),
        "valid_fraction": round(fraction, 6),
    }


def _quantization(e: EmbeddingSettings, local: LocalEmbeddings) -> str:
    if local.codes:
        return "AEF int8; float = ((v / 127.5) ** 2) * sign(v)"
    if e.dequantization == "scale_offset":
        return f"de-quantized at ingest: value * {e.scale:g} + {e.offset:g}"
    return "float values, passed through"
