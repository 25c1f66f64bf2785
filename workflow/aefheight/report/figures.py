"""Figures of the study (matplotlib, one style): PNG for the report, PDF for a paper.

Colours are fixed per split and per model so that every figure reads the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import to_hex, to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from aefheight.core.errors import RasterError
from aefheight.core.files import atomic_path
from aefheight.core.names import CODES, SPLITS, model_label
from aefheight.core.raster import open_raster, read_dsm_block

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


def save(fig: Figure, out: Path | None, pdf: Path | None = None) -> None:
    """Save a figure atomically as ``out`` (PNG) and ``pdf``, each when given."""
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


def _hexbin(ax: plt.Axes, sub: pd.DataFrame, lo: float, hi: float, gridsize: int) -> None:
    """Predicted vs reference height of a pixel sample (log counts) and the 1:1 line."""
    ax.hexbin(sub["reference"], sub["prediction"], gridsize=gridsize, bins="log", mincnt=1,
              cmap="viridis", extent=(lo, hi, lo, hi))  # fmt: skip
    ax.plot([lo, hi], [lo, hi], "k--", linewidth=1, label="1:1")


def pred_vs_ref(
    samples: pd.DataFrame,
    metrics: pd.DataFrame,
    model: str,
    out: Path | None,
    pdf: Path | None = None,
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
        _hexbin(ax, samples[samples["split"] == split], lo, hi, 60)
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


# The report's summary figures: one job per kind draws every model and seed (seaborn for the
# statistical plots); the report embeds these PNGs, the PDFs are for a paper.


def median_seeds(metrics: pd.DataFrame) -> dict[str, int]:
    """Per model, the seed of its median test R² (the lower middle one for an even count)."""
    test = metrics[metrics["split"] == "test"].sort_values(["model", "r2", "seed"])
    return {
        str(m): int(g["seed"].iloc[(len(g) - 1) // 2]) for m, g in test.groupby("model", sort=False)
    }


def _paired_rows(metrics: pd.DataFrame, pairs: list[tuple[str, str]]) -> pd.DataFrame:
    """Per-seed test R² and RMSE differences of ``pairs`` (model minus versus)."""
    test = metrics[metrics["split"] == "test"]
    rows = []
    for a, b in pairs:
        va, vb = (test[test["model"] == m].set_index("seed") for m in (a, b))
        for metric in ("r2", "rmse_m"):
            for seed, d in (va[metric] - vb[metric]).dropna().items():
                rows.append(
                    {
                        "pair": f"{model_label(a)} − {model_label(b)}",
                        "metric": metric,
                        "seed": seed,
                        "diff": d,
                    }
                )
    return pd.DataFrame(rows, columns=["pair", "metric", "seed", "diff"])


def _interval_bars(ax: plt.Axes, data: pd.DataFrame, x: str, y: str, order: list[str]) -> None:
    """Mean and 95 % t-interval over seeds of ``y`` per ``x`` category, as black bars."""
    from aefheight.report.tables import Interval

    for i, key in enumerate(order):
        iv = Interval.of(data.loc[data[x] == key, y])
        if iv.n >= 2:
            ax.errorbar(
                i,
                iv.mean,
                yerr=[[iv.mean - iv.low], [iv.high - iv.mean]],
                fmt="none",
                ecolor="k",
                elinewidth=1.5,
                capsize=5,
                zorder=4,
            )
        ax.scatter([i], [iv.mean], marker="D", color="k", s=28, zorder=5)


def _seed_points(ax: plt.Axes, data: pd.DataFrame, x: str, y: str, label: str) -> None:
    """Every seed's ``y`` per ``x`` category, the mean and 95 % interval in black."""
    import seaborn as sns

    order = list(dict.fromkeys(data[x]))
    sns.stripplot(data=data, x=x, y=y, hue="seed", order=order, ax=ax, size=6, jitter=0.08,
                  palette="colorblind", zorder=3)  # fmt: skip
    _interval_bars(ax, data, x, y, order)
    ax.set_xlabel("")
    ax.set_ylabel(label)
    ax.tick_params(axis="x", rotation=35)
    for t in ax.get_xticklabels():
        t.set_horizontalalignment("right")


