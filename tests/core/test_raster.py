import numpy as np
import pytest
import rasterio
from aefheight.core.errors import GridMismatch, RasterError
from aefheight.core.files import atomic_path
from aefheight.core.raster import Grid, check_same_grid, open_raster, to_cog
from affine import Affine
from rasterio.crs import CRS

G = Grid(CRS.from_epsg(32630), Affine(10, 0, 500000, 0, -10, 5000000), 300, 200)


def test_atomic_path_renames_on_success_and_leaves_nothing_on_failure(tmp_path):
    final = tmp_path / "a.txt"
    with atomic_path(final) as tmp:
        tmp.write_text("new")
        assert not final.exists()
    assert final.read_text() == "new"
    with pytest.raises(RuntimeError), atomic_path(final) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("killed")
    assert final.read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]


def test_check_same_grid_names_what_differs():
    check_same_grid(G, G, "a", "b")
    other = Grid(CRS.from_epsg(2154), G.transform, G.width, G.height)
    with pytest.raises(GridMismatch, match="CRS differs: a is EPSG:32630, b is EPSG:2154"):
        check_same_grid(G, other, "a", "b")
    shifted = Grid(G.crs, G.transform @ Affine.translation(1, 0), G.width, G.height)
    with pytest.raises(GridMismatch, match="grid differs"):
        check_same_grid(G, shifted, "a", "b")
    with pytest.raises(GridMismatch, match="has no CRS"):
        check_same_grid(G, Grid(None, G.transform, 300, 200), "a", "b")


def test_corrupt_file_is_a_raster_error(tmp_path):
    bad = tmp_path / "bad.tif"
    bad.write_bytes(b"II*\x00garbage")
    with pytest.raises(RasterError, match="cannot read raster"):
        open_raster(bad)


def test_to_cog_writes_a_valid_cog_with_same_grid_and_values(tmp_path):
    src = tmp_path / "src.tif"
    data = np.arange(300 * 200, dtype=np.float32).reshape(200, 300)
    with rasterio.open(src, "w", **G.profile(1, "float32", -9999.0)) as dst:
        dst.write(data, 1)
    to_cog(src, tmp_path / "cog.tif")
    with rasterio.open(tmp_path / "cog.tif") as ds:
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert Grid.of(ds) == G and ds.nodata == -9999.0
        np.testing.assert_array_equal(ds.read(1), data)
