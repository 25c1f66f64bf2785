"""The figures' style (matplotlib, colours fixed per split and per model) and the charts.

PNG for the report, PDF for a paper. Every figure module draws with :func:`save` and these
colours, so every figure reads the same way; maps are in :mod:`.maps`, the sample figures
(predicted vs reference, dh) in :mod:`.samples`.
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

from aefheight.core.files import atomic_path
from aefheight.core.names import SPLITS, model_label

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
METHOD_SHADES = {"linear": 0.5, "quantile_map": -0.45, "ensemble": -0.25}


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


def all_seed_pages(pages: Sequence[tuple[str, Callable[..., Figure]]], pdf: Path) -> None:
    """One multi-page PDF (atomic): a page per (title, figure maker), for a paper's appendix."""
    from matplotlib.backends.backend_pdf import PdfPages

    with atomic_path(pdf) as tmp, PdfPages(tmp, metadata={"CreationDate": None}) as book:
        for _, make in pages:
            fig = make()
            book.savefig(fig)
            plt.close(fig)