def seed_figure(
    metrics: pd.DataFrame, pairs: list[tuple[str, str]], out: Path, pdf: Path | None = None
) -> Figure:
    """Test R² and RMSE per model, every seed, and the paired differences ``pairs``.

    One point per seed, grey lines join a seed across models, the mean and 95 % interval over
    seeds in black; the third panel shows the differences of ``pairs`` with their intervals.
    """
    test = metrics[metrics["split"] == "test"].copy()
    test["label"] = test["model"].map(model_label)
    order = list(dict.fromkeys(test["label"]))
    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2), layout="constrained")
    for ax, col, name in zip(axes, ("r2", "rmse_m"), ("test R²", "test RMSE (m)"), strict=False):
        for _, g in test.groupby("seed"):  # a seed across models
            g = g.set_index("label").reindex(order)
            ax.plot(range(len(order)), g[col], color="0.8", linewidth=0.8, zorder=1)
        _seed_points(ax, test, "label", col, name)
    diffs = _paired_rows(metrics, pairs)
    sub = diffs[diffs["metric"] == "r2"]
    if len(sub):
        _seed_points(axes[2], sub, "pair", "diff", "paired difference of test R²")
        if axes[2].get_legend() is not None:
            axes[2].get_legend().remove()
    axes[2].axhline(0, color="k", linewidth=0.8)
    axes[2].set_title("paired by seed: an interval off 0 is a resolved difference", fontsize=9)
    fig.suptitle("Every seed, with the mean and 95 % interval over seeds (black)")
    save(fig, out, pdf)
    return fig


def family(model: str) -> str:
    """The model a prediction belongs to: a corrected prediction's base model, else itself."""
    for method in METHOD_SHADES:
        if model.endswith(f"_{method}"):
            return model.removesuffix(f"_{method}")
    return model


def error_by_height_panels(
    by_height: list[pd.DataFrame],
    out: Path,
    pdf: Path | None = None,
    split: str = "test",
    min_n: int = 100,
    marker_m: float | None = 100.0,
) -> Figure:
    """Bias per reference-height bin in ``split``, one panel per model family.

    The band is the seeds' range around their mean; corrected predictions take their own
    colours in their model's panel.
    """
    import seaborn as sns

    rows = []
    for t in by_height:
        h = t[(t["split"] == split) & (t["n"] >= min_n)]
        rows.append(h.assign(height_m=(h["height_lo_m"] + h["height_hi_m"]) / 2))
    df = pd.concat(rows, ignore_index=True)
    df["family"] = df["model"].map(lambda m: model_label(family(m)))
    df["prediction"] = df["model"].map(model_label)
    palette = {model_label(m): model_color(m) for m in df["model"].unique()}
    grid = sns.relplot(
        data=df,
        x="height_m",
        y="bias_m",
        hue="prediction",
        col="family",
        col_wrap=min(3, df["family"].nunique()),
        kind="line",
        errorbar=("pi", 100),
        estimator="mean",
        palette=palette,
        height=3.2,
        aspect=1.3,
        facet_kws={"sharey": True},
    )
    for ax in grid.axes.flat:
        ax.axhline(0, color="k", linewidth=0.8)
        if marker_m is not None:
            ax.axvline(marker_m, color="0.5", linestyle=":", linewidth=1)
    grid.set_axis_labels("reference height (m)", "bias = mean dh (m)")
    grid.set_titles("{col_name}")
    grid.figure.suptitle(
        f"Error by height in the {split} area (band: the seeds' range; dotted: the paper's "
        f"~{marker_m:.0f} m crossover)"
        if marker_m is not None
        else f"Error by height ({split})",
        y=1.02,
    )
    save(grid.figure, out, pdf)
    return grid.figure


def height_distributions(
    hist: pd.DataFrame, stats: pd.DataFrame, out: Path, pdf: Path | None = None
) -> Figure:
    """Reference-height density per split (seaborn, from the per-split histograms)."""
    import seaborn as sns

    h = hist[hist["split"].isin(SPLITS)].copy()
    h["height_m"] = (h["height_lo_m"] + h["height_hi_m"]) / 2
    fig, ax = plt.subplots(figsize=(7.5, 4.5), layout="constrained")
    sns.histplot(
        data=h,
        x="height_m",
        weights="n",
        hue="split",
        hue_order=list(SPLITS),
        stat="density",
        common_norm=False,
        element="step",
        fill=False,
        ax=ax,
        binwidth=5,
        palette=SPLIT_COLORS,
    )
    if len(stats) and "ks_statistic" in stats:
        s = stats.iloc[0]
        ax.text(
            0.98,
            0.97,
            f"test vs train: +{s['mean_shift_m']:.1f} m on average\nKS = {s['ks_statistic']:.2f}"
            f"\nWasserstein = {s['wasserstein_m']:.1f} m\n"
            f"test outside the train range = {s['test_outside_train_range_pct']:.1f} %",
            transform=ax.transAxes,
            ha="right",
            va="top",
            fontsize=9,
            bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
        )
    ax.set_xlabel("reference height (m)")
    ax.set_title("Height distribution per split")
    save(fig, out, pdf)
    return fig


