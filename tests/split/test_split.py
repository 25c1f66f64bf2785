import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from aefheight.core.errors import ConfigError, TooFewPatches
from aefheight.core.schema import make
from aefheight.split.spatial import CODES, SplitSettings, fold_strips, label_pixels, write_split
from aefheight.train.targets import loss_masks
from helpers import store_paths
from scipy import ndimage
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


def shape_of(index):
    return int((index["row"] + index["size"]).max()), int((index["col"] + index["size"]).max())


@pytest.mark.parametrize("method", ["contiguous", "blocks"])
@pytest.mark.parametrize("stride", [64, 32])
@pytest.mark.parametrize("buffer_px", [1, 20])
def test_train_and_val_pixels_keep_the_buffer_from_the_test_area(method, stride, buffer_px):
    index = grid_index(8, 12, stride=stride)
    s = make(SplitSettings, method=method, seed=1, buffer_px=buffer_px)
    labels, pix = label_pixels(index, shape_of(index), s)
    test = pix == CODES["test"]
    dist = ndimage.distance_transform_cdt(~test, metric="chessboard")
    used = np.isin(pix, [CODES["train"], CODES["val"]])
    assert dist[used].min() > buffer_px  # no train/val pixel within the buffer
    assert (pix[dist <= buffer_px] != CODES["train"]).all()
    # no train/val patch holds a test pixel (their inputs never see the test area)
    for r, c, p, lab in index[["row", "col", "size"]].assign(lab=labels).itertuples(False):
        if lab in ("train", "val"):
            assert not test[r : r + p, c : c + p].any()
    assert {"train", "val", "test"} <= set(labels)


def test_contiguous_test_area_has_the_configured_fraction_at_pixel_level():
    index = grid_index(6, 10)  # 640 px wide: 30 % is 192 px, not a whole patch column
    s = make(SplitSettings, fractions={"train": 0.6, "val": 0.1, "test": 0.3}, buffer_px=8)
    _, pix = label_pixels(index, shape_of(index), s)
    test_cols = np.flatnonzero((pix == CODES["test"]).any(axis=0))
    assert test_cols.min() == 640 - 192 and test_cols.max() == 639
    assert (pix == CODES["test"]).mean() == pytest.approx(0.3, abs=1 / 640)
    # train + val lose at most one patch column plus the buffer
    assert np.isin(pix, [CODES["train"], CODES["val"]]).mean() >= 0.7 - (64 + 8) / 640
    _, west = label_pixels(index, shape_of(index), make(SplitSettings, test_side="min"))
    assert np.flatnonzero((west == CODES["test"]).any(axis=0)).max() < 320
    _, north = label_pixels(index, shape_of(index), make(SplitSettings, axis="y", test_side="max"))
    assert np.flatnonzero((north == CODES["test"]).any(axis=1)).max() < 192


def test_spatial_validation_is_the_band_next_to_the_test_area():
    index = grid_index(6, 10)
    labels, _ = label_pixels(
        index, shape_of(index), make(SplitSettings, val="spatial", buffer_px=8)
    )
    cols = index["col"].to_numpy()
    assert cols[labels == "val"].min() >= cols[labels == "train"].max()
    rand, _ = label_pixels(index, shape_of(index), make(SplitSettings, val="random", buffer_px=8))
    assert (rand == "val").sum() == (labels == "val").sum()
    assert not np.array_equal(cols[rand == "val"], cols[labels == "val"])


def test_too_few_patches_names_the_keys():
    with pytest.raises(TooFewPatches, match=r"split\.buffer_px"):
        label_pixels(grid_index(1, 2), (64, 128), make(SplitSettings))


def test_write_split_raster_masks_and_areas(tiny_aoi, tmp_path):
    from aefheight.tiles.patches import TilingSettings, cut_patches

    cut_patches(
        tiny_aoi["embeddings"],
        tiny_aoi["dsm"],
        make(TilingSettings, patch_size=32),
        **store_paths(tmp_path),
    )
    s = make(SplitSettings, buffer_px=8)
    idx = write_split(
        tmp_path / "index.parquet",
        tiny_aoi["embeddings"],
        tmp_path / "split.gpkg",
        tmp_path / "split.tif",
        tmp_path / "areas.csv",
        s,
    )
    back = gpd.read_file(tmp_path / "split.gpkg", layer="patches")
    assert back["split"].tolist() == idx["split"].tolist()
    with rasterio.open(tmp_path / "split.tif") as ds:
        lab = ds.read(1)
        assert ds.tags()["val"] == "spatial"
    train = idx[idx["split"] == "train"]
    masks = loss_masks(tmp_path / "split.tif", train, "train")
    for m, row in zip(masks, train.itertuples(), strict=True):
        window = lab[row.row : row.row + 32, row.col : row.col + 32]
        assert np.array_equal(m, window == CODES["train"])
        assert m.any()
    areas = pd.read_csv(tmp_path / "areas.csv").set_index("split")
    assert areas["pixels"].sum() == (lab > 0).sum()
    assert areas["pct"].sum() == pytest.approx(100.0)
    assert areas.loc["test", "pct"] == pytest.approx(30.0, abs=100 * 32 / 256)


@pytest.mark.parametrize("axis", ["x", "y"])
@pytest.mark.parametrize("folds", [3, 4, 5])
def test_kfold_strips_partition_the_aoi_and_each_fold_keeps_the_buffer(axis, folds):
    index = grid_index(8, 12)
    shape = shape_of(index)
    s = make(SplitSettings, axis=axis, folds=folds, buffer_px=10)
    held_out = np.zeros(shape, np.int64)
    for fold in range(folds):
        _, pix = label_pixels(index, shape, s, fold=fold)
        test = pix == CODES["test"]
        held_out += test
        dist = ndimage.distance_transform_cdt(~test, metric="chessboard")
        used = np.isin(pix, [CODES["train"], CODES["val"]])
        assert used.any() and dist[used].min() > s.buffer_px
    covered = np.zeros(shape, bool)
    for r, c, p in index[["row", "col", "size"]].itertuples(index=False):
        covered[r : r + p, c : c + p] = True
    assert held_out.max() == 1  # no pixel held out twice: the folds never overlap
    assert (held_out[covered] == 1).all()  # and every covered pixel once
    share = [np.mean(fold_strips(covered, axis, folds)[covered] == f) for f in range(folds)]
    assert max(share) - min(share) <= 64 / min(shape) / folds + 1e-9  # equal up to one line's share


def test_kfold_strips_are_contiguous_and_in_order_along_the_axis():
    cov = np.ones((40, 90), bool)
    cov[:, :10] = False  # an uncovered margin takes no fold's share
    f = fold_strips(cov, "x", 3)
    assert (f[:, :10] == -1).all()
    cols = f[0, 10:]
    assert (np.diff(cols) >= 0).all() and set(cols) == {0, 1, 2}
    assert [int((cols == k).sum()) for k in range(3)] == [27, 27, 26]


def test_one_fold_and_a_fold_out_of_range_are_refused(tmp_path):
    for k in (1, 2):
        with pytest.raises(ConfigError, match=r"split\.folds: .* use 0 \(off\) or >= 3"):
            make(SplitSettings, folds=k).check("split")
    make(SplitSettings, folds=3).check("split")
    with pytest.raises(ConfigError, match="--fold 3"):
        write_split(
            tmp_path / "i.parquet", tmp_path / "g.tif", tmp_path / "s.gpkg",
            tmp_path / "s.tif", tmp_path / "a.csv", make(SplitSettings, folds=3), fold=3,
        )  # fmt: skip
    assert not list(tmp_path.iterdir())
