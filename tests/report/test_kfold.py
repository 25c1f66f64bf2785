"""The k-fold tables: per-fold metrics, single split vs k-fold, shift response, AOA summary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from aefheight.report import kfold

MODELS = ("unet", "ridge")
SEEDS = (0, 1, 2)


def _metrics(r2: dict[str, list[float]], rmse: dict[str, list[float]], bias: float = 0.0):
    rows = []
    for m in r2:
        for s, (a, b) in enumerate(zip(r2[m], rmse[m], strict=True)):
            for split in ("train", "val", "test"):
                rows.append(
                    {"aoi": "x", "model": m, "seed": s, "split": split, "n": 100, "r2": a}
                    | {"rmse_m": b, "bias_m": bias, "median_diff_m": bias}
                )
    return pd.DataFrame(rows)


def _write_folds(tmp_path, shifts, r2, rmse, bias_per_m):
    paths = {"m": [], "q": [], "s": []}
    for fold, shift in enumerate(shifts):
        d = tmp_path / f"fold{fold}"
        d.mkdir()
        _metrics(r2[fold], rmse[fold], bias=bias_per_m * shift).to_csv(d / "m.csv", index=False)
        q = pd.DataFrame({"split": ["train", "test"], "mean_m": [50.0, 50.0 + shift]})
        q.to_csv(d / "q.csv", index=False)
        pd.DataFrame({"mean_shift_m": [shift]}).to_csv(d / "s.csv", index=False)
        for k, name in (("m", "m.csv"), ("q", "q.csv"), ("s", "s.csv")):
            paths[k].append(d / name)
    return paths


@pytest.fixture
def folds(tmp_path):
    shifts = [-20.0, 5.0, 40.0]
    r2 = [{"unet": [0.9, 0.91, 0.92], "ridge": [0.5, 0.52, 0.51]} for _ in shifts]
    rmse = [{"unet": [2.0 + i, 2.1 + i, 2.2 + i], "ridge": [6.0, 6.1, 6.2]} for i in range(3)]
    p = _write_folds(tmp_path, shifts, r2, rmse, bias_per_m=-0.5)
    return kfold.fold_metrics(p["m"], p["q"], p["s"])


def test_fold_metrics_hold_the_test_rows_and_each_folds_shift(folds):
    assert len(folds) == 3 * len(MODELS) * len(SEEDS)
    assert sorted(folds["fold"].unique()) == [0, 1, 2]
    assert folds.groupby("fold")["mean_shift_m"].first().tolist() == [-20.0, 5.0, 40.0]
    assert folds.groupby("fold")["test_mean_m"].first().tolist() == [30.0, 55.0, 90.0]


def test_single_split_vs_kfold_is_paired_by_seed_with_a_verdict(folds):
    # the single split scores unet 0.1 lower in every seed: the k-fold estimate is higher
    single = _metrics(
        {"unet": [0.8, 0.81, 0.82], "ridge": [0.5, 0.52, 0.51]},
        {"unet": [3.0, 3.1, 3.2], "ridge": [6.0, 6.1, 6.2]},
    )
    comps = kfold.comparisons(single, folds, ["unet"], ["ridge"])
    row = comps[(comps["group"] == "k-fold vs single split") & (comps["model"] == "unet")]
    r2 = row[row["metric"] == "r2"].iloc[0]
    assert r2["mean_diff"] == pytest.approx(0.1) and r2["ci_low"] > 0
    assert "k-fold test R² is higher than the single split's" in r2["verdict"]
    same = comps[(comps["model"] == "ridge") & (comps["group"] == "k-fold vs single split")]
    assert (
        "differ by less than the seeds resolve" in same[same["metric"] == "r2"].iloc[0]["verdict"]
    )
    net = comps[(comps["group"] == "net vs baseline") & (comps["metric"] == "r2")].iloc[0]
    assert net["mean_diff"] == pytest.approx(0.4, abs=1e-9) and "better" in net["verdict"]
    assert net["folds_same_sign"] == "3 of 3"


def test_summary_carries_single_pooled_and_per_fold_cells_with_seeds(folds):
    single = _metrics(
        {"unet": [0.8, 0.8, 0.8], "ridge": [0.5] * 3}, {"unet": [3.0] * 3, "ridge": [6.0] * 3}
    )
    summ = kfold.summary(single, folds)
    row = summ[(summ["model"] == "U-Net") & (summ["metric"] == "test RMSE")].iloc[0]
    assert row["k-fold (folds × seeds)"].startswith("3.10 ± ") and row[
        "k-fold (folds × seeds)"
    ].endswith("(n = 9)")
    assert row["fold 2"] == "4.10 ± 0.10"  # per-seed values are in the tidy kfold.csv


def test_shift_response_finds_a_bias_that_follows_the_fold_height(folds):
    resp = kfold.shift_response(folds).set_index("model")
    assert resp.loc["unet", "r_shift_bias"] == pytest.approx(-1.0)
    assert resp.loc["unet", "bias_per_shift_m_per_m"] == pytest.approx(-0.5)
    assert resp.loc["unet", "r_shift_rmse"] > 0.9  # unet's RMSE grows fold by fold
    assert np.isnan(resp.loc["ridge", "r_shift_rmse"]) or abs(resp.loc["ridge", "r_shift_rmse"]) < 1


def test_aoa_summary_reports_outside_share_and_error_inside_vs_outside(tmp_path):
    pd.DataFrame(
        {"split": ["train", "val", "test"], "pixels": [10, 5, 8], "outside_pixels": [0, 1, 6]}
        | {"outside_pct": [0.0, 20.0, 75.0], "threshold": 0.8, "scale": 0.1, "sample_px": 10}
        | {"median_di": [0.2, 0.5, 1.5]}
    ).to_csv(tmp_path / "aoa.csv", index=False)
    rows = [
        {"model": "unet", "seed": s, "split": "test", "area": a, "n": 4, "r2": 0.5}
        | {"rmse_m": r + s, "bias_m": 0.0, "mae_m": 1.0, "nmad_m": 1.0}
        for s in SEEDS
        for a, r in (("inside", 1.0), ("outside", 5.0))
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "m.csv", index=False)
    t = kfold.aoa_summary([tmp_path / "aoa.csv"], [tmp_path / "m.csv"], [kfold.SINGLE])
    r = t.iloc[0]
    assert r["test outside"] == "6 px (75.00 %)" and r["threshold"] == "0.800"
    assert (r["train median DI"], r["test median DI"]) == ("0.20", "1.50")
    assert r["RMSE inside (m)"].startswith("2.00 ± 1.00") and r["RMSE outside (m)"].startswith(
        "6.00"
    )


def test_failed_trainings_are_named_in_the_findings(folds):
    folds = folds.assign(best_epoch=np.nan, epochs_run=np.nan)  # as merged by write_kfold
    assert kfold._failed_sentence(folds).startswith("Every fold")
    worse = folds.copy()
    pick = (worse["model"] == "unet") & (worse["fold"] == 1) & (worse["seed"] == 2)
    worse.loc[pick, ["r2", "best_epoch", "epochs_run"]] = [-3.0, 1, 5]
    worse.loc[(worse["model"] == "ridge") & (worse["fold"] == 0), "r2"] = -0.5
    text = kfold._failed_sentence(worse)
    assert "in 4 of 18" in text
    assert "U-Net fold 1 seed 2 (R² -3.00, RMSE 3.2 m, best epoch 1 of 5 run)" in text
    assert "Ridge fold 0 seed 0 (R² -0.50, RMSE 6.0 m)" in text  # no epochs for a Ridge


def test_fold_training_reads_each_folds_histories_in_order(tmp_path):
    paths = []
    for fold, best in ((0, 1), (1, 3)):
        for seed in (0, 1):
            h = pd.DataFrame(
                {"epoch": [1, 2, 3, 4], "steps": [7, 14, 21, 28], "train_loss": 1.0}
                | {"val_loss": [5.0 if e == best else 9.0 for e in range(1, 5)]}
                | {"val_rmse_m": 1.0, "best": False, "seconds": 1.0, "model": "unet"}
                | {"seed": seed, "stopped": "early_stopping"}
            )
            paths.append(tmp_path / f"h{fold}{seed}.csv")
            h.to_csv(paths[-1], index=False)
    t = kfold.fold_training(paths, 2)
    assert t.groupby("fold")["best_epoch"].unique().map(list).tolist() == [[1], [3]]
    assert (t["epochs_run"] == 4).all() and list(t.columns) == kfold.TRAINING
    with pytest.raises(ValueError, match="do not split into 3 folds"):
        kfold.fold_training(paths, 3)
    assert kfold.fold_training([], 3).empty  # a study of baselines only
