"""Embedding rasters of any product: the band count and de-quantization come from the data.

Two storage forms reach the models, told apart by the dtype alone:

* ``int8``: AEF codes (nodata -128), kept as codes on disk and in the patch store (a quarter
  of float32's bytes) and de-quantized with AEF's formula where a model reads them
  (:mod:`aefheight.core.aef`);
* ``float32``: values de-quantized once at ingest (TESSERA, float exports of AEF, a generic
  product's scale and offset), NaN = nodata, passed through.

The product's name (``aef``, ``tessera``, ``generic``) travels in the raster's tags and in
every checkpoint, so that a model is never applied to another product's vectors.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import rasterio

from aefheight.core import aef
from aefheight.core.errors import RasterError
from aefheight.core.raster import open_raster

PRODUCTS: dict[str, int | None] = {"aef": aef.BANDS, "tessera": 128, "generic": None}
PRODUCT_TAG = "EMBEDDING_PRODUCT"
DTYPES = ("int8", "float32")


def check_dtype(dtype: Any, name: str) -> np.dtype:
    """``dtype`` as a numpy dtype, or a RasterError naming ``name`` unless int8 or float32."""
    d = np.dtype(dtype)
    if d.name not in DTYPES:
        raise RasterError(
            f"{name} is {d.name}; embeddings are int8 AEF codes or float32 values: "
            "re-run the embeddings step (it de-quantizes other dtypes at ingest)"
        )
    return d


def nodata(dtype: Any) -> float:
    """The nodata value of an embedding raster of ``dtype``: -128 for codes, NaN for floats."""
    return float(aef.NODATA) if np.dtype(dtype) == np.int8 else float("nan")


def dequantize(
    values: np.ndarray, nodata_value: float = np.nan, out: np.ndarray | None = None
) -> np.ndarray:
    """The float32 model input of embeddings of either form, nodata as ``nodata_value``.

    Args:
        values: int8 AEF codes or float32 values, any shape.
        nodata_value: value given to nodata pixels; NaN by default, 0 for models.
        out: float32 C-contiguous array of ``values``' shape to write into; new when None.

    Returns:
        ``out``, or a new float32 array.
    """
    if values.dtype == np.int8:
        return aef.dequantize(values, nodata_value, out)
    check_dtype(values.dtype, "the embeddings")
    if out is None:
        out = np.array(values, np.float32)
    else:
        np.copyto(out, values)
    if not np.isnan(nodata_value):
        np.nan_to_num(out, copy=False, nan=nodata_value)
    return out


def valid_mask(values: np.ndarray, axis: int = 0) -> np.ndarray:
    """True where a pixel has no nodata band (one reduction over the bands' ``axis``)."""
    if values.dtype == np.int8:
        return aef.valid_mask(values, axis)
    return ~np.isnan(np.min(values, axis=axis))


def band_names(product: str, bands: int) -> tuple[str, ...]:
    """Band descriptions written into the raster: AEF's ``A00``..``A63``, else ``E000``..."""
    if product == "aef" and bands == aef.BANDS:
        return aef.BAND_NAMES
    return tuple(f"E{i:03d}" for i in range(bands))


def product_of(tags: Mapping[str, str], bands: int, dtype: np.dtype, name: str) -> str:
    """The product named in a raster's tags; untagged int8 rasters are AEF (as downloaded)."""
    product = tags.get(PRODUCT_TAG) or ("aef" if dtype == np.int8 else "generic")
    expected = PRODUCTS.get(product, 0)
    if expected == 0:
        raise RasterError(f"{name}: unknown embedding product {product!r} in its tags")
    if expected is not None and expected != bands:
        raise RasterError(f"{name} has {bands} bands; {product} embeddings have {expected}")
    if product == "tessera" and dtype == np.int8:
        raise RasterError(f"{name}: TESSERA embeddings are stored de-quantized (float32)")
    return product


def describe(src: Any) -> tuple[str, int, np.dtype]:
    """(product, bands, dtype) of an open embedding raster, each checked."""
    dtype = check_dtype(src.dtypes[0], src.name)
    return product_of(src.tags(), src.count, dtype, src.name), int(src.count), dtype


def open_embeddings(path: str | os.PathLike) -> rasterio.io.DatasetReader:
    """Open an embedding raster (:func:`~aefheight.core.raster.open_raster`), its form checked."""
    src = open_raster(path)
    try:
        describe(src)
    except RasterError:
        src.close()
        raise
    return src


def identify(path: str | os.PathLike, store_bands: int | None = None) -> tuple[str, int]:
    """(product, bands) of the embedding raster at ``path``, which a checkpoint records.

    ``store_bands``, the patch store's band count, must match (a store tiled from other data).
    """
    with open_embeddings(path) as src:
        product, bands, _ = describe(src)
    if store_bands is not None and store_bands != bands:
        raise RasterError(
            f"the patch store has {store_bands} bands but {path} has {bands}: "
            "the store was tiled from other embeddings; rerun the tile step"
        )
    return product, bands
