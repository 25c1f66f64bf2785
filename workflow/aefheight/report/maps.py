"""The map figures: the split over the DSM, residual maps per model, the AOA per split.

Rasters are read decimated to the figure's resolution (``max_side`` px), in the style of
:mod:`.figures`.
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
from matplotlib.patches import Patch

from aefheight.core.errors import RasterError
from aefheight.core.names import CODES, model_label
from aefheight.core.raster import open_raster, read_dsm_block


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
