"""Area of applicability (AOA, Meyer & Pebesma 2021) of a spatial split, in embedding space.

* The reference set: up to ``sample_px`` training pixels (a bottom-k sample of random keys, as
  :func:`aefheight.predict.correction.sample_pairs`), each with its k-fold strip (:mod:`.split`).
* The dissimilarity index (DI) of a pixel: the Euclidean distance of its de-quantized
  embedding to the nearest reference embedding, over ``scale``, the mean distance of a
  reference point to its nearest other one. (CAST divides by the mean of *all* pairwise
  distances and standardizes the predictors; AEF bands share one scale. The inside/outside
  mask does not depend on ``scale``: it divides both the DI and the threshold.)
* The threshold: the training points' cross-validated DI (distance to the nearest reference
  point of another fold) -> the upper whisker of its boxplot, as CAST's ``trainDI``.

Rasters are streamed window by window; memory is the reference set plus one window.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import rasterio
from rasterio.io import DatasetReader as Reader

from aefheight.core.embeddings import dequantize, open_embeddings, valid_mask
from aefheight.core.errors import ConfigError, NoValidData, RasterError
from aefheight.core.files import scratch_path, write_csv
from aefheight.core.names import CODES, SPLITS
from aefheight.core.raster import (
    Grid,
    check_same_grid,
    open_raster,
    read_checked,
    read_dsm_block,
    to_cog,
)
from aefheight.core.steps import step
from aefheight.evaluate.stats import DiffStats, hist_quantile
from aefheight.split.spatial import SplitSettings, line_folds

log = logging.getLogger(__name__)

DI_NODATA = -9999.0
DI_BIN, DI_MAX = 0.01, 50.0  # histogram of the DI per split (its quantiles, exact to 0.01)
AREAS = ("inside", "outside")
METRICS = ("n", "r2", "rmse_m", "bias_m", "mae_m", "nmad_m")


@dataclass(frozen=True)
class AOASettings:
    """Settings of the area of applicability (config ``aoa``)."""

    SECTION: ClassVar[str] = "aoa"
    sample_px: int  # training pixels sampled as the reference set
    seed: int  # draws that sample


def _fold_of_lines(sp: Reader, axis: str, folds: int) -> np.ndarray:
    """The k-fold strip of every line of ``split.tif`` (non-zero = covered), streamed."""
    per_line = np.zeros(sp.width if axis == "x" else sp.height, np.int64)
    for _, win in sp.block_windows(1):
        cov = read_checked(sp, win, indexes=1) != 0
        rows, cols = win.toslices()
        if axis == "x":
            per_line[cols] += cov.sum(axis=0)
        else:
            per_line[rows] += cov.sum(axis=1)
    return line_folds(per_line, folds)


def sample_training(
    embeddings: Path, split_tif: Path, axis: str, folds: int, n: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``n`` valid training pixels: de-quantized embeddings and their k-fold strip.

    A bottom-k sample of random keys drawn from ``seed`` (uniform, memory ``n`` + one block),
    returned in key order. The strips are :func:`aefheight.split.spatial.fold_strips` of the covered
    AOI (non-zero pixels of ``split_tif``) along ``axis``.

    Returns:
        ``(X, groups)``: float32 (m, bands) embeddings and int64 (m,) folds, m <= ``n``.
    """
    if axis not in ("x", "y") or folds < 2:
        raise ConfigError(
            f"the AOA needs split.axis x or y and split.folds >= 2, got {axis}, {folds}"
        )
    rng = np.random.default_rng(seed)
    keys, groups = np.empty(0), np.empty(0, np.int64)
    with open_embeddings(embeddings) as em, open_raster(split_tif, bands=1) as sp:
        codes = np.empty((0, em.count), em.dtypes[0])
        check_same_grid(Grid.of(sp), Grid.of(em), sp.name, em.name)
        fold = _fold_of_lines(sp, axis, folds)
        for _, win in sp.block_windows(1):
            e = read_checked(em, win)
            ok = (read_checked(sp, win, indexes=1) == CODES["train"]) & valid_mask(e)
            rows, cols = win.toslices()
            g = fold[None, cols] if axis == "x" else fold[rows, None]
            keys = np.concatenate([keys, rng.random(ok.shape)[ok]])
            codes = np.concatenate([codes, e[:, ok].T])
            groups = np.concatenate([groups, np.broadcast_to(g, ok.shape)[ok]])
            if keys.size > n:
                keep = np.argpartition(keys, n)[:n]
                keys, codes, groups = keys[keep], codes[keep], groups[keep]
    if keys.size == 0:
        raise NoValidData(
            f"no train pixel of {split_tif} has valid embeddings in {embeddings}: "
            "the area of applicability needs training pixels"
        )
    order = np.argsort(keys, kind="stable")  # independent of the block order's last trim
    return dequantize(codes[order]), groups[order]