def loss_curve_panels(histories: list[pd.DataFrame], out: Path, pdf: Path | None = None) -> Figure:
    """Validation RMSE (m) over optimizer steps: one panel per net, one line per seed."""
    import seaborn as sns

    df = pd.concat(histories, ignore_index=True)
    df["net"] = df["model"].map(model_label)
    grid = sns.relplot(
        data=df,
        x="steps",
        y="val_rmse_m",
        hue="seed",
        col="net",
        col_wrap=min(3, df["net"].nunique()),
        kind="line",
        marker="o",
        palette="colorblind",
        height=3.2,
        aspect=1.3,
    )
    best = df.loc[df.groupby(["model", "seed"])["val_loss"].idxmin()]
    for ax in grid.axes.flat:
        net = ax.get_title().split(" = ", 1)[-1]
        b = best[best["net"] == net]
        ax.scatter(b["steps"], b["val_rmse_m"], s=80, facecolors="none", edgecolors="k", zorder=5)
    grid.set_axis_labels("optimizer steps", "validation RMSE (m)")
    grid.set_titles("{col_name}")
    grid.figure.suptitle("Training: validation error per epoch (circled: the kept epoch)", y=1.02)
    save(grid.figure, out, pdf)
    return grid.figure


def _dh_map(pred: Path, dsm: Path, max_side: int) -> tuple[np.ndarray, tuple]:
    p, extent = overview(pred, max_side)
    r, _ = overview(dsm, max_side)
    return p - r, extent


def residual_panels(
    maps: dict[str, tuple[int, Path]],
    dsm: Path,
    split_tif: Path,
    out: Path | None,
    pdf: Path | None = None,
    max_side: int = 600,
) -> Figure:
    """The error (dh) maps of every model on one shared colour scale, the test area's edge drawn.

    ``maps``: model -> (seed, prediction path), e.g. its median seed.
    """
    dhs = {m: _dh_map(p, dsm, max_side) for m, (_, p) in maps.items()}
    lab, extent = overview(split_tif, max_side)
    allv = np.concatenate([d[np.isfinite(d)] for d, _ in dhs.values()]) if dhs else np.zeros(1)
    lim = float(np.percentile(np.abs(allv), 98)) if allv.size else 1.0
    n = len(dhs)
    ncols = min(3, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(5.2 * ncols, 3.9 * nrows), squeeze=False, layout="constrained"
    )
    im = None
    for ax, (m, (d, ext)) in zip(axes.flat, dhs.items(), strict=False):
        im = ax.imshow(d, extent=ext, cmap="RdBu_r", vmin=-lim, vmax=lim, interpolation="nearest")
        ax.contour(
            np.nan_to_num(lab) == CODES["test"],
            levels=[0.5],
            colors="k",
            linewidths=0.8,
            extent=extent,
            origin="upper",
        )
        ax.set_title(f"{model_label(m)} (seed {maps[m][0]})", fontsize=10, color=model_color(m))
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    if im is not None:
        fig.colorbar(im, ax=axes, shrink=0.7, label="dh = prediction - reference (m)")
    fig.suptitle("Residual maps, median seed per model, one colour scale (black: test area edge)")
    save(fig, out, pdf)
    return fig


def all_seed_pages(pages: Sequence[tuple[str, Callable[..., Figure]]], pdf: Path) -> None:
    """One multi-page PDF (atomic): a page per (title, figure maker), for a paper's appendix."""
    from matplotlib.backends.backend_pdf import PdfPages

    with atomic_path(pdf) as tmp, PdfPages(tmp, metadata={"CreationDate": None}) as book:
        for _, make in pages:
            fig = make()
            book.savefig(fig)
            plt.close(fig)


def pred_vs_ref_panels(
    samples: dict[str, tuple[int, pd.DataFrame]],
    metrics: pd.DataFrame,
    out: Path,
    pdf: Path | None = None,
    split: str = "test",
) -> Figure:
    """Predicted vs reference height in ``split`` for every model (the seed given), 1:1 line."""
    n = len(samples)
    ncols = min(4, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(3.9 * ncols, 3.9 * nrows),
        squeeze=False,
        sharex=True,
        sharey=True,
        layout="constrained",
    )
    vals = np.concatenate(
        [s[["reference", "prediction"]].to_numpy().ravel() for _, s in samples.values()]
    )
    lo, hi = (float(np.nanpercentile(vals, q)) for q in (0.5, 99.5)) if vals.size else (0.0, 1.0)
    for ax, (m, (seed, s)) in zip(axes.flat, samples.items(), strict=False):
        _hexbin(ax, s[s["split"] == split], lo, hi, 45)
        row = metrics[
            (metrics["model"] == m) & (metrics["seed"] == seed) & (metrics["split"] == split)
        ]
        if len(row):
            r = row.iloc[0]
            ax.text(
                0.03,
                0.97,
                f"R² {r['r2']:.3f}\nRMSE {r['rmse_m']:.1f} m\nmedian dh {r['median_diff_m']:.1f} m",
                transform=ax.transAxes,
                va="top",
                fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"},
            )
        ax.set_title(f"{model_label(m)} (seed {seed})", fontsize=9, color=model_color(m))
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    fig.supxlabel("reference height (m)")
    fig.supylabel("predicted height (m)")
    fig.suptitle(f"Predicted vs reference height, {split} area, median seed per model")
    save(fig, out, pdf)
    return fig


