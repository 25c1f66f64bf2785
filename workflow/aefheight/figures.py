"""Figures of the study (matplotlib, one style): PNG for the report, PDF for a paper.

Colours are fixed per split and per model so that every figure reads the same way.
"""

from __future__ import annotations

import logging
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .files import atomic_path
from .names import CODES, SPLITS, model_label
from .raster import open_raster, read_dsm_block

log = logging.getLogger(__name__)

SPLIT_COLORS = {
    "train": "#1b9e77",
    "val": "#7570b3",
    "test": "#d95f02",
    "buffer": "#bdbdbd",
    "unused": "#ffffff",
}
MODEL_COLORS = {
    "unet": "#1f77b4",
    "unetplusplus": "#d62728",
    "ridge": "#7f7f7f",
    "ridge_ctx": "#bcbd22",
    "coarse_dem": "#000000",
    "glo30": "#000000",
    "unet_dem": "#17becf",
    "unetplusplus_dem": "#9467bd",
}
# a corrected prediction takes its model's colour, lighter (linear) or darker (quantile_map)
METHOD_SHADES = {"linear": 0.5, "quantile_map": -0.45}


def model_color(name: str) -> str:
    """The plot colour of model ``name`` (:data:`MODEL_COLORS`; green for any other)."""
    for method, shade in METHOD_SHADES.items():
        base = name.removesuffix(f"_{method}")
        if base != name:
            rgb = np.array(to_rgb(model_color(base)))
            return to_hex(tuple(rgb + (1 - rgb) * shade if shade > 0 else rgb * (1 + shade)))
    return MODEL_COLORS.get(name, "#2ca02c")


def save(fig: Figure, out: Path, pdf: Path | None = None) -> None:
    """Save a figure atomically as ``out`` (PNG) and, when given, as ``pdf``."""
    for target, fmt in ((out, "png"), (pdf, "pdf")):
        if target is None:
            continue
        with atomic_path(target) as tmp:
            fig.savefig(
                tmp,
                dpi=150,
                bbox_inches="tight",
                format=fmt,
                metadata={"CreationDate": None} if fmt == "pdf" else None,
            )
    plt.close(fig)


def by_model(paths: list[Path]) -> dict[str, pd.DataFrame]:
    """CSVs keyed by the model they carry (their ``model`` column), in the given order."""
    return {str((df := pd.read_csv(p))["model"].iloc[0]): df for p in paths}