def _nearest_sq(
    x: np.ndarray, ref: np.ndarray, chunk: int, xg: np.ndarray | None, rg: np.ndarray | None
) -> np.ndarray:
    """Squared distance (float64) of each row of ``x`` to its nearest row of ``ref``.

    With groups ``xg``/``rg``, only rows of ``ref`` of another group count (inf if none).
    """
    x, r = np.asarray(x, np.float64), np.asarray(ref, np.float64)
    r2 = np.einsum("ij,ij->i", r, r)
    out = np.empty(len(x))
    for i in range(0, len(x), chunk):
        xc = x[i : i + chunk]
        d = xc @ r.T  # ||a||² + ||b||² - 2ab, one (chunk, m) array at a time
        d *= -2.0
        d += r2
        if xg is not None and rg is not None:
            d[xg[i : i + chunk, None] == rg[None, :]] = np.inf
        out[i : i + chunk] = d.min(axis=1, initial=np.inf) + np.einsum("ij,ij->i", xc, xc)
    return np.maximum(out, 0.0)  # rounding can make an identical pair's slightly negative


def nearest_distance(x: np.ndarray, reference: np.ndarray, chunk: int = 4096) -> np.ndarray:
    """Euclidean distance (float64) of each row of ``x`` to its nearest ``reference`` row.

    ``x`` is (n, d), ``reference`` (m, d); memory ``chunk`` x m.
    """
    return np.sqrt(_nearest_sq(x, reference, chunk, None, None))


def training_scale(reference: np.ndarray) -> float:
    """Mean distance of a reference point to its nearest other reference point."""
    idx = np.arange(len(reference))
    scale = float(np.sqrt(_nearest_sq(reference, reference, 4096, idx, idx)).mean())
    if not np.isfinite(scale) or scale <= 0:
        raise NoValidData(
            f"the {len(reference)} training pixels sampled for the AOA have identical "
            "embeddings (or are one): no distance scale; use a larger AOI or aoa.sample_px"
        )
    return scale


def _upper_whisker(v: np.ndarray) -> float:
    """R's ``boxplot.stats(v)$stats[5]``: the largest value <= upper hinge + 1.5 IQR."""
    # Tukey's hinges as R's fivenum, not type-7 quartiles: CAST's threshold exactly
    s = np.sort(v)
    n4 = np.floor((s.size + 3) / 2) / 2
    lo, hi = (
        0.5 * (s[int(np.floor(d)) - 1] + s[int(np.ceil(d)) - 1]) for d in (n4, s.size + 1 - n4)
    )
    return float(s[s <= hi + 1.5 * (hi - lo)].max())


def cv_threshold(
    reference: np.ndarray, groups: np.ndarray, scale: float
) -> tuple[float, np.ndarray]:
    """The AOA threshold from the cross-validated DI of the training points.

    Each point's DI is its distance to the nearest reference point of another fold, over
    ``scale``; the threshold is the upper whisker of their boxplot (CAST's ``trainDI``).

    Returns:
        ``(threshold, di_cv)``.
    """
    if np.unique(groups).size < 2:
        raise ConfigError(
            "the sampled training pixels all lie in one k-fold strip: the AOA threshold needs "
            "training pixels in at least 2 folds; raise split.folds"
        )
    di = np.sqrt(_nearest_sq(reference, reference, 4096, groups, groups)) / scale
    return _upper_whisker(di), di


