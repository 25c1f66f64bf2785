"""The area of applicability (AOA): DI, threshold, training sample, map and metrics, on tiny
rasters written by code with fixed seeds."""

import numpy as np
import pandas as pd
import pytest
import rasterio
from aefheight.core import aef
from aefheight.core.errors import ConfigError, NoValidData, RasterError
from aefheight.core.names import CODES, SPLITS
from aefheight.core.schema import make
from aefheight.evaluate.aoa import (
    AOASettings,
    cv_threshold,
    metrics_by_area,
    nearest_distance,
    sample_training,
    training_scale,
    write_aoa,
    write_aoa_metrics,
)
from aefheight.split.spatial import fold_strips
from helpers import write_tif
from scipy.spatial.distance import cdist

H, W = 96, 80
TILES = {"tiled": True, "blockxsize": 16, "blockysize": 16}  # 6 x 5 windows
ND = -9999.0


def _labels() -> np.ndarray:
    """Columns 0-44 train (rows 0-7 of columns 0-29 uncovered), 45-52 val, 53-59 buffer,
    60-79 test; a few unused pixels."""
    lab = np.full((H, W), CODES["train"], np.uint8)
    lab[:8, :30] = 0  # uneven coverage: the k-fold strips are not equal column counts
    lab[:, 45:53] = CODES["val"]
    lab[:, 53:60] = CODES["buffer"]
    lab[:, 60:] = CODES["test"]
    lab[40:44, 10:14] = CODES["unused"]
    return lab


def _codes() -> np.ndarray:
    """Random int8 embeddings; the test area's lie far from the rest; some nodata pixels."""
    rng = np.random.default_rng(0)
    codes = rng.integers(-127, 128, (aef.BANDS, H, W)).astype(np.int8)
    codes[:, :, 60:] = rng.integers(90, 128, (aef.BANDS, H, 20))
    for r, c in ((5, 40), (20, 3), (50, 44), (70, 65), (90, 50)):
        codes[:, r, c] = aef.NODATA
    return codes


@pytest.fixture
def scene(tmp_path):
    emb = write_tif(tmp_path / "emb.tif", _codes(), nodata=aef.NODATA, **TILES)
    split = write_tif(tmp_path / "split.tif", _labels()[None], nodata=0, **TILES)
    with rasterio.open(emb) as ds:
        assert len(list(ds.block_windows(1))) == 30  # streaming has several windows to cross
    return emb, split


def _in_memory_di(codes, ref, scale):
    ok = aef.valid_mask(codes)
    di = np.full(ok.shape, ND, np.float32)
    di[ok] = nearest_distance(aef.dequantize(codes[:, ok].T), ref) / scale
    return di, ok


# 1. the dissimilarity index


def test_di_of_a_training_embedding_is_zero():
    rng = np.random.default_rng(1)
    ref = aef.dequantize(rng.integers(-127, 128, (50, aef.BANDS)).astype(np.int8))
    d = nearest_distance(ref[[3, 17, 42]], ref)
    np.testing.assert_allclose(d, 0.0, atol=1e-6)
    assert d.dtype == np.float64
    assert nearest_distance(ref[:1] + 0.01, ref)[0] > 0.05  # a moved copy is not at 0


def test_di_grows_with_distance_from_the_training_set():
    line = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0]])  # reference points on a line
    assert training_scale(line) == pytest.approx(1.0)
    t = np.arange(6.0)
    di = nearest_distance(np.stack([np.ones(6), t], 1), line) / training_scale(line)
    np.testing.assert_allclose(di, t, atol=1e-9)  # straight away from the line: DI = t
    units = np.eye(4)  # a few unit vectors: along e1 beyond it, DI grows monotonically
    di = nearest_distance(np.outer(1 + t, units[0]), units) / training_scale(units)
    assert di[0] == pytest.approx(0.0, abs=1e-9) and (np.diff(di) > 0).all()
    assert training_scale(units) == pytest.approx(np.sqrt(2))


def test_chunked_distance_equals_scipy():
    rng = np.random.default_rng(2)
    x, ref = rng.uniform(-1, 1, (300, 64)), rng.uniform(-1, 1, (70, 64))
    want = cdist(x, ref).min(axis=1)
    np.testing.assert_allclose(nearest_distance(x, ref, chunk=64), want, rtol=1e-9)


def test_training_scale_excludes_self_and_refuses_identical_points():
    assert training_scale(np.array([[0.0], [1.0], [3.0]])) == pytest.approx(4 / 3)
    with pytest.raises(NoValidData, match="identical"):
        training_scale(np.ones((5, 64)))


# 3. the threshold


def _pairs(d):
    """Pair i: (100 i, 0) in fold 0 and (100 i, d_i) in fold 1, so each point's nearest point
    of another fold is its partner, at d_i."""
    a = np.stack([100.0 * np.arange(len(d)), np.zeros(len(d))], 1)
    b = a + np.stack([np.zeros(len(d)), d], 1)
    return np.concatenate([a, b]), np.repeat([0, 1], len(d))