def dh_distributions(
    samples: dict[str, tuple[int, pd.DataFrame]], out: Path, pdf: Path | None = None
) -> Figure:
    """The error (dh) per model in the train and test areas (the seed given), as violins."""
    import seaborn as sns

    rows = []
    for m, (_, s) in samples.items():
        sub = s[s["split"].isin(["train", "test"])]
        rows.append(
            pd.DataFrame(
                {
                    "model": model_label(m),
                    "split": sub["split"],
                    "dh": sub["prediction"] - sub["reference"],
                }
            )
        )
    df = pd.concat(rows, ignore_index=True)
    lim = float(np.nanpercentile(np.abs(df["dh"]), 99)) if len(df) else 1.0
    fig, ax = plt.subplots(figsize=(max(7, 1.3 * len(samples)), 4.5), layout="constrained")
    sns.violinplot(
        data=df,
        x="model",
        y="dh",
        hue="split",
        split=True,
        inner="quart",
        cut=0,
        palette={k: SPLIT_COLORS[k] for k in ("train", "test")},
        ax=ax,
        density_norm="width",
    )
    ax.axhline(0, color="k", linewidth=0.8)
    ax.set_ylim(-lim, lim)
    ax.set_xlabel("")
    ax.set_ylabel("dh = prediction - reference (m)")
    ax.tick_params(axis="x", rotation=30)
    ax.set_title("Error distributions, median seed per model (lines: quartiles)")
    save(fig, out, pdf)
    return fig


def write_sample_figures(
    samples: list[Path],
    metrics_csv: Path,
    png: Path,
    pdf: Path,
    all_seeds: Path,
    dh_png: Path,
    dh_pdf: Path,
) -> None:
    """The ``plot_pred_vs_ref`` rule: predicted vs reference and dh, median seed per model.

    Each as PNG and PDF; every model and seed, a page each, in the multi-page ``all_seeds``.
    """
    metrics = pd.read_csv(metrics_csv)
    tables = {
        (str(d["model"].iloc[0]), int(d["seed"].iloc[0])): d for d in map(pd.read_csv, samples)
    }
    median = median_seeds(metrics)
    chosen = {m: (s, tables[(m, s)]) for m, s in median.items() if (m, s) in tables}
    pred_vs_ref_panels(chosen, metrics, png, pdf)
    dh_distributions(chosen, dh_png, dh_pdf)
    pages = [
        (
            f"{m} seed {s}",
            lambda m=m, s=s, d=d: pred_vs_ref(
                d, metrics[(metrics["model"] == m) & (metrics["seed"] == s)], m, None
            ),
        )
        for (m, s), d in tables.items()
    ]
    all_seed_pages(pages, all_seeds)


def write_residual_maps(
    predictions: list[Path],
    metrics_csv: Path,
    dsm: Path,
    split_tif: Path,
    png: Path,
    pdf: Path,
    all_seeds: Path,
) -> None:
    """The ``plot_residual_maps`` rule: every model's dh map at its median seed, one scale.

    As PNG and PDF; every model and seed, a page each, in the multi-page ``all_seeds``.
    """
    metrics = pd.read_csv(metrics_csv)
    paths = {}
    for p in predictions:
        with open_raster(p, bands=1) as ds:
            tags = ds.tags()
        if not {"model", "seed"} <= set(tags):
            raise RasterError(f"{p} has no model and seed tags: not a prediction of this workflow")
        paths[(tags["model"], int(tags["seed"]))] = p
    chosen = {m: (s, paths[(m, s)]) for m, s in median_seeds(metrics).items() if (m, s) in paths}
    residual_panels(chosen, dsm, split_tif, png, pdf)
    pages = [
        (f"{m} seed {s}", lambda m=m, s=s, p=p: residual_panels({m: (s, p)}, dsm, split_tif, None))
        for (m, s), p in paths.items()
    ]
    all_seed_pages(pages, all_seeds)
