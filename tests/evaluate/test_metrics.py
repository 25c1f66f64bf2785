import numpy as np
import pytest
import rasterio
from aefheight.core.raster import Grid
from aefheight.evaluate.metrics import evaluate_prediction
from aefheight.evaluate.stats import HIST_BIN, DiffStats
from aefheight.split.spatial import CODES
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
    ev = evaluate_prediction(tmp_path / "pred.tif", tmp_path / "ref.tif", tmp_path / "lab.tif")
    metrics, sample = ev.metrics, ev.sample
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


def test_dem_metrics_against_numpy():
    rng = np.random.default_rng(3)
    r = rng.uniform(0, 300, 40_000)
    p = r + rng.standard_t(3, r.size) * 4 - 1.5  # heavy tails, as DEM errors
    s = DiffStats()
    s.n_total = 50_000
    for chunk in np.array_split(np.arange(r.size), 7):
        s.update(r[chunk], p[chunk])
    got, d = s.result(), p - r
    assert got["sd_m"] == pytest.approx(d.std(), rel=1e-9)
    assert got["valid_pct"] == pytest.approx(80.0)
    for key, q in (("abs_p68_m", 68.3), ("abs_p95_m", 95), ("le90_m", 90)):
        assert abs(got[key] - np.percentile(np.abs(d), q)) <= 2 * HIST_BIN, key


def test_le90_is_the_90th_percentile_of_abs_dh_not_p95_minus_p5():
    d = np.random.default_rng(4).normal(0, 10, 100_000)
    s = DiffStats()
    s.update(np.zeros_like(d), d)
    le90 = s.result()["le90_m"]
    assert le90 == pytest.approx(1.645 * 10, rel=0.02)
    assert le90 == pytest.approx((np.percentile(d, 95) - np.percentile(d, 5)) / 2, rel=0.02)


def test_crossover_height_finds_the_sign_change_despite_noise():
    import pandas as pd
    from aefheight.report.tables import crossover_height

    lo = np.arange(0, 300, 10.0)
    bias = np.where(lo + 5 < 100, 5.0, -5.0)
    bias[3] = -1.0  # one noisy bin below the crossover
    t = pd.DataFrame({"height_lo_m": lo, "height_hi_m": lo + 10, "n": 500, "bias_m": bias})
    assert crossover_height(t) == 100.0
    assert np.isnan(crossover_height(t.assign(bias_m=-np.abs(bias))))
    assert np.isnan(crossover_height(t.assign(n=10)))  # too few pixels per bin


def test_shift_statistics_match_scipy_up_to_the_bin():
    import pandas as pd
    from aefheight.evaluate.height_shift import shift_statistics

    rng = np.random.default_rng(5)
    train = rng.normal(60, 20, 30_000)
    test = rng.normal(130, 25, 20_000)
    rows = []
    for name, x in (("train", train), ("test", test), ("val", train[:100])):
        k, n = np.unique(np.floor(x).astype(int), return_counts=True)
        rows.append(
            pd.DataFrame({"split": name, "height_lo_m": k * 1.0, "height_hi_m": k + 1.0, "n": n})
        )
    quant, st = shift_statistics(pd.concat(rows))
    s = st.iloc[0]
    assert s["ks_statistic"] == pytest.approx(stats.ks_2samp(train, test).statistic, abs=0.02)
    assert s["wasserstein_m"] == pytest.approx(stats.wasserstein_distance(train, test), abs=1.0)
    # the training range is taken to whole bins, so the share lies between these two
    exact = ((test > train.max()) | (test < train.min())).mean() * 100
    binned = ((test >= np.ceil(train.max())) | (test < np.floor(train.min()))).mean() * 100
    assert binned - 1e-9 <= s["test_outside_train_range_pct"] <= exact + 1e-9
    q = quant.set_index("split")
    assert q.loc["test", "p50_m"] == pytest.approx(np.median(test), abs=1.0)
    assert q.loc["train", "mean_m"] == pytest.approx(train.mean(), abs=0.5)


def test_height_bins_and_landcover_strata(tmp_path):
    from affine import Affine
    from rasterio.crs import CRS

    g = Grid(CRS.from_epsg(32630), Affine(10, 0, 0, 0, -10, 0), 64, 64)
    ref = np.tile(np.arange(64, dtype=np.float32) * 2, (64, 1))  # 0..126 m along x
    pred = ref + np.where(ref < 60, 3.0, -3.0).astype(np.float32)
    lab = np.full(ref.shape, CODES["test"], np.uint8)
    lc = np.zeros(ref.shape, np.uint8)
    lc[32:] = 1
    for name, arr, nd in (
        ("ref", ref, -9999.0),
        ("pred", pred, -9999.0),
        ("lab", lab, 0),
        ("lc", lc, 255),
    ):
        with rasterio.open(
            tmp_path / f"{name}.tif", "w", **g.profile(1, arr.dtype.name, nd)
        ) as dst:
            dst.write(arr, 1)
            if name == "lc":
                dst.update_tags(classes="0:open,1:forest")
    ev = evaluate_prediction(
        tmp_path / "pred.tif", tmp_path / "ref.tif", tmp_path / "lab.tif", tmp_path / "lc.tif"
    )
    bh = ev.by_height[ev.by_height["split"] == "test"]
    assert bh["n"].sum() == 64 * 64
    assert (bh.loc[bh["height_hi_m"] <= 60, "bias_m"] == 3.0).all()
    assert (bh.loc[bh["height_lo_m"] >= 60, "bias_m"] == -3.0).all()
    bc = ev.by_class[ev.by_class["split"] == "test"]
    assert bc["class_name"].tolist() == ["open", "forest"] and bc["n"].tolist() == [2048, 2048]


