import numpy as np
import pytest
import rasterio
from aefheight.metrics import HIST_BIN, DiffStats, evaluate
from aefheight.raster import Grid
from aefheight.split import CODES
from scipy import stats


def reference_metrics(r, p):
    d = p - r
    med = np.median(d)
    return {
        "n": r.size,
        "r2": 1 - np.sum(d**2) / np.sum((r - r.mean()) ** 2),
        "rmse_m": np.sqrt(np.mean(d**2)),
        "mae_m": np.mean(np.abs(d)),
        "bias_m": d.mean(),
        "median_diff_m": med,
        "nmad_m": 1.4826 * np.median(np.abs(d - med)),
        "pearson_r": stats.pearsonr(r, p).statistic,
    }


def test_streaming_equals_numpy_in_memory():
    rng = np.random.default_rng(0)
    r = rng.normal(120, 40, 50_000)
    p = r + rng.normal(-3, 8, r.size)
    s = DiffStats()
    for chunk in np.array_split(np.arange(r.size), 37):  # uneven chunks
        s.update(r[chunk], p[chunk])
    got, want = s.result(), reference_metrics(r, p)
    for k in ("n", "r2", "rmse_m", "mae_m", "bias_m", "pearson_r"):
        assert got[k] == pytest.approx(want[k], rel=1e-9), k
    assert abs(got["median_diff_m"] - want["median_diff_m"]) <= HIST_BIN
    assert abs(got["nmad_m"] - want["nmad_m"]) <= 1.4826 * 2 * HIST_BIN


def test_sign_convention_is_prediction_minus_reference():
    s = DiffStats()
    s.update(np.array([10.0, 20.0, 30.0]), np.array([12.0, 22.0, 32.0]))
    assert s.result()["bias_m"] == pytest.approx(2.0)
    assert s.result()["median_diff_m"] == pytest.approx(2.0)


def test_large_offsets_do_not_lose_precision():
    rng = np.random.default_rng(1)
    r = 4000 + rng.normal(0, 0.5, 10_000)  # high mountains, tiny spread
    p = r + rng.normal(0, 0.1, r.size)
    s = DiffStats()
    for chunk in np.array_split(np.arange(r.size), 10):
        s.update(r[chunk], p[chunk])
    assert s.result()["r2"] == pytest.approx(reference_metrics(r, p)["r2"], rel=1e-7)


def test_evaluate_skips_nodata_and_nan_and_splits_by_label(tmp_path):
    from affine import Affine
    from rasterio.crs import CRS

    g = Grid(CRS.from_epsg(32630), Affine(10, 0, 0, 0, -10, 0), 300, 260)
    rng = np.random.default_rng(2)
    ref = rng.normal(50, 10, (260, 300)).astype(np.float32)
    pred = (ref + rng.normal(1, 2, ref.shape)).astype(np.float32)
    ref[:5] = -9999.0  # declared nodata
    pred[:, :3] = -9999.0
    pred[100, 100] = np.nan
    lab = np.zeros(ref.shape, np.uint8)
    lab[:, :100], lab[:, 100:150], lab[:, 200:] = CODES["train"], CODES["val"], CODES["test"]
    for name, arr, nd in (("ref", ref, -9999.0), ("pred", pred, -9999.0), ("lab", lab, 0)):
        with rasterio.open(
            tmp_path / f"{name}.tif", "w", **g.profile(1, arr.dtype.name, nd)
        ) as dst:
            dst.write(arr, 1)
    metrics, sample = evaluate(tmp_path / "pred.tif", tmp_path / "ref.tif", tmp_path / "lab.tif")
    ok = (ref != -9999) & (pred != -9999) & np.isfinite(pred)
    for split in ("train", "val", "test"):
        m = ok & (lab == CODES[split])
        want = reference_metrics(ref[m].astype(float), pred[m].astype(float))
        got = metrics.set_index("split").loc[split]
        assert got["n"] == want["n"]
        assert got["rmse_m"] == pytest.approx(want["rmse_m"], rel=1e-6)
        assert got["diff_convention"] == "prediction - reference"
    assert set(sample["split"]) == {"train", "val", "test"}
    assert np.isfinite(sample[["reference", "prediction"]].to_numpy()).all()
