import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from aefheight.errors import TooFewPatches
from aefheight.split import CODES, SplitSettings, assign, min_gap, write_split
from shapely.geometry import box


def grid_index(n_rows: int, n_cols: int, p: int = 64, stride: int | None = None):
    stride = stride or p
    recs = [
        {
            "patch_id": i * n_cols + j,
            "row": i * stride,
            "col": j * stride,
            "size": p,
            "geometry": box(j * stride, -i * stride - p, j * stride + p, -i * stride),
        }
        for i in range(n_rows)
        for j in range(n_cols)
    ]
    return gpd.GeoDataFrame(pd.DataFrame(recs), crs="EPSG:32630")


def assert_no_leak(index, labels):
    r, c, s = (index[k].to_numpy() for k in ("row", "col", "size"))
    test = labels == "test"
    gaps = min_gap(r, c, s, test)
    used = np.isin(labels, ["train", "val"])
    assert (gaps[used] >= 1).all()  # no train/val patch overlaps or touches a test patch


@pytest.mark.parametrize("method", ["contiguous", "blocks"])
@pytest.mark.parametrize("stride", [64, 32])
def test_buffer_guarantees_no_touching(method, stride):
    index = grid_index(8, 12, stride=stride)
    labels = assign(index, SplitSettings(method=method, seed=1))
    assert_no_leak(index, labels)
    assert {"train", "val", "test", "buffer"} <= set(labels)


def test_contiguous_test_area_is_on_the_requested_side_with_about_the_fraction():
    index = grid_index(6, 10)
    labels = assign(index, SplitSettings(fractions={"train": 0.6, "val": 0.1, "test": 0.3}))
    cols = index["col"].to_numpy()
    assert cols[labels == "test"].min() > cols[labels != "test"].max()
    assert (labels == "test").mean() == pytest.approx(0.3, abs=0.05)
    west = assign(index, SplitSettings(test_side="min"))
    assert cols[west == "test"].max() < cols[west != "test"].min()
    rows = index["row"].to_numpy()
    north = assign(index, SplitSettings(axis="y", test_side="max"))
    assert rows[north == "test"].max() < rows[north != "test"].min()


def test_min_gap_values():
    r, c, s = np.array([0, 0, 0]), np.array([0, 64, 70]), np.array([64, 64, 64])
    g = min_gap(r, c, s, np.array([True, False, False]))
    assert g.tolist() == [-64, 0, 6]


def test_too_few_patches_says_how_many():
    with pytest.raises(TooFewPatches, match="2 patches give"):
        assign(grid_index(1, 2), SplitSettings())


def test_write_split_raster_matches_footprints(tiny_aoi, tmp_path):
    from aefheight.patches import TilingSettings, tile

    tile(tiny_aoi["embeddings"], tiny_aoi["dsm"], tmp_path, TilingSettings(32))
    idx = write_split(
        tmp_path / "index.parquet",
        tiny_aoi["embeddings"],
        tmp_path / "split.gpkg",
        tmp_path / "split.tif",
        SplitSettings(),
    )
    back = gpd.read_file(tmp_path / "split.gpkg", layer="patches")
    assert back["split"].tolist() == idx["split"].tolist()
    with rasterio.open(tmp_path / "split.tif") as ds:
        lab = ds.read(1)
    for row in idx.itertuples():
        assert (lab[row.row : row.row + 32, row.col : row.col + 32] == CODES[row.split]).all()
