import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
from aefheight.core.schema import make
from aefheight.report import figures
from aefheight.report.maps import residual_panels, split_map
from aefheight.report.samples import pred_vs_ref
from aefheight.split.spatial import SplitSettings, write_split
from aefheight.tiles.patches import TilingSettings, cut_patches
from helpers import store_paths


def _labels(fig):
    return [(ax.get_xlabel(), ax.get_ylabel()) for ax in fig.axes]


def test_split_map_has_units_and_all_splits(tiny_aoi, tmp_path):
    cut_patches(
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
    fig = split_map(
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
    fig = pred_vs_ref(samples, metrics, "unetplusplus", tmp_path / "p.png")
    assert [ax.get_title() for ax in fig.axes[:3]] == [
        "U-Net++: train",
        "U-Net++: val",
        "U-Net++: test",
    ]
    assert _labels(fig)[0] == ("reference height (m)", "predicted height (m)")
    assert "RMSE = 3.00 m" in fig.axes[2].texts[0].get_text()


@pytest.mark.parametrize("name", ["unet", "unetplusplus", "ridge", "custom"])
def test_colours_are_fixed_per_model(name):
    assert figures.model_color(name) == figures.model_color(name)
    assert figures.model_label(name)


def _metrics(models=("unet", "unetplusplus", "ridge"), seeds=(0, 1, 2)):
    rng = np.random.default_rng(0)
    rows = []
    for m in models:
        for seed in seeds:
            for split in ("train", "val", "test"):
                rows.append(
                    {
                        "model": m,
                        "seed": seed,
                        "split": split,
                        "r2": rng.uniform(0.3, 0.9),
                        "rmse_m": rng.uniform(10, 30),
                        "median_diff_m": rng.normal(0, 3),
                        "n": 100,
                    }
                )
    return pd.DataFrame(rows)


def test_median_seed_is_the_middle_test_r2():
    m = _metrics()
    test = m[(m["split"] == "test") & (m["model"] == "unet")].sort_values("r2")
    assert figures.median_seeds(m)["unet"] == int(test["seed"].iloc[1])


def test_seed_figure_shows_every_seed_and_the_intervals(tmp_path):
    m = _metrics()
    pairs = [("unetplusplus", "unet"), ("unet", "ridge")]
    fig = figures.seed_figure(m, pairs, tmp_path / "s.png", tmp_path / "s.pdf")
    assert (tmp_path / "s.png").stat().st_size > 10_000 and (tmp_path / "s.pdf").exists()
    r2, rmse, diff = fig.axes[:3]
    assert r2.get_ylabel() == "test R²" and rmse.get_ylabel() == "test RMSE (m)"
    points = sum(len(c.get_offsets()) for c in r2.collections if c.get_offsets().ndim == 2)
    assert points >= 9 + 3  # 3 models x 3 seeds, and a mean per model
    assert [t.get_text() for t in diff.get_xticklabels()] == ["U-Net++ − U-Net", "U-Net − Ridge"]
    assert any(list(line.get_ydata()[:1]) == [0] for line in diff.get_lines())  # the zero line


def test_error_by_height_has_a_panel_per_model_family(tmp_path):
    rows = []
    for model in ("unet", "unet_linear", "ridge"):
        for seed in (0, 1):
            rows.append(
                pd.DataFrame(
                    {
                        "model": model,
                        "seed": seed,
                        "split": "test",
                        "height_lo_m": [0.0, 10],
                        "height_hi_m": [10.0, 20],
                        "n": [500, 500],
                        "bias_m": [2.0 + seed, -2.0],
                        "rmse_m": 3.0,
                    }
                )
            )
    fig = figures.error_by_height_panels(rows, tmp_path / "e.png")
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles == ["U-Net", "Ridge"]  # the correction sits in its net's panel
    assert fig.axes[0].get_xlabel() == "reference height (m)"


def test_residual_panels_share_one_colour_scale_and_name_the_seed(tiny_aoi, tmp_path):
    import rasterio

    with rasterio.open(tiny_aoi["dsm"]) as src:
        profile, z = src.profile, src.read(1)
    p = tmp_path / "p.tif"
    with rasterio.open(p, "w", **profile) as dst:
        dst.write(np.where(z == profile["nodata"], z, z + 5.0), 1)
    split = tmp_path / "split.tif"
    with rasterio.open(split, "w", **{**profile, "dtype": "uint8", "nodata": 0}) as dst:
        lab = np.ones(z.shape, np.uint8)
        lab[:, z.shape[1] // 2 :] = 3
        dst.write(lab, 1)
    maps = {"unet": (2, tiny_aoi["dsm"]), "ridge": (0, p)}
    fig = residual_panels(maps, tiny_aoi["dsm"], split, tmp_path / "r.png")
    ims = [ax.images[0] for ax in fig.axes if ax.images]
    assert len({im.get_clim() for im in ims}) == 1 and ims[0].get_clim()[0] == -ims[0].get_clim()[1]
    assert [ax.get_title() for ax in fig.axes if ax.images] == ["U-Net (seed 2)", "Ridge (seed 0)"]


def test_loss_curve_panels_one_panel_per_net_line_per_seed(tmp_path):
    hs = [
        pd.DataFrame(
            {
                "model": m,
                "seed": s,
                "epoch": [1, 2, 3],
                "steps": [50, 100, 150],
                "val_loss": [1.0, 0.5, 0.6],
                "val_rmse_m": [30.0, 20.0, 21.0],
            }
        )
        for m in ("unet", "unetplusplus")
        for s in (0, 1)
    ]
    fig = figures.loss_curve_panels(hs, tmp_path / "l.png")
    panels = [ax for ax in fig.axes if ax.get_title()]
    assert [ax.get_title() for ax in panels] == ["U-Net", "U-Net++"]
    assert all(len(ax.get_lines()) >= 2 for ax in panels)


def test_height_distributions_have_units(tmp_path):
    hist = pd.DataFrame(
        {
            "split": ["train"] * 3 + ["test"] * 3,
            "height_lo_m": [0.0, 1, 2, 5, 6, 7],
            "height_hi_m": [1.0, 2, 3, 6, 7, 8],
            "n": [5, 9, 5, 3, 8, 3],
        }
    )
    st = pd.DataFrame(
        [
            {
                "ks_statistic": 1.0,
                "wasserstein_m": 5.0,
                "test_outside_train_range_pct": 100.0,
                "mean_shift_m": 5.0,
            }
        ]
    )
    fig = figures.height_distributions(hist, st, tmp_path / "s.png")
    assert fig.axes[0].get_xlabel() == "reference height (m)"
    assert "KS = 1.00" in fig.axes[0].texts[0].get_text()