def _di_blocks(
    em: Reader,
    sp: Reader,
    ref: np.ndarray,
    scale: float,
    thr: float,
    counts: dict[str, list[int]],
    hists: dict[str, np.ndarray],
) -> Iterator[tuple[Any, np.ndarray]]:
    """DI of every window (nodata where embeddings are); per split: valid, outside, histogram."""
    for _, win in em.block_windows(1):
        e = read_checked(em, win)
        ok = valid_mask(e)
        di = np.full(ok.shape, DI_NODATA, np.float32)
        di[ok] = nearest_distance(dequantize(e[:, ok].T), ref) / scale
        lab = read_checked(sp, win, indexes=1)
        for k in SPLITS:
            v = di[ok & (lab == CODES[k])].astype(np.float64)
            counts[k][0] += v.size
            counts[k][1] += int((v > thr).sum())
            idx = np.minimum((v / DI_BIN).astype(np.int64), hists[k].size - 1)
            hists[k] += np.bincount(idx, minlength=hists[k].size)
        yield win, di


def _di_quantiles(hist: np.ndarray) -> dict[str, float]:
    """Median and 95th percentile of the DI from its histogram (bin centres; NaN if empty)."""
    if hist.sum() == 0:
        return {"median_di": float("nan"), "p95_di": float("nan")}
    centres = (np.arange(hist.size) + 0.5) * DI_BIN
    return {
        "median_di": hist_quantile(hist, centres, 0.5),
        "p95_di": hist_quantile(hist, centres, 0.95),
    }


def write_aoa(
    embeddings: Path,
    split_tif: Path,
    aoa_tif: Path,
    aoa_csv: Path,
    s: AOASettings,
    axis: str,
    folds: int,
) -> pd.DataFrame:
    """The ``aoa`` rule: the DI map (COG) and the share of each split outside the AOA (CSV)."""
    ref, groups = sample_training(embeddings, split_tif, axis, folds, s.sample_px, s.seed)
    scale = training_scale(ref)
    threshold, _ = cv_threshold(ref, groups, scale)
    counts = {k: [0, 0] for k in SPLITS}
    hists = {k: np.zeros(int(DI_MAX / DI_BIN) + 1, np.int64) for k in SPLITS}
    tags = {
        "quantity": "dissimilarity index (area of applicability, Meyer & Pebesma 2021)",
        "threshold": repr(threshold),
        "scale": repr(scale),
        "scale_is": "mean nearest-neighbour distance within the training sample",
        "sample_px": str(len(ref)),
        "folds": str(folds),
        "axis": axis,
        "distance": "euclidean on de-quantized embeddings",
        "aoa": "inside where DI <= threshold",
    }
    with open_embeddings(embeddings) as em, open_raster(split_tif, bands=1) as sp:
        grid = Grid.of(em)
        check_same_grid(grid, Grid.of(sp), em.name, sp.name)
        with scratch_path(aoa_tif, ".tif") as tmp:
            with rasterio.open(tmp, "w", **grid.profile(1, "float32", DI_NODATA)) as dst:
                for win, di in _di_blocks(em, sp, ref, scale, threshold, counts, hists):
                    dst.write(di, 1, window=win)
                dst.update_tags(**tags)
                dst.set_band_description(1, "dissimilarity_index")
            to_cog(tmp, aoa_tif)
    df = pd.DataFrame(
        [
            {"split": k, "pixels": n, "outside_pixels": o} | _di_quantiles(hists[k])
            for k, (n, o) in counts.items()
        ]
    )
    df["outside_pct"] = 100 * df["outside_pixels"] / df["pixels"].where(df["pixels"] > 0)
    df = df.assign(threshold=threshold, scale=scale, sample_px=len(ref), folds=folds)
    write_csv(df, aoa_csv)
    pct = ", ".join(f"{k} {v:.1f} %" for k, v in zip(SPLITS, df["outside_pct"], strict=True))
    log.info("AOA: threshold %.3g, scale %.3g, %d px; outside %s", threshold, scale, len(ref), pct)
    return df