def test_threshold_is_the_boxplot_whisker_without_the_outlier():
    d = np.array([1, 2, 3, 4, 5, 6, 7, 40.0])
    ref, groups = _pairs(d)
    thr, di = cv_threshold(ref, groups, scale=2.0)
    np.testing.assert_allclose(di, np.concatenate([d, d]) / 2)
    assert thr == pytest.approx(3.5)  # 7 / 2: the outlier 40 is above the whisker


def test_threshold_uses_tukey_hinges_as_r_boxplot_stats():
    # hinges 2.5 and 6.5 (R's fivenum): fence 12.5 keeps 12; type-7 quartiles (2.75, 6.25)
    # would put the fence at 11.5 and the threshold at 7
    ref, groups = _pairs(np.array([1, 2, 3, 4, 5, 6, 7, 12.0]))
    assert cv_threshold(ref, groups, scale=1.0)[0] == pytest.approx(12.0)


def test_threshold_needs_two_folds():
    ref, _ = _pairs(np.arange(1.0, 9.0))
    with pytest.raises(ConfigError, match="at least 2 folds"):
        cv_threshold(ref, np.zeros(len(ref), np.int64), scale=1.0)


# 4. the training sample


def _pixel_of_rows(codes):
    """Pixel (row, col) of every valid embedding, keyed by its de-quantized bytes."""
    ok = aef.valid_mask(codes)
    rows, cols = np.nonzero(ok)
    x = aef.dequantize(codes[:, ok].T)
    where = {v.tobytes(): (r, c) for v, r, c in zip(x, rows, cols, strict=True)}
    assert len(where) == ok.sum()  # random embeddings are unique: a row names its pixel
    return where


@pytest.mark.parametrize("axis", ["x", "y"])
def test_sample_is_bounded_deterministic_train_only_with_the_fold_strips(scene, axis):
    emb, split = scene
    x, g = sample_training(emb, split, axis, 3, 200, seed=4)
    assert x.shape == (200, aef.BANDS) and x.dtype == np.float32 and g.dtype == np.int64
    x2, g2 = sample_training(emb, split, axis, 3, 200, seed=4)
    assert np.array_equal(x, x2) and np.array_equal(g, g2)
    assert not np.array_equal(x, sample_training(emb, split, axis, 3, 200, seed=5)[0])
    lab, where = _labels(), _pixel_of_rows(_codes())
    strips = fold_strips(lab > 0, axis, 3)
    pix = [where[v.tobytes()] for v in x]
    assert all(lab[r, c] == CODES["train"] for r, c in pix)
    assert np.array_equal(g, [strips[r, c] for r, c in pix])
    assert len(set(g.tolist())) >= 2


def test_sample_of_more_than_there_is_takes_every_valid_train_pixel(scene):
    emb, split = scene
    x, _ = sample_training(emb, split, "x", 3, 10**6, seed=0)
    train = (_labels() == CODES["train"]) & aef.valid_mask(_codes())
    assert len(x) == train.sum()
    where = _pixel_of_rows(_codes())
    assert {where[v.tobytes()] for v in x} == set(zip(*np.nonzero(train), strict=True))


def test_no_valid_train_pixel_is_one_clear_error(tmp_path):
    codes = _codes()
    codes[:, _labels() == CODES["train"]] = aef.NODATA
    emb = write_tif(tmp_path / "emb.tif", codes, nodata=aef.NODATA, **TILES)
    split = write_tif(tmp_path / "split.tif", _labels()[None], nodata=0, **TILES)
    with pytest.raises(NoValidData, match=r"split\.tif"):
        sample_training(emb, split, "x", 3, 100, seed=0)


# 2. the streamed map equals the DI computed in memory


def test_streamed_map_equals_the_di_computed_in_memory(scene, tmp_path):
    emb, split = scene
    s = make(AOASettings, sample_px=300, seed=1)
    df = write_aoa(emb, split, tmp_path / "aoa.tif", tmp_path / "aoa.csv", s, "x", 3)
    ref, groups = sample_training(emb, split, "x", 3, 300, 1)
    scale = training_scale(ref)
    thr, _ = cv_threshold(ref, groups, scale)
    di, ok = _in_memory_di(_codes(), ref, scale)
    with rasterio.open(tmp_path / "aoa.tif") as ds:
        got, tags = ds.read(1), ds.tags()
        assert ds.descriptions[0] == "dissimilarity_index" and ds.nodata == ND
    np.testing.assert_allclose(got, di, rtol=0, atol=1e-6)
    assert (got[~ok] == ND).all() and (got[ok] >= 0).all()
    assert (got[ok] < 1e-6).sum() >= 300  # the sampled training pixels themselves: DI 0
    assert float(tags["threshold"]) == thr and float(tags["scale"]) == scale
    assert tags["sample_px"] == "300" and tags["aoa"] == "inside where DI <= threshold"
    lab = _labels()
    for k in SPLITS:
        row = df.set_index("split").loc[k]
        area = ok & (lab == CODES[k])
        assert row["pixels"] == area.sum()
        assert row["outside_pixels"] == (di[area].astype(np.float64) > thr).sum()
        # the histogram's median is the exact median to within one 0.01 bin
        assert abs(row["median_di"] - np.median(di[area])) <= 0.01
    pct = df.set_index("split")["outside_pct"]
    assert pct["test"] > 90 and pct["train"] < 10  # the far test embeddings are outside
    csv = pd.read_csv(tmp_path / "aoa.csv")
    assert list(csv.columns) == [
        "split", "pixels", "outside_pixels", "median_di", "p95_di", "outside_pct", "threshold",
        "scale", "sample_px", "folds",
    ]  # fmt: skip
    assert list(csv["split"]) == list(SPLITS) and (csv["folds"] == 3).all()