def _blended(ref, offsets, win, overlap, noise_sd, seed=0):
    """What prediction writes when window k predicts ``ref + offsets[k] + noise``: the windows
    of predict's layout, blended with its weights."""
    from aefheight.core.raster import window_origins
    from aefheight.predict.infer import blend_weights

    h, w = ref.shape
    noise = np.random.default_rng(seed).normal(0, noise_sd, ref.shape)
    acc, wsum = np.zeros_like(ref), np.zeros_like(ref)
    bw = blend_weights(win)
    rows = window_origins(h, win, win - overlap)
    cols = window_origins(w, win, win - overlap)
    for i, r in enumerate(rows):
        for j, c in enumerate(cols):
            acc[r : r + win, c : c + win] += (
                bw * (ref + noise + offsets[i, j])[r : r + win, c : c + win]
            )
            wsum[r : r + win, c : c + win] += bw
    return acc / wsum, (len(rows), len(cols))


def _old_seam_phase(length, window, overlap, band):
    """The earlier seam check's pixels: within ``band`` px of a seam (midway between window
    centres) and of a window centre, along one axis."""
    from aefheight.core.raster import window_origins

    centres = np.array(window_origins(length, window, window - overlap)) + window / 2
    seams = (centres[1:] + centres[:-1]) / 2
    u = np.arange(length) + 0.5
    near = lambda lines: np.abs(u[:, None] - lines[None, :]).min(axis=1) <= band  # noqa: E731
    return near(seams), near(centres)


def _seam_ratio(pred, ref, win, overlap):
    from aefheight.evaluate.stats import SeamCheck
    from rasterio.windows import Window

    check = SeamCheck({"window": str(win), "overlap": str(overlap)}, *ref.shape)
    for r in range(0, ref.shape[0], 100):  # uneven blocks
        for c in range(0, ref.shape[1], 130):
            win_ = Window(c, r, min(130, ref.shape[1] - c), min(100, ref.shape[0] - r))
            sl = win_.toslices()
            check.add(win_, np.ones(ref[sl].shape, bool), pred[sl] - ref[sl])
    return check.table().iloc[0]


def test_seam_check_sees_per_window_offsets_that_mean_abs_dh_misses():
    """A prediction whose windows each sit at their own level (offsets SD 3 m, pixel noise 2 m):
    the jump across blend bands exceeds the jump between them; without offsets it does not."""
    from scipy import ndimage

    rng = np.random.default_rng(3)
    ref = 100 + 30 * ndimage.gaussian_filter(rng.normal(0, 1, (448, 640)), 40) * 40
    win, overlap = 64, 16
    n = (len(range(0, 448 - win, 48)) + 1, len(range(0, 640 - win, 48)) + 1)
    offsets = rng.normal(0, 3.0, n)
    with_offsets, _ = _blended(ref, offsets, win, overlap, 2.0)
    without, _ = _blended(ref, np.zeros(n), win, overlap, 2.0)
    seamy, clean = (
        _seam_ratio(with_offsets, ref, win, overlap),
        _seam_ratio(without, ref, win, overlap),
    )
    assert seamy["seam_jump_ratio"] > 3, seamy
    assert 0.8 < clean["seam_jump_ratio"] < 1.2, clean
    assert seamy["n_seam"] > 100 and seamy["n_between"] > 100
    # the old check (mean |dh| near seams / near centres) stays near 1 on the seamy one
    sy, cy = _old_seam_phase(448, win, overlap, 6)
    sx, cx = _old_seam_phase(640, win, overlap, 6)
    absd = np.abs(with_offsets - ref)
    old = absd[sy[:, None] | sx[None, :]].mean() / absd[cy[:, None] & cx[None, :]].mean()
    assert 0.8 < old < 1.25


def test_seam_check_sees_thin_lines_along_the_hand_overs():
    """No offsets, but a 2 px ridge of +4 m where windows hand over (as the old maps showed):
    the jump hardly moves, the roughness does."""
    from aefheight.core.raster import window_origins
    from scipy import ndimage

    rng = np.random.default_rng(5)
    ref = 100 + ndimage.gaussian_filter(rng.normal(0, 1, (448, 640)), 40) * 1200
    win, overlap = 64, 16
    pred, _ = _blended(ref, np.zeros((9, 13)), win, overlap, 2.0)
    for axis, n in ((0, 448), (1, 640)):
        o = np.array(window_origins(n, win, win - overlap))
        for line in ((o[1:] + o[:-1] + win) // 2).astype(int):
            sl = [slice(None), slice(None)]
            sl[axis] = slice(line - 1, line + 1)
            pred[tuple(sl)] += 4.0
    r = _seam_ratio(pred, ref, win, overlap)
    assert r["seam_roughness_ratio"] > 1.5 and r["seam_ratio"] > 1.5, r


def test_seam_check_is_the_same_in_any_block_order():
    from aefheight.evaluate.stats import SeamCheck
    from rasterio.windows import Window

    rng = np.random.default_rng(4)
    dh = rng.normal(0, 2, (200, 300))
    tags = {"window": "64", "overlap": "16"}
    tables = []
    for order in (1, -1):
        check = SeamCheck(tags, 200, 300)
        blocks = [
            Window(c, r, min(64, 300 - c), min(64, 200 - r))
            for r in range(0, 200, 64)
            for c in range(0, 300, 64)
        ]
        for b in blocks[::order]:
            check.add(b, np.ones((b.height, b.width), bool), dh[b.toslices()])
        tables.append(check.table())
    assert tables[0].equals(tables[1])
