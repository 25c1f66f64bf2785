"""Prediction intervals: split conformal on the validation band, written beside the prediction.

Use when a user needs to know which pixels of a height map to trust, in metres. For one
prediction (a model and seed), :func:`predict_interval` samples (prediction, reference) pairs of
the **validation band** (``val`` in ``split.tif``: held out of the weights' fit, next to the
buffer of the test strip; it chose the epoch, one number, as for the linear correction), fits a
conformal regressor of ``crepes`` on their residuals (:func:`calibrate`) and writes the
interval (lower, upper) at the configured level, block by block, as a two-band COG
(:func:`write_interval`). Two methods, one sample:

* ``conformal``: one half-width for every pixel (standard split conformal);
* ``by_height``: Mondrian by predicted height, one half-width per bin; the bins' edges are
  quantiles of the calibration sample's predictions, the outer bins open-ended, so a pixel
  predicted higher than any calibration pixel gets the top bin's width.

No test pixel's reference height is read (tests/predict/test_intervals.py changes them).
Whether the intervals still cover under the height shift is measured by
:mod:`aefheight.evaluate.coverage`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import pandas as pd
import rasterio
from crepes import ConformalRegressor

from aefheight.core.errors import ConfigError, NoValidData
from aefheight.core.files import scratch_path, write_csv
from aefheight.core.raster import Grid, open_raster, read_dsm_block, to_cog
from aefheight.core.steps import step
from aefheight.predict import PRED_NODATA
from aefheight.predict.correction import sample_pairs

log = logging.getLogger(__name__)

INTERVAL_METHODS = ("conformal", "by_height")
CALIBRATION_SPLIT = "val"


@dataclass(frozen=True)
class IntervalSettings:
    """Settings of the prediction intervals (config ``intervals``)."""

    SECTION: ClassVar[str] = "intervals"
    level: float  # nominal coverage, in (0, 1)
    methods: tuple[str, ...]  # of INTERVAL_METHODS
    height_bins: int  # by_height: bins of predicted height
    min_calibration_px: int  # per bin: fewer refuses the interval
    max_pixels: int  # calibration pixels sampled by the seed

    def check(self, section: str) -> None:
        """What the schema cannot say: enough pixels per bin for the level to be reachable."""
        need = int(np.ceil(1 / (1 - self.level))) - 1
        if self.min_calibration_px < need:
            raise ConfigError(
                f"{section}.min_calibration_px is {self.min_calibration_px}, but a {self.level}"
                f" interval needs at least {need} calibration pixels per bin; raise it"
            )
        if self.max_pixels < self.min_calibration_px * self.height_bins:
            raise ConfigError(
                f"{section}.max_pixels ({self.max_pixels}) cannot fill {self.height_bins} bins "
                f"of min_calibration_px ({self.min_calibration_px}); raise max_pixels"
            )


@dataclass(frozen=True)
class Calibration:
    """A fitted interval: the regressor, the inner bin edges (empty: one bin), the level."""

    regressor: ConformalRegressor
    edges: np.ndarray
    level: float
    counts: np.ndarray
    method: str

    @property
    def n(self) -> int:
        """Calibration pixels."""
        return int(self.counts.sum())

    def bins(self, pred: np.ndarray) -> np.ndarray | None:
        """Each prediction's bin (None for a single bin, as crepes takes it)."""
        return np.searchsorted(self.edges, pred, side="right") if self.edges.size else None

    def interval(self, pred: np.ndarray) -> np.ndarray:
        """(lower, upper) of each prediction in a flat array, shape (n, 2)."""
        return self.regressor.predict_int(pred, bins=self.bins(pred), confidence=self.level)

    def table(self) -> pd.DataFrame:
        """One row per bin: its predicted-height range, calibration pixels and half-width."""
        lo = np.concatenate([[-np.inf], self.edges])
        hi = np.concatenate([self.edges, [np.inf]])
        mids = np.where(np.isfinite(lo), lo, np.where(np.isfinite(hi), hi, 0.0))
        half = self.interval(mids)[:, 1] - mids
        return pd.DataFrame(
            {"bin": range(lo.size), "pred_lo_m": lo, "pred_hi_m": hi, "n": self.counts}
            | {"half_width_m": half}
        )


