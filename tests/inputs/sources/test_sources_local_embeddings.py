"""Embeddings the user has (``source: local``): read right whatever their georeferencing.

The truth is int8 codes on a north-up 10 m UTM grid; the files hold them as GDAL writes a
Source Cooperative window (south-up, georeferenced by a ModelTransformation tag, striped), as
an Earth Engine export (float, de-quantized), or as tiles in a folder. Each must come back
onto the AOI's grid pixel for pixel.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import rasterio
from aefheight.core import aef, embeddings
from aefheight.core.errors import AOIOutsideCoverage, ConfigError, RasterError
from aefheight.core.schema import make
from aefheight.inputs.sources.aoi import target_grid
from aefheight.inputs.sources.local_embeddings import write_local_embeddings
from aefheight.inputs.sources.spec import AOISpec, EmbeddingSettings
from affine import Affine

H, W, LEFT, TOP = 40, 56, 600000.0, 5000400.0
MODEL_TRANSFORMATION = 34264  # GeoTIFF's ModelTransformationTag


def _truth() -> np.ndarray:
    rng = np.random.default_rng(3)
    codes = rng.integers(-127, 128, (64, H, W)).astype(np.int8)
    codes[:, 5:9, 30:36] = aef.NODATA
    return codes


def _aoi():
    bbox = (LEFT, TOP - 10 * H, LEFT + 10 * W, TOP)
    return target_grid("t", make(AOISpec, bbox=bbox, crs="EPSG:32630"), "aois.t.aoi")


def _write(path: Path, data: np.ndarray, south_up: bool = False, left: float = LEFT, **kw) -> Path:
    """``data`` (north-up rows) as a striped GeoTIFF; south-up: rows stored bottom first."""
    h = data.shape[1]
    t = Affine(10, 0, left, 0, -10, TOP)
    if south_up:
        data, t = data[:, ::-1], Affine(10, 0, left, 0, 10, TOP - 10 * h)
    prof = {"driver": "GTiff", "width": data.shape[2], "height": h, "count": len(data)}
    prof |= {"dtype": data.dtype.name, "crs": "EPSG:32630", "transform": t, "tiled": False, **kw}
    with rasterio.open(path, "w", **prof) as dst:
        dst.write(np.ascontiguousarray(data))
    return path


def _tiff_tags(path: Path) -> set[int]:
    """The tag numbers of a little-endian classic TIFF's first IFD."""
    raw = path.read_bytes()
    assert raw[:4] == b"II*\x00"
    (ifd,) = struct.unpack_from("<I", raw, 4)
    (n,) = struct.unpack_from("<H", raw, ifd)
    return {struct.unpack_from("<H", raw, ifd + 2 + 12 * i)[0] for i in range(n)}


def _read(tmp_path: Path, **kw) -> tuple[np.ndarray, rasterio.profiles.Profile, dict]:
    out = tmp_path / "out.tif"
    info = write_local_embeddings("t", _aoi(), make(EmbeddingSettings, **kw), 2020, out, "e")
    with rasterio.open(out) as src:
        return src.read(), src.profile, {**src.tags(), **info}


def test_south_up_codes_georeferenced_by_a_model_transformation_land_on_their_pixels(tmp_path):
    truth = _truth()
    f = _write(tmp_path / "sc.tif", truth, south_up=True, nodata=-128)
    assert MODEL_TRANSFORMATION in _tiff_tags(f)  # GDAL georeferences south-up files so
    with rasterio.open(f) as src:
        assert src.transform.e > 0 and src.profile.get("tiled") is False
    got, prof, tags = _read(tmp_path, path=str(f))
    assert prof["dtype"] == "int8" and prof["nodata"] == aef.NODATA and prof["transform"].e < 0
    np.testing.assert_array_equal(got, truth)  # row 0 is the northern edge again
    assert tags[embeddings.PRODUCT_TAG] == "aef" and tags["stored_as"] == "int8"


def test_a_float_export_gives_the_same_model_input_as_its_codes(tmp_path):
    truth = _truth()
    values = aef.dequantize(truth).astype(np.float64)  # EE exports de-quantized doubles
    f = _write(tmp_path / "ee.tif", values)
    got, prof, _ = _read(tmp_path, path=str(f))
    assert prof["dtype"] == "float32"
    np.testing.assert_array_equal(
        embeddings.dequantize(got, nodata_value=0.0), aef.dequantize(truth, nodata_value=0.0)
    )


def test_a_folder_of_tiles_is_mosaicked(tmp_path):
    truth = _truth()
    d = tmp_path / "tiles"
    d.mkdir()
    _write(d / "west.tif", truth[:, :, :30], nodata=-128)
    _write(d / "east.tif", truth[:, :, 30:], south_up=True, left=LEFT + 300, nodata=-128)
    got, _, tags = _read(tmp_path, path=str(d))
    np.testing.assert_array_equal(got, truth)
    assert len(tags["files"]) == 2


def test_generic_scale_offset_is_applied_once(tmp_path):
    rng = np.random.default_rng(4)
    raw = rng.integers(0, 1000, (5, H, W)).astype(np.int16)
    f = _write(tmp_path / "g.tif", raw, nodata=-1)
    kw = {"product": "generic", "dequantization": "scale_offset", "scale": 0.01, "offset": -5}
    got, prof, tags = _read(tmp_path, path=str(f), **kw)
    assert prof["dtype"] == "float32" and prof["count"] == 5
    np.testing.assert_allclose(got, raw * np.float32(0.01) - 5, rtol=1e-6)
    assert tags[embeddings.PRODUCT_TAG] == "generic"


@pytest.mark.parametrize(
    ("data", "kw", "error", "match"),
    [
        (np.zeros((32, H, W), np.int8), {}, RasterError, "has 32 bands; aef embeddings have 64"),
        (np.zeros((64, H, W), np.int16), {}, RasterError, "int16; AEF is int8 codes or a float"),
        (
            np.zeros((128, H, W), np.int8),
            {"product": "tessera"},
            RasterError,
            "TESSERA's int8 values need their per-pixel scales",
        ),
    ],
)
def test_bad_files_get_one_line_naming_the_fix(tmp_path, data, kw, error, match):
    f = _write(tmp_path / "bad.tif", data)
    with pytest.raises(error, match=match):
        _read(tmp_path, path=str(f), **kw)
    assert not (tmp_path / "out.tif").exists()


def test_a_file_missing_its_crs_or_the_aoi_is_refused(tmp_path):
    truth = _truth()
    f = _write(tmp_path / "nocrs.tif", truth, crs=None)
    with pytest.raises(ConfigError, match=r"has no CRS; set e\.crs"):
        _read(tmp_path, path=str(f))
    far = _write(tmp_path / "far.tif", truth, left=LEFT + 10_000)
    with pytest.raises(AOIOutsideCoverage, match=r"e\.min_covered_fraction"):
        _read(tmp_path, path=str(far))
    with pytest.raises(ConfigError, match="does not exist"):
        _read(tmp_path, path=str(tmp_path / "missing.tif"))
