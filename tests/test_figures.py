import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from aefheight import figures
from aefheight.patches import TilingSettings, tile
from aefheight.settings import make
from aefheight.split import SplitSettings, write_split
from helpers import store_paths


def _labels(fig):
    return [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes]


def test_split_map_has_units_and_all_splits(tiny_aoi, tmp_path):
    tile(
        tiny_aoi["embeddings"],
        tiny_aoi["dsm"],
        make(TilingSettings, patch_size=32),
        **store_paths(tmp_path),
    )
    write_split(
        tmp_path / "index.parquet",
        tiny_aoi["embeddings"],
        tmp_path / "s.gpkg",
        tmp_path / "s.tif",
        tmp_path / "areas.csv",
        make(SplitSettings, buffer_px=4),
    )
    fig = figures.split_map(
        tmp_path / "s.gpkg",
        tmp_path / "s.tif",
        tiny_aoi["dsm"],
        tmp_path / "map.png",
        tmp_path / "map.pdf",
    )
    assert (tmp_path / "map.png").stat().st_size > 10_000 and (tmp_path / "map.pdf").exists()
    main = fig.axes[0]
    assert main.get_xlabel().startswith("easting (m") and main.get_ylabel() == "northing (m)"
    legend = [t.get_text() for t in main.get_legend().get_texts()]
    assert all(any(t.startswith(k) for t in legend) for k in ("train", "val", "test"))
    assert fig.axes[1].get_ylabel() == "reference height (m)"  # colour bar
    n = len(gpd.read_file(tmp_path / "s.gpkg"))
    assert sum(int(t.split("(")[1].split()[0]) for t in legend) == n


def test_pred_vs_ref_panels_per_split_with_metrics(tmp_path):
    rng = np.random.default_rng(0)
    ref = rng.uniform(0, 100, 3000)
    samples = pd.DataFrame(
        {
            "split": np.repeat(["train", "val", "test"], 1000),
            "reference": ref,
            "prediction": ref + rng.normal(0, 5, 3000),
        }
    )
    metrics = pd.DataFrame(
        {
            "split": ["train", "val", "test"],
            "r2": [0.9, 0.8, 0.7],
            "rmse_m": [1.0, 2.0, 3.0],
            "median_diff_m": [0.1, 0.2, -0.3],
            "n": [10, 20, 30],
        }
    )
    fig = figures.pred_vs_ref(samples, metrics, "unetplusplus", tmp_path / "p.png")
    assert [ax.get_title() for ax in fig.axes[:3]] == [
        "U-Net++: train",
        "U-Net++: val",
        "U-Net++: test",
    ]
    assert _labels(fig)[0] == ("reference height (m)", "predicted height (m)")
    assert "RMSE = 3.00 m" in fig.axes[2].texts[0].get_text()


def test_loss_curves_one_line_pair_per_model(tmp_path):
    h = pd.DataFrame(
        {"epoch": [1, 2, 3], "train_loss": [1.0, 0.5, 0.4], "val_loss": [1.2, 0.6, 0.7]}
    )
    fig = figures.loss_curves({"unet": h, "unetplusplus": h}, tmp_path / "l.png")
    ax = fig.axes[0]
    assert len(ax.get_lines()) == 4
    assert ax.get_xlabel() == "epoch" and "MSE" in ax.get_ylabel()


@pytest.mark.parametrize("name", ["unet", "unetplusplus", "ridge", "custom"])
def test_colours_are_fixed_per_model(name):
    assert figures.model_color(name) == figures.model_color(name)
    assert figures.model_label(name)


def test_residual_map_is_centred_on_zero(tiny_aoi, tmp_path):
    fig = figures.residual_map(tiny_aoi["dsm"], tiny_aoi["dsm"], "unet", tmp_path / "r.png")
    im = fig.axes[0].images[0]
    lo, hi = im.get_clim()
    assert lo == -hi
    assert fig.axes[1].get_ylabel() == "dh = prediction - reference (m)"


def test_dh_hist_panel_per_model_line_per_split(tmp_path):
    rng = np.random.default_rng(1)
    s = pd.DataFrame(
        {"split": np.repeat(["train", "val", "test"], 500), "reference": rng.uniform(0, 100, 1500)}
    )
    s["prediction"] = s["reference"] + rng.normal(0, 3, 1500)
    fig = figures.dh_histograms({"unet": s, "ridge": s}, tmp_path / "h.png")
    assert [ax.get_title() for ax in fig.axes] == ["U-Net", "Ridge"]
    assert fig.axes[0].get_xlabel() == "dh = prediction - reference (m)"
    assert len(fig.axes[0].get_legend().get_texts()) == 3


def test_height_shift_and_error_by_height_have_units(tmp_path):
    hist = pd.DataFrame(
        {
            "split": ["train"] * 3 + ["test"] * 3,
            "height_lo_m": [0.0, 1, 2, 5, 6, 7],
            "height_hi_m": [1.0, 2, 3, 6, 7, 8],
            "n": [5, 9, 5, 3, 8, 3],
        }
    )
    st = pd.DataFrame(
        [{"ks_statistic": 1.0, "wasserstein_m": 5.0, "test_outside_train_range_pct": 100.0}]
    )
    fig = figures.height_shift(hist, st, tmp_path / "s.png")
    assert fig.axes[0].get_xlabel() == "reference height (m)"
    assert "KS = 1.00" in fig.axes[0].texts[0].get_text()
    bh = pd.DataFrame(
        {
            "split": "test",
            "height_lo_m": [0.0, 10],
            "height_hi_m": [10.0, 20],
            "n": [500, 500],
            "bias_m": [2.0, -2.0],
            "rmse_m": [3.0, 3.0],
        }
    )
    fig = figures.error_by_height({"unet": bh}, tmp_path / "e.png")
    assert [ax.get_ylabel() for ax in fig.axes] == ["bias = mean dh (m)", "RMSE (m)"]
    assert fig.axes[1].get_xlabel() == "reference height (m)"