# 5. metrics inside and outside the AOA


def _tagged(path, data, **tags):
    write_tif(path, data[None], nodata=ND, **TILES)
    with rasterio.open(path, "r+") as ds:
        ds.update_tags(**tags)
    return path


@pytest.fixture
def metric_scene(tmp_path):
    """DI 0.5 in rows 0-31, 2.0 below (threshold 1.0; row 0 exactly at it); predictions equal
    to the DSM inside, DSM + 5 (unet) or - 2 (ridge) outside; a few nodata pixels."""
    h, w = 64, 48
    rng = np.random.default_rng(3)
    dsm = rng.uniform(0, 50, (h, w)).astype(np.float32)
    dsm[10, 10] = ND
    di = np.where(np.arange(h)[:, None] < 32, 0.5, 2.0) * np.ones((1, w), np.float32)
    di[0] = 1.0
    di[40, 5] = ND
    lab = np.full((h, w), CODES["train"], np.uint8)
    lab[:, 16:32], lab[:, 32:] = CODES["val"], CODES["test"]
    out = di > 1.0
    p = {
        "dsm": write_tif(tmp_path / "dsm.tif", dsm[None], nodata=ND, **TILES),
        "split": write_tif(tmp_path / "split.tif", lab[None], nodata=0, **TILES),
        "aoa": _tagged(tmp_path / "aoa.tif", di.astype(np.float32), threshold="1.0"),
    }
    preds = []
    for model, seed, shift in (("unet", "3", 5.0), ("ridge", "0", -2.0)):
        pred = np.where(out, dsm + shift, dsm).astype(np.float32)
        pred[20, 20] = ND
        preds.append(_tagged(tmp_path / f"{model}.tif", pred, model=model, seed=seed))
    ok = (dsm != ND) & (di != ND)
    ok[20, 20] = False
    return p, preds, lab, out, ok


def test_metrics_inside_are_exact_and_outside_carry_the_offset(metric_scene, tmp_path):
    p, preds, lab, out, ok = metric_scene
    df = metrics_by_area(preds, p["dsm"], p["split"], p["aoa"])
    assert len(df) == 2 * len(SPLITS) * 2
    assert list(df.columns) == [
        "model", "seed", "split", "area", "n", "r2", "rmse_m", "bias_m", "mae_m", "nmad_m"
    ]  # fmt: skip
    for (model, seed, k, area), row in df.set_index(["model", "seed", "split", "area"]).iterrows():
        sel = ok & (lab == CODES[k]) & (out if area == "outside" else ~out)
        assert row["n"] == sel.sum() > 0
        shift = {"unet": 5.0, "ridge": -2.0}[model] if area == "outside" else 0.0
        assert seed == (3 if model == "unet" else 0)
        assert row["bias_m"] == pytest.approx(shift, abs=1e-4)
        assert row["rmse_m"] == pytest.approx(abs(shift), abs=1e-4)
    written = write_aoa_metrics(preds, p["dsm"], p["split"], p["aoa"], tmp_path / "m.csv")
    pd.testing.assert_frame_equal(written, df)
    assert len(pd.read_csv(tmp_path / "m.csv")) == len(df)


def test_an_explicit_threshold_overrides_the_tag(metric_scene):
    p, preds, lab, out, ok = metric_scene
    df = metrics_by_area(preds[:1], p["dsm"], p["split"], p["aoa"], threshold=3.0)
    by = df.set_index(["split", "area"])
    for k in SPLITS:
        area = ok & (lab == CODES[k])
        assert by.loc[(k, "outside"), "n"] == 0
        assert by.loc[(k, "inside"), "n"] == area.sum()
        want = np.sqrt(25 * (area & out).sum() / area.sum())  # unet's +5 m, now all inside
        assert by.loc[(k, "inside"), "rmse_m"] == pytest.approx(want, abs=1e-4)


def test_a_prediction_without_its_model_tag_is_one_clear_error(metric_scene, tmp_path):
    p, _, _, _, _ = metric_scene
    bare = write_tif(tmp_path / "bare.tif", np.zeros((1, 64, 48), np.float32), nodata=ND)
    with pytest.raises(RasterError, match="model"):
        metrics_by_area([bare], p["dsm"], p["split"], p["aoa"])
