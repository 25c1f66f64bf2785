"""The coarse-DEM baseline and the bias corrections applied after prediction.

* :func:`write_coarse_dem_prediction` (rule ``predict_coarse_dem``): the "no learning"
  baseline, the AOI's coarse DEM (GLO-30 on real AOIs) written as a prediction.
* :func:`correct` (rule ``correct``): a corrected copy of one prediction, by one method:

  - ``linear``: reference = a x prediction + b, least squares on pixels of the **validation
    area**, the part of the training region held out of the weights' fit (early stopping
    read its loss: one number chosen there). Only train-region labels enter.
  - ``quantile_map``: label-free; the prediction's quantiles in the **test area** are mapped
    onto the coarse DEM's quantiles there (piecewise linear between quantile levels, clamped
    at the ends). The reference DSM is not even opened.

Test pixels' reference heights never enter a fit (tests/test_correction.py proves it by
changing them). Each fit samples at most ``max_pixels`` pixels (a bottom-k sample of random
keys drawn from the seed, block by block), so memory stays flat in the AOI size; the
correction is then applied block by block into a COG.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import rasterio

from aefheight.core.embeddings import open_embeddings, valid_mask
from aefheight.core.errors import ConfigError, NoValidData
from aefheight.core.files import scratch_path, write_csv
from aefheight.core.names import CODES
from aefheight.core.raster import (
    Grid,
    check_same_grid,
    open_raster,
    read_checked,
    read_dsm_block,
    to_cog,
)
from aefheight.core.steps import step
from aefheight.predict import PRED_NODATA

log = logging.getLogger(__name__)

METHODS = {"linear": "val", "quantile_map": "test"}  # method -> the split its fit reads


@dataclass(frozen=True)
class CorrectionSettings:
    """Settings of the bias correction (config ``correction``)."""

    SECTION: ClassVar[str] = "correction"
    methods: tuple[str, ...]
    models: tuple[str, ...] | None  # None: every net
    max_pixels: int
    quantiles: int


def _write_like(grid: Grid, out: Path, blocks: Any, tags: dict[str, str]) -> None:
    """Write float32 blocks ``(window, array)`` onto ``grid`` into a COG at ``out``."""
    with scratch_path(out, ".tif") as tmp:
        with rasterio.open(tmp, "w", **grid.profile(1, "float32", PRED_NODATA)) as dst:
            for win, arr in blocks:
                dst.write(arr.astype(np.float32), 1, window=win)
            dst.update_tags(**{"units": "m", **tags})
            dst.set_band_description(1, "height_m")
        to_cog(tmp, out)


def _heights(ds: rasterio.io.DatasetReader, win: Any) -> np.ndarray:
    """Band 1 of a height raster (a DSM or a prediction) as float32, NaN where nodata."""
    return read_dsm_block(ds, win)


def write_coarse_dem_prediction(
    coarse_dem: Path, embeddings: Path, out: Path, model: str, seed: int
) -> None:
    """The coarse DEM itself as a prediction (nodata -9999), the "no learning" baseline.

    Pixels without valid embeddings are nodata too, so it is scored on the nets' pixels.
    """
    with open_raster(coarse_dem, bands=1) as src, open_embeddings(embeddings) as emb:
        check_same_grid(Grid.of(src), Grid.of(emb), src.name, emb.name)
        tags = src.tags()

        def blocks() -> Any:
            for _, win in src.block_windows(1):
                z = _heights(src, win)
                ok = ~np.isnan(z) & valid_mask(read_checked(emb, win))
                yield win, np.where(ok, z, PRED_NODATA)

        meta = {k: tags[k] for k in ("source", "product", "resolution_m") if k in tags}
        _write_like(
            Grid.of(src),
            out,
            blocks(),
            {
                "quantity": "coarse DEM as the prediction (no learning)",
                "model": model,
                "seed": str(seed),
                "coarse_dem": str(coarse_dem),
                **{f"coarse_dem_{k}": v for k, v in meta.items()},
            },
        )
    log.info("wrote %s (the coarse DEM %s)", out, coarse_dem)


def sample_pairs(
    pred_path: Path, other_path: Path, split_path: Path, split: str, max_pixels: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``max_pixels`` (prediction, other) pairs of the ``split`` area, both valid.

    A bottom-k sample: every pixel gets a random key from ``seed`` and the ``max_pixels``
    smallest keys are kept, so the sample is uniform and memory stays bounded.
    """
    rng = np.random.default_rng(seed)
    keys, a, b = np.empty(0), np.empty(0, np.float32), np.empty(0, np.float32)
    with (
        open_raster(pred_path, bands=1) as pr,
        open_raster(other_path, bands=1) as ot,
        open_raster(split_path, bands=1) as sp,
    ):
        grid = Grid.of(pr)
        for ds in (ot, sp):
            check_same_grid(grid, Grid.of(ds), pr.name, ds.name)
        for _, win in pr.block_windows(1):
            p, o = _heights(pr, win), _heights(ot, win)
            ok = (read_checked(sp, win, indexes=1) == CODES[split]) & ~np.isnan(p) & ~np.isnan(o)
            k = rng.random(ok.shape)[ok]
            keys, a, b = (
                np.concatenate([keys, k]),
                np.concatenate([a, p[ok]]),
                np.concatenate([b, o[ok]]),
            )
            if keys.size > max_pixels:
                keep = np.argpartition(keys, max_pixels)[:max_pixels]
                keys, a, b = keys[keep], a[keep], b[keep]
    if keys.size == 0:
        raise NoValidData(f"no {split} pixel where {pred_path} and {other_path} are both valid")
    order = np.argsort(keys, kind="stable")  # independent of the block order's last trim
    return a[order].astype(np.float64), b[order].astype(np.float64)


