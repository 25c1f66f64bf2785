"""The sample figures: predicted vs reference heights and dh distributions per model.

Drawn from each prediction's uniform random pixel sample (``evaluate``'s samples), median seed
per model, every seed in a PDF; in the style of :mod:`.figures`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

from aefheight.report.figures import (
    SPLIT_COLORS,
    all_seed_pages,
    median_seeds,
    model_color,
    save,
)

matplotlib.use("Agg")  # headless: figures are files, never windows

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from aefheight.core.names import SPLITS, model_label


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
