"""Prediction intervals on tiny rasters whose errors are known: coverage, adaptivity, no test
label, one-line refusals."""

import numpy as np
import pandas as pd
import pytest
import rasterio
from aefheight.core.errors import ConfigError, NoValidData
from aefheight.core.names import CODES
from aefheight.core.schema import from_mapping, make
from aefheight.evaluate.coverage import coverage_table
from aefheight.predict import PRED_NODATA
from aefheight.predict.intervals import IntervalSettings, calibrate, predict_interval
from helpers import write_tif

H, W = 128, 192


def _split() -> np.ndarray:
    """Columns 0-95 train, 96-127 val, 128-135 buffer, 136-191 test."""
    lab = np.full((H, W), CODES["train"], np.uint8)
    lab[:, 96:128] = CODES["val"]
    lab[:, 128:136] = CODES["buffer"]
    lab[:, 136:] = CODES["test"]
    return lab


@pytest.fixture
def scene(tmp_path):
    """Errors whose spread grows with the predicted height (sd = 0.1 x prediction), the same
    law in every split: exchangeable, so a calibrated interval covers its level everywhere."""
    rng = np.random.default_rng(1)
    pred = rng.uniform(10, 200, (H, W)).astype(np.float32)
    ref = (pred + rng.normal(0, 1, (H, W)) * 0.1 * pred).astype(np.float32)
    pred[3, 4] = PRED_NODATA
    paths = {
        "prediction": write_tif(tmp_path / "pred.tif", pred[None], nodata=PRED_NODATA),
        "dsm": write_tif(tmp_path / "dsm.tif", ref[None], nodata=PRED_NODATA),
        "split": write_tif(tmp_path / "split.tif", _split()[None], nodata=0),
    }
    return paths, pred, ref


def _write(paths, method, out, dsm=None, **kw):
    """The step for one method: ``out/<method>.tif`` and ``out/<method>.csv``."""
    predict_interval(
        settings=make(IntervalSettings, **kw), model="m", seed=0, prediction=paths["prediction"],
        dsm=dsm or paths["dsm"], split=paths["split"], methods=[method],
        intervals=[out / f"{method}.tif"], calibrations=[out / f"{method}.csv"],
    )  # fmt: skip


@pytest.mark.parametrize("method", ["conformal", "by_height"])
def test_interval_is_a_two_band_cog_that_covers_its_level(scene, tmp_path, method):
    paths, pred, _ = scene
    _write(paths, method, tmp_path)
    with rasterio.open(tmp_path / f"{method}.tif") as ds:
        lo, hi = ds.read(1), ds.read(2)
        assert ds.count == 2 and ds.descriptions == ("lower_m", "upper_m")
        assert ds.tags(ns="IMAGE_STRUCTURE").get("LAYOUT") == "COG"
        assert ds.tags()["calibration_split"] == "val" and ds.tags()["level"] == "0.9"
    assert lo[3, 4] == PRED_NODATA and hi[3, 4] == PRED_NODATA
    ok = pred != PRED_NODATA
    assert (lo[ok] <= pred[ok]).all() and (hi[ok] >= pred[ok]).all()
    cov = coverage_table(tmp_path / f"{method}.tif", paths["dsm"], paths["split"])
    every = cov[cov["height_lo_m"].isna() & (cov["area"] == "all")].set_index("split")
    for split in ("val", "test"):
        assert every.loc[split, "covered_pct"] == pytest.approx(90, abs=2.5)


def test_by_height_adapts_its_width_and_conformal_does_not(scene, tmp_path):
    """Errors grow with height: one width over-covers low pixels and under-covers high ones;
    widths by predicted height cover every height bin near the level."""
    paths, _, _ = scene
    for method in ("conformal", "by_height"):
        _write(paths, method, tmp_path)
    table = pd.read_csv(tmp_path / "by_height.csv")
    assert len(table) == 5 and table["half_width_m"].is_monotonic_increasing
    assert np.isinf(table["pred_lo_m"].iloc[0]) and np.isinf(table["pred_hi_m"].iloc[-1])
    per_bin = {}
    for method in ("conformal", "by_height"):
        cov = coverage_table(tmp_path / f"{method}.tif", paths["dsm"], paths["split"])
        t = cov[(cov["split"] == "test") & (cov["area"] == "all") & (cov["n"] >= 200)]
        per_bin[method] = t.dropna(subset=["height_lo_m"])["covered_pct"]
    assert per_bin["conformal"].max() > 98 and per_bin["conformal"].min() < 80
    assert per_bin["by_height"].between(80, 98).all()


def test_no_test_label_enters_the_interval(scene, tmp_path):
    """Changing every test reference height changes no interval pixel; changing the
    validation band's does (so the check can fail)."""
    paths, _, ref = scene
    outs = {}
    for name, cols in (("base", None), ("test", slice(136, None)), ("val", slice(96, 128))):
        z = ref.copy()
        if cols is not None:
            z[:, cols] = z[:, cols] * 3 + 1000
        d = tmp_path / name
        d.mkdir()
        dsm = write_tif(d / "dsm.tif", z[None], nodata=PRED_NODATA)
        for method in ("conformal", "by_height"):
            _write(paths, method, d, dsm=dsm)
        outs[name] = [rasterio.open(d / f"{m}.tif").read() for m in ("conformal", "by_height")]
    assert all(np.array_equal(a, b) for a, b in zip(outs["base"], outs["test"], strict=True))
    assert not any(np.array_equal(a, b) for a, b in zip(outs["base"], outs["val"], strict=True))


def test_too_few_calibration_pixels_is_one_line():
    rng = np.random.default_rng(0)
    pred = rng.uniform(0, 10, 300)
    s = make(IntervalSettings, height_bins=5, min_calibration_px=100)
    with pytest.raises(NoValidData) as err:
        calibrate(pred, pred + 1, "by_height", s, "unet seed 0")
    msg = str(err.value)
    assert "\n" not in msg and "unet seed 0" in msg and "300" in msg
    assert "intervals.height_bins" in msg and "split.fractions.val" in msg
    calibrate(pred, pred + 1, "conformal", s, "unet seed 0")  # one bin of 300: enough


@pytest.mark.parametrize(
    ("mapping", "key"),
    [
        ({"level": 1.0}, "intervals.level"),
        ({"level": 0.0}, "intervals.level"),
        ({"methods": ["quantile"]}, "intervals.methods"),
        ({"level": 0.999, "min_calibration_px": 100}, "intervals.min_calibration_px"),
        ({"max_pixels": 100, "height_bins": 5}, "intervals.max_pixels"),
    ],
)
def test_bad_interval_settings_name_the_key(mapping, key):
    with pytest.raises(ConfigError) as err:
        from_mapping(IntervalSettings, mapping, "intervals")
    assert key in str(err.value) and "\n" not in str(err.value)
