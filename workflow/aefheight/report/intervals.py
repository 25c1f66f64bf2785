"""The prediction intervals in the report: a coverage table, its finding, and two figures.

Reads the coverage tables of :mod:`aefheight.evaluate.coverage` (one per model, seed and
method). Coverage is reported whatever it is; the two methods are compared paired by seed
(the by-height interval's test coverage minus the single-width one's).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # headless: figures are files, never windows

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from aefheight.core.files import write_csv
from aefheight.core.names import CODES, model_label
from aefheight.core.raster import open_raster, read_dsm_block
from aefheight.core.steps import step
from aefheight.report.figures import model_color, save
from aefheight.report.findings import rst_table
from aefheight.report.maps import overview
from aefheight.report.tables import cell, diff_stat, paired_difference, to_markdown, write_text

METHOD_LABELS = {"conformal": "one width", "by_height": "width by predicted height"}


def totals(cov: pd.DataFrame) -> pd.DataFrame:
    """The rows over every height: one per model, seed, method, split and area."""
    return cov[cov["height_lo_m"].isna()].drop(columns=["height_lo_m", "height_hi_m"])


def summary(cov: pd.DataFrame) -> pd.DataFrame:
    """One row per model and method: coverage (mean ± SD over seeds) and width.

    Coverage on the validation band and the test area, the test area's mean width, outside the
    AOA when mapped, and the per-seed test values.
    """
    t = totals(cov).sort_values("seed", kind="stable")
    rows = []
    for (model, method), g in t.groupby(["model", "method"], sort=False):
        every = g[g["area"] == "all"].set_index(["split", "seed"])
        row = {"model": model_label(model), "method": METHOD_LABELS.get(method, method)}
        row["nominal (%)"] = f"{100 * g['level'].iloc[0]:.0f}"
        px = every.loc["val", "calibration_px"]  # one per seed: the same band, all sampled
        row["calibration px (val band)"] = str(px.iloc[0]) if px.nunique() == 1 else cell(px, 0)
        for split in ("val", "test"):
            row[f"{split} coverage (%)"] = cell(every.loc[split, "covered_pct"], 1)
        row["test mean width (m)"] = cell(every.loc["test", "mean_width_m"], 1)
        out = g[(g["area"] == "outside") & (g["split"] == "test")]
        if len(out):
            row["test coverage outside AOA (%)"] = cell(out["covered_pct"], 1)
        row["per-seed test coverage (%)"] = ", ".join(
            f"{v:.1f}" for v in every.loc["test", "covered_pct"]
        )
        rows.append(row)
    return pd.DataFrame(rows)


def method_verdicts(cov: pd.DataFrame) -> list[str]:
    """Per model: does the by-height interval cover more of the test area, paired by seed?"""
    t = totals(cov)
    t = t[(t["split"] == "test") & (t["area"] == "all")]
    out = []
    for model, g in t.groupby("model", sort=False):
        by = g.pivot_table(index="seed", columns="method", values="covered_pct")
        if not {"conformal", "by_height"} <= set(by.columns):
            continue
        d = paired_difference(by["by_height"], by["conformal"])
        stat = diff_stat(d, 1)
        if d["n_seeds"] >= 2 and (d["ci_low"] > 0 or d["ci_high"] < 0):
            word = "more" if d["mean_diff"] > 0 else "less"
            text = f"the width by predicted height covers {word} of the test area than one width"
        else:
            text = "width by predicted height vs one width on test coverage: not resolved"
        out.append(f"{model_label(model)}: {text} ({stat}, percentage points).")
    return out


def _fixed_sentence(t: pd.DataFrame, level: float) -> str:
    """Whether the by-height interval fixes the models whose one-width interval falls short."""
    mean = t.groupby(["model", "method"])["covered_pct"].mean().unstack()
    if not {"conformal", "by_height"} <= set(mean.columns):
        return ""
    short = mean[mean["conformal"] < level - 1]
    if short.empty:
        return " Every one-width interval holds, so there is nothing for widths by height to fix."
    fixed = [model_label(m) for m in short.index if short.loc[m, "by_height"] >= level - 1]
    names = ", ".join(model_label(m) for m in short.index)
    if not fixed:
        return f" Widths by predicted height do not fix it for any of {names}."
    return f" Widths by predicted height fix it for {', '.join(fixed)} (of {names})."


def finding(cov: pd.DataFrame) -> str:
    """Two sentences: do the intervals hold on the test area, and does adapting fix them?"""
    t = totals(cov)
    t = t[(t["split"] == "test") & (t["area"] == "all")]
    level = 100 * float(t["level"].iloc[0])
    mean = t.groupby(["model", "method"])["covered_pct"].mean()
    lo, hi = mean.min(), mean.max()
    if lo >= level - 1:
        held = "hold"
    else:
        held = "hold for some models only" if hi >= level - 1 else "do not hold"
    return (
        f"At a nominal {level:.0f} %, the intervals (calibrated on the validation band) cover "
        f"{lo:.1f} to {hi:.1f} % of the test area's pixels (mean over seeds per model and "
        f"method): they {held} under the height shift." + _fixed_sentence(t, level)
    )


def findings_rst(aoi: str, cov: pd.DataFrame, table: pd.DataFrame) -> str:
    """The intervals' section of the report's front page."""
    title = f"Prediction intervals: AOI {aoi}"
    out = [title, "-" * len(title), "", finding(cov), ""]
    out += [f"* {v}" for v in method_verdicts(cov)] + [""]
    out.append(rst_table(table, "Interval coverage (mean ± SD over seeds)"))
    return "\n".join(out)


def coverage_by_height(
    cov: pd.DataFrame, out: Path, pdf: Path | None = None, min_n: int = 100
) -> Figure:
    """Coverage per reference-height bin against the nominal level.

    A panel per method and split (validation band, test area), a line per model, the seeds'
    range as its band.
    """
    import seaborn as sns

    df = cov[(cov["area"] == "all") & cov["height_lo_m"].notna() & (cov["n"] >= min_n)]
    df = df[df["split"].isin(["val", "test"])].assign(
        height_m=lambda d: (d["height_lo_m"] + d["height_hi_m"]) / 2,
        prediction=lambda d: d["model"].map(model_label),
        interval=lambda d: d["method"].map(lambda m: METHOD_LABELS.get(m, m)),
    )
    palette = {model_label(m): model_color(m) for m in df["model"].unique()}
    grid = sns.relplot(
        data=df, x="height_m", y="covered_pct", hue="prediction", row="interval", col="split",
        kind="line", errorbar=("pi", 100), estimator="mean", palette=palette,
        height=3.0, aspect=1.4,
    )  # fmt: skip
    nominal = 100 * float(cov["level"].iloc[0])
    for ax in grid.axes.flat:
        ax.axhline(nominal, color="k", linestyle="--", linewidth=0.8)
        ax.set_ylim(0, 101)
    grid.set_axis_labels("reference height (m)", "coverage (%)")
    grid.figure.suptitle(f"Interval coverage by height (dashed: nominal {nominal:.0f} %)", y=1.02)
    save(grid.figure, out, pdf)
    return grid.figure


def width_maps(
    intervals: list[Path], split: Path, out: Path, pdf: Path | None = None, aoa: Path | None = None
) -> Figure:
    """The width (upper - lower) of each interval, the test area outlined, and the AOA map.

    The AOA panel is drawn only when there is a map (``split.folds >= 2``).
    """
    panels = len(intervals) + (1 if aoa else 0)
    cols = min(3, panels)
    rows = int(np.ceil(panels / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.8 * rows), squeeze=False)
    lab, extent = overview(split)
    test = np.nan_to_num(lab) == CODES["test"]
    flip = (extent[0], extent[1], extent[3], extent[2])
    widths, titles = [], []
    for path in intervals:
        with open_raster(path, bands=2) as ds:
            tags = ds.tags()
            f = max(1, int(np.ceil(max(ds.width, ds.height) / lab.shape[1])))
            lo, hi = (read_dsm_block(ds, None, b)[::f, ::f] for b in (1, 2))
        widths.append((hi - lo)[: lab.shape[0], : lab.shape[1]])
        titles.append(f"{model_label(tags['model'])} (seed {tags['seed']}, {tags['method']})")
    vmin, vmax = np.nanpercentile(np.concatenate([w.ravel() for w in widths]), [1, 99])
    for ax, width, title in zip(axes.flat, widths, titles, strict=False):
        im = ax.imshow(width, extent=extent, cmap="magma", vmin=vmin, vmax=vmax)
        ax.contour(test, levels=[0.5], colors="cyan", linewidths=1.0, extent=flip)
        ax.set_title(title, fontsize=9)
        fig.colorbar(im, ax=ax, shrink=0.8, label="interval width (m)")
    if aoa:
        ax = axes.flat[len(intervals)]
        di, _ = overview(aoa)
        with open_raster(aoa, bands=1) as ds:
            thr = float(ds.tags()["threshold"])
        ax.imshow(
            np.where(di > thr, 1.0, np.nan), extent=extent, cmap="autumn", interpolation="nearest"
        )
        ax.contour(test, levels=[0.5], colors="cyan", linewidths=1.0, extent=flip)
        ax.set_title("outside the area of applicability (red)", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    for ax in list(axes.flat)[panels:]:
        ax.axis("off")
    fig.suptitle("Interval width, one colour scale (cyan line: test area)")
    save(fig, out, pdf)
    return fig


@step
def interval_tables(
    *, aoi: str, coverages: list[Path], table: Path, summary_md: Path, findings: Path
) -> None:
    """Write the intervals' tidy table, their summary (Markdown) and their findings.

    Args:
        aoi: The AOI's name (in the findings' title).
        coverages: The coverage tables of every model, seed and method.
        table: Written: every coverage row, one file.
        summary_md: Written: one row per model and method (mean ± SD, per-seed values).
        findings: Written: the intervals' section of the front page (reStructuredText).
    """
    cov = pd.concat([pd.read_csv(p) for p in coverages], ignore_index=True)
    write_csv(cov, table)
    summ = summary(cov)
    write_text(to_markdown(summ, finding(cov)), summary_md)
    write_text(findings_rst(aoi, cov, summ), findings)


@step
def plot_intervals(
    *,
    coverages: list[Path],
    intervals: list[Path],
    split: Path,
    png: Path,
    pdf: Path,
    width_png: Path,
    width_pdf: Path,
    aoa: Path | None = None,
) -> None:
    """Figures: coverage by reference height, and the width maps (beside the AOA map).

    Args:
        coverages: The coverage tables of every model, seed and method.
        intervals: The interval COGs to map (one per model: its first seed, by height).
        split: The split raster (the test area's outline).
        png: Written: coverage by height.
        pdf: Written: the same, for a paper.
        width_png: Written: the width maps.
        width_pdf: Written: the same, for a paper.
        aoa: The area-of-applicability map, when mapped.
    """
    coverage_by_height(pd.concat([pd.read_csv(p) for p in coverages]), png, pdf)
    width_maps(intervals, split, width_png, width_pdf, aoa)
