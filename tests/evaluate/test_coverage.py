"""Interval coverage and width, tallied by split, reference-height bin and AOA area."""

import numpy as np
import pandas as pd
import pytest
import rasterio
from aefheight.core.names import CODES
from aefheight.evaluate.coverage import coverage_table, interval_coverage
from aefheight.predict import PRED_NODATA
from helpers import write_tif

H, W = 64, 96


@pytest.fixture
def scene(tmp_path):
    """Reference 0-39 m in the left half (train), 40-79 m in the right (test); the interval is
    [ref - 1, ref + 1] except where a test pixel's DI is high: there it misses by 5 m."""
    ref = np.zeros((H, W), np.float32)
    ref[:, :48] = np.linspace(0, 39.9, 48)
    ref[:, 48:] = np.linspace(40, 79.9, 48)
    lab = np.where(np.arange(W) < 48, CODES["train"], CODES["test"]).astype(np.uint8)
    lab = np.broadcast_to(lab, (H, W)).copy()
    di = np.zeros((H, W), np.float32)
    di[:16, 48:] = 3.0  # outside the AOA (threshold 1)
    lo, hi = ref - 1, ref + 1
    lo[di > 1], hi[di > 1] = ref[di > 1] + 4, ref[di > 1] + 6
    lo[0, 0] = hi[0, 0] = PRED_NODATA
    paths = {
        "interval": write_tif(tmp_path / "iv.tif", np.stack([lo, hi]), nodata=PRED_NODATA),
        "dsm": write_tif(tmp_path / "dsm.tif", ref[None], nodata=PRED_NODATA),
        "split": write_tif(tmp_path / "split.tif", lab[None], nodata=0),
        "aoa": write_tif(tmp_path / "aoa.tif", di[None], nodata=-9999.0),
    }
    with rasterio.open(paths["aoa"], "r+") as ds:
        ds.update_tags(threshold="1.0")
    return paths


def _row(t, split, area, lo=None):
    sel = (t["split"] == split) & (t["area"] == area)
    sel &= t["height_lo_m"].isna() if lo is None else t["height_lo_m"] == lo
    return t[sel].iloc[0]


def test_coverage_by_split_height_and_area(scene):
    t = coverage_table(scene["interval"], scene["dsm"], scene["split"], scene["aoa"])
    assert _row(t, "train", "all")["covered_pct"] == 100
    assert _row(t, "train", "all")["n"] == H * 48 - 1  # the nodata pixel is not counted
    assert _row(t, "test", "all")["covered_pct"] == pytest.approx(100 * 48 / 64)
    assert _row(t, "test", "inside")["covered_pct"] == 100
    assert _row(t, "test", "outside")["covered_pct"] == 0
    assert _row(t, "test", "all")["mean_width_m"] == pytest.approx(2.0, abs=1e-4)
    assert _row(t, "test", "all", 40.0)["height_hi_m"] == 50.0
    assert set(t[t["split"] == "test"].dropna()["height_lo_m"]) == {40.0, 50.0, 60.0, 70.0}


def test_without_an_aoa_map_only_all(scene, tmp_path):
    with rasterio.open(scene["interval"], "r+") as ds:
        ds.update_tags(method="by_height", level="0.9")
    interval_coverage(
        model="unet", seed=2, intervals=[scene["interval"]], dsm=scene["dsm"],
        split=scene["split"], coverage=tmp_path / "c.csv",
    )  # fmt: skip
    t = pd.read_csv(tmp_path / "c.csv")
    assert set(t["area"]) == {"all"} and (t["model"] == "unet").all() and (t["seed"] == 2).all()
    assert (t["method"] == "by_height").all() and (t["level"] == 0.9).all()
