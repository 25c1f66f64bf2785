"""The coarse-DEM baseline and the bias corrections, on tiny rasters with known answers."""

import numpy as np
import pandas as pd
import pytest
import rasterio
from aefheight.core.errors import ConfigError
from aefheight.core.names import CODES
from aefheight.core.schema import make
from aefheight.predict.correction import (
    PRED_NODATA,
    CorrectionSettings,
    correct_prediction,
    sample_pairs,
    write_coarse_dem_prediction,
)
from helpers import write_tif

H, W = 96, 160
ND = -9999.0


def _split() -> np.ndarray:
    """Columns 0-79 train, 80-99 val, 100-109 buffer, 110-159 test."""
    lab = np.full((H, W), CODES["train"], np.uint8)
    lab[:, 80:100] = CODES["val"]
    lab[:, 100:110] = CODES["buffer"]
    lab[:, 110:] = CODES["test"]
    return lab


@pytest.fixture
def scene(tmp_path):
    """A prediction, a reference that is 1.7 x prediction + 12 outside the test area (and
    anything inside it), a coarse DEM and the split."""
    rng = np.random.default_rng(0)
    pred = rng.uniform(10, 60, (H, W)).astype(np.float32)
    pred[5, 7] = ND  # a nodata pixel stays nodata
    ref = (1.7 * pred + 12).astype(np.float32)
    ref[:, 110:] = rng.uniform(500, 900, (H, 50))  # test labels: must not matter
    dem = rng.normal(100, 20, (H, W)).astype(np.float32)
    paths = {
        "prediction": write_tif(tmp_path / "pred.tif", pred[None], nodata=ND),
        "dsm": write_tif(tmp_path / "dsm.tif", ref[None], nodata=ND),
        "coarse_dem": write_tif(tmp_path / "dem.tif", dem[None], nodata=ND),
        "split": write_tif(tmp_path / "split.tif", _split()[None], nodata=0),
    }
    return paths, pred, dem


def _settings(**kw):
    return make(CorrectionSettings, **kw)


def _run(paths, method, out, **extra):
    need = {"linear": "dsm", "quantile_map": "coarse_dem"}[method]
    return correct_prediction(
        paths["prediction"], paths["split"], method, _settings(), 0, out / f"{method}.tif",
        out / f"{method}.csv", "m", **{need: extra.get(need, paths[need])},
    )  # fmt: skip


def test_linear_recalibration_recovers_the_gain_and_offset(scene, tmp_path):
    paths, pred, _ = scene
    row = _run(paths, "linear", tmp_path)
    assert row["gain"] == pytest.approx(1.7, abs=1e-4)
    assert row["offset_m"] == pytest.approx(12.0, abs=1e-3)
    assert row["fit_area"] == "val" and row["fit_pixels"] == H * 20
    with rasterio.open(tmp_path / "linear.tif") as ds:
        out = ds.read(1)
        assert ds.tags()["correction"] == "linear" and ds.tags()["model"] == "m_linear"
    ok = pred != ND
    np.testing.assert_allclose(out[ok], 1.7 * pred[ok] + 12, rtol=1e-5)
    assert out[5, 7] == PRED_NODATA
    fit = pd.read_csv(tmp_path / "linear.csv")
    assert fit.loc[0, "model"] == "m_linear" and fit.loc[0, "base_model"] == "m"


def test_quantile_map_lands_on_the_coarse_dem_distribution_and_keeps_the_order(scene, tmp_path):
    paths, pred, dem = scene
    row = _run(paths, "quantile_map", tmp_path)
    assert row["fit_area"] == "test" and row["fit_against"] == "coarse_dem"
    with rasterio.open(tmp_path / "quantile_map.tif") as ds:
        out = ds.read(1)
    test = (_split() == CODES["test"]) & (pred != ND)
    q = [0.05, 0.25, 0.5, 0.75, 0.95]
    np.testing.assert_allclose(np.quantile(out[test], q), np.quantile(dem[test], q), atol=0.5)
    order = np.argsort(pred[test])
    assert (np.diff(out[test][order]) >= -1e-4).all()  # monotone: ranks are kept


def test_no_test_label_enters_any_correction(scene, tmp_path):
    """Changing every test-area reference height changes no corrected pixel; changing the
    validation area's does (so the check can fail)."""
    paths, _, _ = scene
    with rasterio.open(paths["dsm"]) as ds:
        ref, prof = ds.read(1), ds.profile
    for name, cols in (("test_changed", slice(110, None)), ("val_changed", slice(80, 100))):
        z = ref.copy()
        z[:, cols] = z[:, cols] * 3 + 1000
        with rasterio.open(tmp_path / f"{name}.tif", "w", **prof) as dst:
            dst.write(z, 1)
    outs = {}
    for name in ("base", "test_changed", "val_changed"):
        d = tmp_path / name
        d.mkdir()
        dsm = paths["dsm"] if name == "base" else tmp_path / f"{name}.tif"
        _run(paths, "linear", d, dsm=dsm)
        _run(paths, "quantile_map", d)  # reads no reference at all
        outs[name] = {m: rasterio.open(d / f"{m}.tif").read(1) for m in ("linear", "quantile_map")}
    for m in ("linear", "quantile_map"):
        assert np.array_equal(outs["base"][m], outs["test_changed"][m])
    assert not np.array_equal(outs["base"]["linear"], outs["val_changed"]["linear"])


def test_a_method_without_its_input_is_one_line(scene, tmp_path):
    paths, _, _ = scene
    with pytest.raises(ConfigError, match="needs --dsm"):
        correct_prediction(paths["prediction"], paths["split"], "linear", _settings(), 0,
                tmp_path / "c.tif", tmp_path / "c.csv", "m")  # fmt: skip
    with pytest.raises(ConfigError, match="needs --coarse-dem"):
        correct_prediction(paths["prediction"], paths["split"], "quantile_map", _settings(), 0,
                tmp_path / "c.tif", tmp_path / "c.csv", "m", dsm=paths["dsm"])  # fmt: skip
    assert not (tmp_path / "c.tif").exists()


def test_sample_is_bounded_uniform_and_seeded(scene):
    paths, _, _ = scene
    a = sample_pairs(paths["prediction"], paths["dsm"], paths["split"], "train", 500, 3)
    b = sample_pairs(paths["prediction"], paths["dsm"], paths["split"], "train", 500, 3)
    assert len(a[0]) == 500 and np.array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], 1.7 * a[0] + 12, rtol=1e-5)  # pairs stay paired
    c = sample_pairs(paths["prediction"], paths["dsm"], paths["split"], "train", 500, 4)
    assert not np.array_equal(a[0], c[0])


def test_coarse_dem_prediction_is_the_dem_with_its_nodata(tmp_path):
    dem = np.arange(H * W, dtype=np.float32).reshape(1, H, W) / 10
    dem[0, :3, :4] = ND
    src = write_tif(tmp_path / "dem.tif", dem, nodata=ND)
    codes = np.ones((64, H, W), np.int8)
    codes[:, 50:60, 70:90] = -128  # an embedding gap: scored on the nets' pixels only
    emb = write_tif(tmp_path / "emb.tif", codes, nodata=-128)
    write_coarse_dem_prediction(src, emb, tmp_path / "p.tif", "coarse_dem", 2)
    want = dem[0].copy()
    want[50:60, 70:90] = PRED_NODATA
    with rasterio.open(tmp_path / "p.tif") as ds:
        assert np.array_equal(ds.read(1), want) and ds.nodata == PRED_NODATA
        assert ds.tags()["model"] == "coarse_dem" and ds.tags()["seed"] == "2"
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
