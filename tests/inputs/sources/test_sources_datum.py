"""Vertical datum handling of the coarse DEM (GLO-30 heights are EGM2008)."""

import numpy as np
import pytest
import rasterio
from aefheight.inputs.sources.datum import add_offsets, convert, proj_offset, vertical_epsg
from helpers import write_tif


def test_epsg_codes_are_read_from_datum_descriptions():
    assert vertical_epsg("EGM2008 geoid (EPSG:3855)") == 3855
    assert vertical_epsg("NGF-IGN69 (EPSG:5720)") == 5720
    assert vertical_epsg("unknown (set dsm.vertical_datum)") is None


@pytest.fixture
def dem(tmp_path):
    z = np.linspace(10, 90, 80 * 120, dtype=np.float32).reshape(1, 80, 120)
    z[0, :2, :2] = -9999.0
    return write_tif(tmp_path / "dem.tif", z, nodata=-9999.0), z[0]


def test_same_datum_needs_nothing_and_an_unknown_one_is_stated(dem):
    path, z = dem
    assert convert(path, "EGM2008 geoid (EPSG:3855)").startswith("none needed")
    assert convert(path, "my survey datum").startswith("not applied")
    with rasterio.open(path) as ds:
        assert (
            np.array_equal(ds.read(1), z)
            and "not applied" in ds.tags()["vertical_datum_conversion"]
        )


def test_a_missing_proj_grid_leaves_the_heights_and_names_the_grid(dem):
    path, z = dem
    offset, note = proj_offset(3855, 5720)  # EGM2008 -> NGF-IGN69 needs IGN's geoid grid
    if offset is not None:
        pytest.skip("PROJ has the IGN geoid grid here")
    assert "not applied" in note and "fr_ign" in note
    assert convert(path, "NGF-IGN69 (EPSG:5720)") == note
    with rasterio.open(path) as ds:
        assert np.array_equal(ds.read(1), z)


def test_offsets_are_interpolated_over_the_grid_and_keep_nodata(dem):
    """A smooth offset (a plane in lon/lat) is reproduced to mm from its 64 px lattice."""
    path, z = dem
    with rasterio.open(path) as ds:
        from aefheight.core.raster import Grid

        grid = Grid.of(ds)
    from pyproj import Transformer

    def plane(lon, lat):
        return 0.4 + 50.0 * (lon + 3.0) + 20.0 * (lat - 45.0)

    add_offsets(path, plane, strip_rows=32)
    rows, cols = np.mgrid[0:80, 0:120]
    x, y = grid.transform @ (cols + 0.5, rows + 0.5)
    lon, lat = Transformer.from_crs(grid.crs, "EPSG:4326", always_xy=True).transform(x, y)
    with rasterio.open(path) as ds:
        out = ds.read(1)
    ok = z != -9999.0
    np.testing.assert_allclose(out[ok] - z[ok], plane(lon, lat)[ok], atol=2e-3)
    assert (out[~ok] == -9999.0).all()