def _tag(ds: Reader, key: str) -> str:
    tags = ds.tags()
    if key not in tags:
        raise RasterError(f"{ds.name} has no {key!r} tag; write it with the step that makes it")
    return str(tags[key])


def _prediction_rows(path: Path, dm: Reader, sp: Reader, ao: Reader, thr: float) -> list[dict]:
    """Metrics of one prediction per (split, inside/outside the AOA), streamed."""
    stats = {(k, a): DiffStats() for k in SPLITS for a in AREAS}
    with open_raster(path, bands=1) as pr:
        check_same_grid(Grid.of(dm), Grid.of(pr), dm.name, pr.name)
        model, seed = _tag(pr, "model"), int(_tag(pr, "seed"))
        for _, win in pr.block_windows(1):
            pred, ref, di = (read_dsm_block(ds, win) for ds in (pr, dm, ao))  # NaN = nodata
            lab = read_checked(sp, win, indexes=1)
            ok = np.isfinite(pred) & np.isfinite(ref) & np.isfinite(di)
            out = di.astype(np.float64) > thr
            for k in SPLITS:
                m = ok & (lab == CODES[k])
                for a, sel in zip(AREAS, (m & ~out, m & out), strict=True):
                    stats[k, a].update(ref[sel], pred[sel])
    head = {"model": model, "seed": seed}
    res = {key: st.result() for key, st in stats.items()}
    return [
        head | {"split": k, "area": a} | {c: r[c] for c in METRICS} for (k, a), r in res.items()
    ]


def metrics_by_area(
    predictions: list[Path],
    dsm: Path,
    split_tif: Path,
    aoa_tif: Path,
    threshold: float | None = None,
) -> pd.DataFrame:
    """Accuracy of each prediction (tagged ``model``, ``seed``) inside/outside the AOA, per split.

    A pixel is outside where its DI in ``aoa_tif`` exceeds ``threshold`` (None: the map's
    ``threshold`` tag). One row per (model, seed, split, area): n, r2, rmse_m, bias_m, mae_m,
    nmad_m; only pixels valid in the prediction, the DSM and the DI map count.
    """
    rows: list[dict[str, Any]] = []
    with open_raster(dsm, 1) as dm, open_raster(split_tif, 1) as sp, open_raster(aoa_tif, 1) as ao:
        for ds in (sp, ao):
            check_same_grid(Grid.of(dm), Grid.of(ds), dm.name, ds.name)
        thr = float(_tag(ao, "threshold")) if threshold is None else threshold
        for path in predictions:
            rows += _prediction_rows(path, dm, sp, ao, thr)
    return pd.DataFrame(rows, columns=["model", "seed", "split", "area", *METRICS])


def write_aoa_metrics(
    predictions: list[Path], dsm: Path, split_tif: Path, aoa_tif: Path, out_csv: Path
) -> pd.DataFrame:
    """The ``aoa_metrics`` rule: :func:`metrics_by_area` written as a CSV."""
    df = metrics_by_area(predictions, dsm, split_tif, aoa_tif)
    write_csv(df, out_csv)
    return df


@step
def aoa(
    *,
    settings: AOASettings,
    split_settings: SplitSettings,
    embeddings: Path,
    split: Path,
    aoa_tif: Path,
    aoa_csv: Path,
    threads: int = 1,
) -> None:
    """Write one split's area of applicability: its dissimilarity index COG and AOA table.

    ``threads`` is GDAL's (the command line sets ``GDAL_NUM_THREADS`` from it).
    """
    write_aoa(
        embeddings, split, aoa_tif, aoa_csv, settings, split_settings.axis, split_settings.folds
    )


@step
def aoa_metrics(
    *, predictions: list[Path], dsm: Path, split: Path, aoa_tif: Path, metrics: Path
) -> None:
    """Score every prediction inside vs outside the area of applicability."""
    write_aoa_metrics(predictions, dsm, split, aoa_tif, metrics)