def calibrate(
    pred: np.ndarray, ref: np.ndarray, method: str, s: IntervalSettings, what: str
) -> Calibration:
    """Fit the interval of ``method`` on calibration pairs; refuse bins too thin for the level."""
    if method not in INTERVAL_METHODS:
        raise ConfigError(f"interval method {method!r} is unknown; use {INTERVAL_METHODS}")
    bins = s.height_bins if method == "by_height" else 1
    edges = np.quantile(pred, np.linspace(0, 1, bins + 1)[1:-1]) if bins > 1 else np.empty(0)
    labels = np.searchsorted(edges, pred, side="right")
    counts = np.bincount(labels, minlength=bins)
    if counts.min() < s.min_calibration_px:
        raise NoValidData(
            f"{what}: {method} interval has {counts.min()} {CALIBRATION_SPLIT} pixels in a bin "
            f"({len(pred)} in all), fewer than intervals.min_calibration_px "
            f"({s.min_calibration_px}); lower intervals.height_bins or widen split.fractions.val"
        )
    regressor = ConformalRegressor().fit(ref - pred, bins=labels if bins > 1 else None)
    return Calibration(regressor, edges, s.level, counts, method)


def write_interval(
    prediction: Path, cal: Calibration, interval: Path, tags: dict[str, str]
) -> None:
    """Write the interval of ``cal`` around ``prediction``, block by block, as a two-band COG."""
    with open_raster(prediction, bands=1) as src, scratch_path(interval, ".tif") as tmp:
        with rasterio.open(tmp, "w", **Grid.of(src).profile(2, "float32", PRED_NODATA)) as dst:
            for _, win in src.block_windows(1):
                p = read_dsm_block(src, win)
                out = np.full((2, *p.shape), PRED_NODATA, np.float32)
                ok = ~np.isnan(p)
                out[:, ok] = cal.interval(p[ok].astype(np.float64)).T
                dst.write(out, window=win)
            tags = tags | {"method": cal.method, "level": str(cal.level)}
            tags |= {"calibration_split": CALIBRATION_SPLIT, "calibration_px": str(cal.n)}
            dst.update_tags(units="m", **tags)
            dst.descriptions = ("lower_m", "upper_m")
        to_cog(tmp, interval)


@step
def predict_interval(
    *,
    settings: IntervalSettings,
    model: str,
    seed: int,
    prediction: Path,
    dsm: Path,
    split: Path,
    methods: list[str],
    intervals: list[Path],
    calibrations: list[Path],
) -> None:
    """Write one prediction's intervals at ``settings.level``, one per method, no test label.

    Args:
        settings: The config's ``intervals`` section (JSON; ``'{}'`` for the defaults).
        model: The model's name (written into the tags).
        seed: The training seed; it also draws the calibration sample.
        prediction: The height map to bracket.
        dsm: The reference DSM (read on the validation band only).
        split: The split raster (which pixels are the validation band).
        methods: ``conformal`` (one width), ``by_height`` (a width per predicted-height bin).
        intervals: Written, one per method: a two-band COG (lower_m, upper_m).
        calibrations: Written, one per method: a row per bin (range, pixels, half-width).
    """
    if not len(methods) == len(intervals) == len(calibrations):
        raise ConfigError("predict-interval needs one --intervals and --calibrations per method")
    pred, ref = sample_pairs(prediction, dsm, split, CALIBRATION_SPLIT, settings.max_pixels, seed)
    for method, interval, calibration in zip(methods, intervals, calibrations, strict=True):
        cal = calibrate(pred, ref, method, settings, f"{model} seed {seed}")
        write_interval(prediction, cal, interval, {"model": model, "seed": str(seed)})
        table = cal.table().assign(model=model, seed=seed, method=method, level=settings.level)
        write_csv(table, calibration)
        half = np.round(table["half_width_m"].to_numpy(), 2)
        log.info("%s seed %d %s: %d %s pixels, half-widths %s m", model, seed, method,
                 len(pred), CALIBRATION_SPLIT, half)  # fmt: skip
