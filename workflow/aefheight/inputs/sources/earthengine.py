"""AEF embeddings from Earth Engine (``aois.<name>.source: earthengine``), block by block.

``GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL`` via ``ee.data.computePixels`` on the AOI's grid,
quantized back to AEF's int8 codes on the server, so a block reads as a COG block does and
:mod:`.aef_download` caches and assembles it the same way (earthengine-api, credentials from
``earthengine authenticate`` or ``GOOGLE_APPLICATION_CREDENTIALS``; project from
``EE_PROJECT``/``GOOGLE_CLOUD_PROJECT``).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
from affine import Affine

from aefheight.core import aef
from aefheight.core.errors import (
    AOIOutsideCoverage,
    ConfigError,
    YearNotAvailable,
)
from aefheight.inputs.sources.aoi import (
    AOI,
    Block,
)

EE_COLLECTION = "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL"


EE_MAX_PX = 512  # computePixels answers at most 48 MB: 512 x 512 x 64 int8 = 16 MB


def ee_initialize() -> Any:
    """Import and initialise earthengine-api with credentials from the environment only."""
    try:
        import ee
    except ImportError as exc:
        raise ConfigError(
            "source earthengine needs earthengine-api (conda env envs/fetch_embeddings.yaml, "
            "or pip install earthengine-api)"
        ) from exc
    project = os.environ.get("EE_PROJECT") or os.environ.get("GOOGLE_CLOUD_PROJECT")
    credentials: Any = "persistent"  # from `earthengine authenticate`
    try:
        if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS"):
            import google.auth

            credentials, default_project = google.auth.default(
                scopes=[
                    "https://www.googleapis.com/auth/earthengine",
                    "https://www.googleapis.com/auth/cloud-platform",
                ]
            )
            project = project or default_project
        ee.Initialize(credentials=credentials, project=project)
    except Exception as exc:
        raise ConfigError(
            "cannot initialise Earth Engine: run `earthengine authenticate` or set "
            "GOOGLE_APPLICATION_CREDENTIALS, and set EE_PROJECT (a Cloud project registered "
            f"for Earth Engine) ({type(exc).__name__})"
        ) from exc
    return ee


def ee_block_reader(aoi: AOI, year: int) -> Callable[[Block], np.ndarray]:
    """A function block -> int8 codes computed by Earth Engine on the target grid."""
    ee = ee_initialize()
    w, s, e, n = aoi.polygon_wgs84.bounds
    region = ee.Geometry.Rectangle([w, s, e, n], "EPSG:4326", False)
    of_year = ee.ImageCollection(EE_COLLECTION).filterDate(f"{year}-01-01", f"{year + 1}-01-01")
    if int(of_year.size().getInfo()) == 0:
        raise YearNotAvailable(f"{aoi.describe()}: {EE_COLLECTION} has no image for {year}")
    col = of_year.filterBounds(region)
    if int(col.size().getInfo()) == 0:
        raise AOIOutsideCoverage(
            f"{aoi.describe()} lies outside {EE_COLLECTION} coverage of {year}"
        )
    img = col.mosaic().select(list(aef.BAND_NAMES))
    # AEF's int8 codes, the inverse of ((v / 127.5) ** 2) * sign(v), computed server-side so a
    # request carries 1 byte per band; masked pixels become -128 as in the COGs.
    codes = (
        img.abs()
        .sqrt()
        .multiply(127.5)
        .multiply(img.signum())
        .round()
        .clamp(-127, 127)
        .unmask(aef.NODATA, False)
        .toInt8()
    )
    crs = aoi.grid.crs.to_string()

    def read_block(block: Block) -> np.ndarray:
        out = np.full((aef.BANDS, block.height, block.width), aef.NODATA, np.int8)
        for r in range(0, block.height, EE_MAX_PX):
            for c in range(0, block.width, EE_MAX_PX):
                h, wd = min(EE_MAX_PX, block.height - r), min(EE_MAX_PX, block.width - c)
                t = block.transform @ Affine.translation(c, r)
                arr = ee.data.computePixels(
                    {
                        "expression": codes,
                        "fileFormat": "NUMPY_NDARRAY",
                        "grid": {
                            "dimensions": {"width": wd, "height": h},
                            "affineTransform": {
                                "scaleX": t.a,
                                "shearX": t.b,
                                "translateX": t.c,
                                "shearY": t.d,
                                "scaleY": t.e,
                                "translateY": t.f,
                            },
                            "crsCode": crs,
                        },
                    }
                )
                out[:, r : r + h, c : c + wd] = np.stack(
                    [np.asarray(arr[b]) for b in aef.BAND_NAMES]
                ).astype(np.int8)
        return out

    return read_block
