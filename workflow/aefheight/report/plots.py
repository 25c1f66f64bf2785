"""The report's figure steps: each reads its rule's files and draws with :mod:`.figures`.

One pattern for every ``plot_*`` rule: the CSVs and rasters in, a PNG for the report and a PDF
for a paper out.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from aefheight.core.names import split_names
from aefheight.core.steps import step
from aefheight.report import figures, maps
from aefheight.report.samples import write_sample_figures


@step
def split_map(*, gpkg: Path, raster: Path, dsm: Path, png: Path, pdf: Path) -> None:
    """Figure: the split map over the reference DSM."""
    maps.split_map(gpkg, raster, dsm, png, pdf)


@step
def plot_seeds(*, pairs: list[str], metrics: Path, png: Path, pdf: Path) -> None:
    """Figure: every seed's test R² and RMSE per model, paired intervals (``<a>=<b>`` pairs)."""
    versus = [(p.split("=", 1)[0], p.split("=", 1)[1]) for p in pairs]
    figures.seed_figure(pd.read_csv(metrics), versus, png, pdf)


@step
def plot_pred_vs_ref(
    *,
    metrics: Path,
    samples: list[Path],
    png: Path,
    pdf: Path,
    all_seeds: Path,
    dh_png: Path,
    dh_pdf: Path,
) -> None:
    """Figures: predicted vs reference heights and dh, median seed per model."""
    write_sample_figures(samples, metrics, png, pdf, all_seeds, dh_png, dh_pdf)


@step
def plot_residual_maps(
    *,
    metrics: Path,
    dsm: Path,
    split: Path,
    predictions: list[Path],
    png: Path,
    pdf: Path,
    all_seeds: Path,
) -> None:
    """Figure: every model's dh map (median seed); all seeds in a PDF."""
    maps.write_residual_maps(predictions, metrics, dsm, split, png, pdf, all_seeds)


@step
def plot_error_by_height(*, by_height: list[Path], png: Path, pdf: Path) -> None:
    """Figure: bias per reference-height bin, a panel per model family."""
    figures.error_by_height_panels([pd.read_csv(p) for p in by_height], png, pdf)


@step
def plot_height_shift(*, hist: Path, stats: Path, png: Path, pdf: Path) -> None:
    """Figure: the reference-height distribution per split."""
    figures.height_distributions(pd.read_csv(hist), pd.read_csv(stats), png, pdf)


@step
def plot_loss_curves(*, histories: list[Path], png: Path, pdf: Path) -> None:
    """Figure: every net's validation error over steps, a line per seed."""
    figures.loss_curve_panels([pd.read_csv(p) for p in histories], png, pdf)


@step
def plot_kfold(*, table: Path, quantiles: list[Path], png: Path, pdf: Path) -> None:
    """Figure: held-out heights and test errors per k-fold strip."""
    figures.kfold_errors(pd.read_csv(table), [pd.read_csv(p) for p in quantiles], png, pdf)


@step
def plot_aoa(*, aoa_tifs: list[Path], splits: list[Path], png: Path, pdf: Path) -> None:
    """Figure: the area of applicability of every split."""
    maps.aoa_maps(aoa_tifs, splits, split_names(len(aoa_tifs) - 1), png, pdf)