def fit_linear(pred: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """Gain and offset of the least-squares line ``ref = gain * pred + offset``."""
    gain, offset = np.polyfit(pred, ref, 1)
    return float(gain), float(offset)


def fit_quantile_map(
    pred: np.ndarray, target: np.ndarray, levels: int
) -> tuple[np.ndarray, np.ndarray]:
    """Matched quantiles (prediction's, target's) at ``levels`` evenly spaced levels."""
    q = np.linspace(0.0, 1.0, levels)
    return np.quantile(pred, q), np.quantile(target, q)


def _mapping(
    method: str, pred: np.ndarray, other: np.ndarray, s: CorrectionSettings
) -> tuple[Any, dict[str, Any]]:
    """The fitted correction (a function of a prediction block) and its fit record."""
    if method == "linear":
        gain, offset = fit_linear(pred, other)
        return (lambda p: gain * p + offset), {"gain": gain, "offset_m": offset}
    src_q, dst_q = fit_quantile_map(pred, other, s.quantiles)
    rec = {
        f"pred_q{int(p)}_m": float(np.interp(p / 100, np.linspace(0, 1, s.quantiles), src_q))
        for p in (5, 50, 95)
    }
    rec |= {
        f"dem_q{int(p)}_m": float(np.interp(p / 100, np.linspace(0, 1, s.quantiles), dst_q))
        for p in (5, 50, 95)
    }
    return (lambda p: np.interp(p, src_q, dst_q)), rec


def correct_prediction(
    prediction: Path,
    split: Path,
    method: str,
    s: CorrectionSettings,
    seed: int,
    corrected: Path,
    fit: Path,
    model: str,
    dsm: Path | None = None,
    coarse_dem: Path | None = None,
) -> dict[str, Any]:
    """Write a bias-corrected copy of ``prediction`` and a one-row CSV of its fit.

    ``linear`` needs ``dsm`` (its validation-area pixels are the labels), ``quantile_map``
    needs ``coarse_dem`` (no labels at all); the split raster says which pixels are which.
    """
    need = {"linear": ("dsm", dsm), "quantile_map": ("coarse_dem", coarse_dem)}
    if method not in need:
        raise ConfigError(f"correction method {method!r} is unknown; use {', '.join(need)}")
    flag, other = need[method]
    if other is None:
        raise ConfigError(f"correction {method} needs --{flag.replace('_', '-')}")
    area = METHODS[method]
    pred, ref = sample_pairs(prediction, other, split, area, s.max_pixels, seed)
    f, rec = _mapping(method, pred, ref, s)
    with open_raster(prediction, bands=1) as src:

        def blocks() -> Any:
            for _, win in src.block_windows(1):
                p = _heights(src, win)
                yield win, np.where(np.isnan(p), PRED_NODATA, f(np.nan_to_num(p)))

        tags = {**src.tags(), "correction": method, "correction_fit_area": area}
        _write_like(Grid.of(src), corrected, blocks(), tags | {"model": f"{model}_{method}"})
    row = {"model": f"{model}_{method}", "base_model": model, "seed": seed, "method": method}
    row |= {"fit_area": area, "fit_pixels": len(pred), "fit_against": flag, **rec}
    write_csv(pd.DataFrame([row]), fit)
    log.info("%s %s: fitted on %d %s pixels: %s", model, method, len(pred), area, rec)
    return row


@step
def predict_coarse_dem(
    *, model: str, seed: int, coarse_dem: Path, embeddings: Path, prediction: Path
) -> None:
    """Write the coarse DEM itself as a prediction (the no-learning baseline)."""
    write_coarse_dem_prediction(coarse_dem, embeddings, prediction, model, seed)


@step
def correct(
    *,
    settings: CorrectionSettings,
    model: str,
    method: str,
    seed: int,
    prediction: Path,
    split: Path,
    corrected: Path,
    fit: Path,
    dsm: Path | None = None,
    coarse_dem: Path | None = None,
) -> None:
    """Bias-correct one prediction by one method (fitted without test labels)."""
    correct_prediction(
        prediction=prediction,
        split=split,
        method=method,
        s=settings,
        seed=seed,
        corrected=corrected,
        fit=fit,
        model=model,
        dsm=dsm,
        coarse_dem=coarse_dem,
    )