def overview(
    path: Path, max_side: int = 1000
) -> tuple[np.ndarray, tuple[float, float, float, float]]:
    """A decimated read of band 1 (NaN for nodata) and its extent for ``imshow``."""
    with open_raster(path, bands=1) as ds:
        f = max(1, int(np.ceil(max(ds.width, ds.height) / max_side)))
        shape = (max(1, ds.height // f), max(1, ds.width // f))
        z = read_dsm_block(ds, None) if f == 1 else ds.read(1, out_shape=shape).astype("f4")
        if f > 1 and ds.nodata is not None:
            z[z == ds.nodata] = np.nan
        b = ds.bounds
    return z, (b.left, b.right, b.bottom, b.top)


def split_map(
    split_gpkg: Path, split_tif: Path, dsm_path: Path, out: Path, pdf: Path | None = None
) -> Figure:
    """Pixel split labels (buffer included) and patch outlines over the reference DSM."""
    import geopandas as gpd  # only the split map reads vector data
    from matplotlib.colors import ListedColormap

    df = gpd.read_file(split_gpkg, layer="patches")
    z, extent = overview(dsm_path)
    lab, _ = overview(split_tif)
    fig, ax = plt.subplots(figsize=(8, 6))
    im = ax.imshow(z, extent=extent, cmap="terrain", interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label="reference height (m)")
    colors = ["#00000000"] + [SPLIT_COLORS[k] for k in CODES]  # code 0 (no patch) clear
    ax.imshow(
        np.nan_to_num(lab, nan=0),
        extent=extent,
        cmap=ListedColormap(colors),
        vmin=-0.5,
        vmax=len(CODES) + 0.5,
        alpha=0.45,
        interpolation="nearest",
    )
    for name, color in SPLIT_COLORS.items():
        sub = df[df["split"] == name]
        if len(sub):
            sub.boundary.plot(ax=ax, color=color, linewidth=1.0)
    counts = df["split"].value_counts()
    ax.legend(
        handles=[
            Patch(color=c, alpha=0.6, label=f"{k} ({counts.get(k, 0)} patches)")
            for k, c in SPLIT_COLORS.items()
        ],
        loc="lower left",
        fontsize=8,
    )
    ax.set_xlabel(f"easting (m, {df.crs.to_string() if df.crs else '?'})")
    ax.set_ylabel("northing (m)")
    ax.ticklabel_format(style="plain", useOffset=False)
    ax.set_title("Spatial split (pixels; outlines: patches)")
    save(fig, out, pdf)
    return fig


def pred_vs_ref(
    samples: pd.DataFrame, metrics: pd.DataFrame, model: str, out: Path, pdf: Path | None = None
) -> Figure:
    """Hexbin of predicted vs reference height per split, 1:1 line, metrics in the corner."""
    splits = [s for s in SPLITS if (samples["split"] == s).any()]
    fig, axes = plt.subplots(
        1,
        max(1, len(splits)),
        figsize=(4.2 * max(1, len(splits)), 4.2),
        squeeze=False,
        sharex=True,
        sharey=True,
    )
    lo = float(np.nanmin(samples[["reference", "prediction"]].to_numpy())) if len(samples) else 0
    hi = float(np.nanmax(samples[["reference", "prediction"]].to_numpy())) if len(samples) else 1
    for ax, split in zip(axes[0], splits, strict=False):
        sub = samples[samples["split"] == split]
        ax.hexbin(
            sub["reference"],
            sub["prediction"],
            gridsize=60,
            bins="log",
            mincnt=1,
            cmap="viridis",
            extent=(lo, hi, lo, hi),
        )
        ax.plot([lo, hi], [lo, hi], "k--", linewidth=1, label="1:1")
        m = metrics[metrics["split"] == split].iloc[0]
        ax.text(
            0.03,
            0.97,
            f"R² = {m['r2']:.3f}\nRMSE = {m['rmse_m']:.2f} m\n"
            f"median dh = {m['median_diff_m']:.2f} m\nN = {int(m['n']):,}",
            transform=ax.transAxes,
            va="top",
            fontsize=9,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
        )
        ax.set_title(f"{model_label(model)}: {split}", color=model_color(model))
        ax.set_xlabel("reference height (m)")
        ax.set_aspect("equal")
    axes[0][0].set_ylabel("predicted height (m)")
    save(fig, out, pdf)
    return fig


def loss_curves(histories: dict[str, pd.DataFrame], out: Path, pdf: Path | None = None) -> Figure:
    """Training and validation loss per epoch for every net (standardized MSE, log scale)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for model, h in histories.items():
        c = model_color(model)
        ax.plot(h["epoch"], h["train_loss"], color=c, label=f"{model_label(model)} train")
        ax.plot(
            h["epoch"],
            h["val_loss"],
            color=c,
            linestyle="--",
            label=f"{model_label(model)} validation",
        )
        best = h.loc[h["val_loss"].idxmin()]
        ax.scatter([best["epoch"]], [best["val_loss"]], color=c, marker="o", zorder=3)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("MSE of standardized height")
    ax.set_title("Training curves (dot: best validation epoch, kept)")
    ax.legend(fontsize=8)
    save(fig, out, pdf)
    return fig


def residual_map(
    pred_path: Path, dsm_path: Path, model: str, out: Path, pdf: Path | None = None
) -> Figure:
    """Map of dh = prediction - reference on a diverging scale centred on 0."""
    pred, extent = overview(pred_path)
    ref, _ = overview(dsm_path)
    dh = pred - ref
    lim = float(np.nanpercentile(np.abs(dh), 98)) if np.isfinite(dh).any() else 1.0
    fig, ax = plt.subplots(figsize=(8, 6))
    im = ax.imshow(dh, extent=extent, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
    fig.colorbar(im, ax=ax, shrink=0.8, label="dh = prediction - reference (m)")
    ax.set_xlabel("easting (m)")
    ax.set_ylabel("northing (m)")
    ax.ticklabel_format(style="plain", useOffset=False)
    ax.set_title(
        f"{model_label(model)}: residuals (red = over-estimation)", color=model_color(model)
    )
    save(fig, out, pdf)
    return fig


def dh_histograms(samples: dict[str, pd.DataFrame], out: Path, pdf: Path | None = None) -> Figure:
    """Distribution of dh per model (one panel each) and split (one colour each)."""
    models = list(samples)
    ncols = min(len(models), 4)
    nrows = -(-len(models) // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(4.2 * ncols, 3.8 * nrows), sharey=True, squeeze=False,
        layout="constrained",
    )  # fmt: skip
    for ax in axes.flat[len(models) :]:
        ax.set_visible(False)
    allv = np.concatenate([s["prediction"] - s["reference"] for s in samples.values()])
    lim = float(np.nanpercentile(np.abs(allv), 99)) if allv.size else 1.0
    bins = np.linspace(-lim, lim, 81)
    for ax, m in zip(axes.flat, models, strict=False):
        s = samples[m]
        for split in SPLITS:
            d = (s["prediction"] - s["reference"])[s["split"] == split]
            if len(d):
                ax.hist(
                    d,
                    bins=bins,
                    density=True,
                    histtype="step",
                    linewidth=1.5,
                    color=SPLIT_COLORS[split],
                    label=f"{split} (median {d.median():.1f} m)",
                )
        ax.axvline(0, color="k", linewidth=0.8)
        ax.set_title(model_label(m), color=model_color(m), fontsize=9)
        ax.set_xlabel("dh = prediction - reference (m)")
        ax.legend(fontsize=7)
    for row in axes:
        row[0].set_ylabel("density (1/m)")
    save(fig, out, pdf)
    return fig


def height_shift(
    hist: pd.DataFrame, stats: pd.DataFrame, out: Path, pdf: Path | None = None
) -> Figure:
    """Reference-height distribution per split on one axis, with the shift statistics."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for split in SPLITS:
        h = hist[hist["split"] == split]
        if len(h):
            ax.stairs(
                h["n"] / h["n"].sum() / (h["height_hi_m"] - h["height_lo_m"]).iloc[0],
                np.append(h["height_lo_m"].to_numpy(), h["height_hi_m"].iloc[-1]),
                color=SPLIT_COLORS[split],
                linewidth=1.5,
                label=split,
            )
    if len(stats) and "ks_statistic" in stats:
        s = stats.iloc[0]
        ax.text(
            0.98,
            0.97,
            f"train vs test:\nKS = {s['ks_statistic']:.2f}\n"
            f"Wasserstein = {s['wasserstein_m']:.1f} m\n"
            f"test outside train range = {s['test_outside_train_range_pct']:.1f} %",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=9,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
        )
    ax.set_xlabel("reference height (m)")
    ax.set_ylabel("density (1/m)")
    ax.set_title("Height distribution per split")
    ax.legend(loc="upper left")
    save(fig, out, pdf)
    return fig


def error_by_height(
    by_height: dict[str, pd.DataFrame], out: Path, pdf: Path | None = None, min_n: int = 100
) -> Figure:
    """Bias and RMSE per reference-height bin for every model (test solid, train dashed)."""
    fig, (ax_b, ax_r) = plt.subplots(2, 1, figsize=(9.5, 7.5), sharex=True)
    for m, t in by_height.items():
        for split, style in (("test", "-"), ("train", "--")):
            h = t[(t["split"] == split) & (t["n"] >= min_n)]
            x = (h["height_lo_m"] + h["height_hi_m"]) / 2
            kw = {"color": model_color(m), "linestyle": style, "label": f"{model_label(m)} {split}"}
            ax_b.plot(x, h["bias_m"], **kw)
            ax_r.plot(x, h["rmse_m"], **kw)
    ax_b.axhline(0, color="k", linewidth=0.8)
    ax_b.set_ylabel("bias = mean dh (m)")
    ax_b.set_title("Error by reference height (dh = prediction - reference)")
    ax_r.set_ylabel("RMSE (m)")
    ax_r.set_xlabel("reference height (m)")
    ax_b.legend(fontsize=6, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save(fig, out, pdf)
    return fig


def _fold_heights(ax: plt.Axes, quantiles: list[pd.DataFrame]) -> None:
    """Box plots (5-95 % whiskers) of each fold's test heights, from height_shift's quantiles."""
    stats = []
    for fold, table in enumerate(quantiles):
        q = table.set_index("split").loc["test"]
        stats.append(
            {"label": f"fold {fold}", "whislo": q["p05_m"], "q1": q["p25_m"], "med": q["p50_m"]}
            | {"q3": q["p75_m"], "whishi": q["p95_m"], "mean": q["mean_m"], "fliers": []}
        )
    ax.bxp(stats, showmeans=True, patch_artist=True, boxprops={"facecolor": SPLIT_COLORS["test"]})
    ax.set_ylabel("test reference height (m)")
    ax.set_title("Held-out heights per fold (box 25-75 %, whiskers 5-95 %, ▲ mean)")


def kfold_errors(
    folds: pd.DataFrame, quantiles: list[pd.DataFrame], out: Path, pdf: Path | None = None
) -> Figure:
    """Per fold: held-out heights (top) above each model's test RMSE and bias.

    One point per seed and a line through the means over seeds, so that one sees whether the
    error follows the fold's height shift.
    """
    fig, (ax_h, ax_r, ax_b) = plt.subplots(3, 1, figsize=(9, 10), sharex=True)
    _fold_heights(ax_h, quantiles)
    models = list(folds["model"].unique())
    width = 0.6 / max(len(models), 1)
    for i, m in enumerate(models):
        g = folds[folds["model"] == m]
        shift = 1 + (i - (len(models) - 1) / 2) * width  # bxp puts fold k at x = k + 1
        mean = g.groupby("fold")[["rmse_m", "bias_m"]].mean()
        for ax, col in ((ax_r, "rmse_m"), (ax_b, "bias_m")):
            ax.scatter(g["fold"] + shift, g[col], s=12, color=model_color(m), alpha=0.7)
            ax.plot(mean.index + shift, mean[col], color=model_color(m), label=model_label(m))
    ax_r.set_ylabel("test RMSE (m)")
    ax_b.set_ylabel("test bias = mean dh (m)")
    ax_b.axhline(0, color="k", linewidth=0.8)
    ax_b.set_xlabel("fold (strip held out, in order along the split axis)")
    ax_r.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    save(fig, out, pdf)
    return fig


def aoa_maps(
    aoa: list[Path], splits: list[Path], names: list[str], out: Path, pdf: Path | None = None
) -> Figure:
    """The dissimilarity index of every split; outside the AOA in red, test area outlined."""
    cols = int(np.ceil(np.sqrt(len(aoa))))
    rows = int(np.ceil(len(aoa) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    for ax, a, s, name in zip(axes.flat, aoa, splits, names, strict=False):
        di, extent = overview(a)
        lab, _ = overview(s)
        with open_raster(a, bands=1) as ds:
            thr = float(ds.tags()["threshold"])
        im = ax.imshow(di, extent=extent, cmap="viridis", vmin=0, vmax=2 * thr)
        outside = np.where(di > thr, 1.0, np.nan)
        ax.imshow(outside, extent=extent, cmap="autumn", alpha=0.8, interpolation="nearest")
        ax.contour(
            np.nan_to_num(lab) == CODES["test"], levels=[0.5], colors="white", linewidths=1.0,
            extent=(extent[0], extent[1], extent[3], extent[2]),
        )  # fmt: skip
        pct = 100 * np.mean(di[(lab == CODES["test"]) & np.isfinite(di)] > thr)
        ax.set_title(f"{name}: test {pct:.0f} % outside (DI > {thr:.2f})", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, shrink=0.8, label="dissimilarity index")
    for ax in list(axes.flat)[len(aoa) :]:
        ax.axis("off")
    fig.suptitle("Area of applicability (red: outside; white line: held-out area)")
    save(fig, out, pdf)
    return fig
