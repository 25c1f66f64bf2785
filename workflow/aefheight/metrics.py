"""Streaming accuracy metrics of a predicted height raster against the reference DSM.

Sign convention everywhere: ``dh = prediction - reference`` (positive = over-estimation).
Rasters are read window by window; sums are float64 and merged with Chan's parallel update,
and the median and NMAD come from a histogram of dh with ``HIST_BIN`` m bins, so an AOI of any
size evaluates in memory bounded by one window.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import NoValidData
from .patches import read_dsm_block
from .raster import Grid, atomic_path, check_same_grid, open_raster, read_checked
from .split import CODES, SPLITS

log = logging.getLogger(__name__)

DIFF_CONVENTION = "prediction - reference"
HIST_BIN = 0.01  # m; resolution of median and NMAD
HIST_RANGE = 2000.0  # m; |dh| beyond this is counted in the edge bins
NMAD_FACTOR = 1.4826


@dataclass
class DiffStats:
    """Running statistics of (reference, prediction) pairs; feed it with :meth:`update`."""

    n: int = 0
    mean_ref: float = 0.0
    mean_pred: float = 0.0
    m2_ref: float = 0.0  # sum of squared deviations
    m2_pred: float = 0.0
    c_rp: float = 0.0  # co-moment
    sum_d: float = 0.0
    sum_d2: float = 0.0
    sum_abs: float = 0.0
    hist: np.ndarray = field(
        default_factory=lambda: np.zeros(int(2 * HIST_RANGE / HIST_BIN) + 1, np.int64)
    )

    def update(self, ref: np.ndarray, pred: np.ndarray) -> None:
        """Add pixels (1-D arrays of valid values only)."""
        if ref.size == 0:
            return
        r, p = ref.astype(np.float64), pred.astype(np.float64)
        nb = r.size
        mr, mp = r.mean(), p.mean()
        dr, dp = r - mr, p - mp
        n = self.n + nb
        delta_r, delta_p = mr - self.mean_ref, mp - self.mean_pred
        f = self.n * nb / n
        self.m2_ref += (dr * dr).sum() + delta_r * delta_r * f
        self.m2_pred += (dp * dp).sum() + delta_p * delta_p * f
        self.c_rp += (dr * dp).sum() + delta_r * delta_p * f
        self.mean_ref += delta_r * nb / n
        self.mean_pred += delta_p * nb / n
        self.n = n
        d = p - r
        self.sum_d += d.sum()
        self.sum_d2 += (d * d).sum()
        self.sum_abs += np.abs(d).sum()
        idx = np.clip(np.rint((d + HIST_RANGE) / HIST_BIN), 0, self.hist.size - 1)
        self.hist += np.bincount(idx.astype(np.int64), minlength=self.hist.size)

    def _quantile(self, counts: np.ndarray, centers: np.ndarray, q: float) -> float:
        cum = np.cumsum(counts)
        return float(centers[np.searchsorted(cum, q * cum[-1], side="left")])

    def result(self) -> dict[str, float]:
        """Metrics: n, r2, rmse, mae, bias (mean dh), median dh, nmad, pearson r."""
        nan = float("nan")
        if self.n == 0:
            return {
                k: nan
                for k in ("r2", "rmse_m", "mae_m", "bias_m", "median_diff_m", "nmad_m", "pearson_r")
            } | {"n": 0}
        centers = np.arange(self.hist.size) * HIST_BIN - HIST_RANGE
        med = self._quantile(self.hist, centers, 0.5)
        # NMAD: median of |dh - median|, from the same histogram folded around the median
        dev = np.abs(centers - med)
        order = np.argsort(dev, kind="stable")
        nmad = NMAD_FACTOR * self._quantile(self.hist[order], dev[order], 0.5)
        sse = self.sum_d2
        denom = np.sqrt(self.m2_ref * self.m2_pred)
        return {
            "n": self.n,
            "r2": 1.0 - sse / self.m2_ref if self.m2_ref > 0 else nan,
            "rmse_m": float(np.sqrt(sse / self.n)),
            "mae_m": self.sum_abs / self.n,
            "bias_m": self.sum_d / self.n,
            "median_diff_m": med,
            "nmad_m": nmad,
            "pearson_r": float(self.c_rp / denom) if denom > 0 else nan,
        }


def evaluate(
    pred_path: Path,
    dsm_path: Path,
    split_path: Path,
    max_samples: int = 100_000,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Metrics per split (train, val, test) and a random pixel sample for figures.

    Returns:
        (metrics with one row per split, sample with columns split, reference, prediction)
    """
    stats = {k: DiffStats() for k in SPLITS}
    samples = []
    rng = np.random.default_rng(seed)
    with open_raster(pred_path) as pr, open_raster(dsm_path) as dm, open_raster(split_path) as sp:
        grid = Grid.of(pr)
        check_same_grid(grid, Grid.of(dm), pr.name, dm.name)
        check_same_grid(grid, Grid.of(sp), pr.name, sp.name)
        keep = min(1.0, max_samples / (grid.width * grid.height))
        for _, win in pr.block_windows(1):
            pred = read_checked(pr, win, indexes=1)
            ref = read_dsm_block(dm, win)
            lab = read_checked(sp, win, indexes=1)
            ok = (pred != pr.nodata) & np.isfinite(pred) & np.isfinite(ref)
            pick = rng.random(ref.shape) < keep
            for name in SPLITS:
                m = ok & (lab == CODES[name])
                stats[name].update(ref[m], pred[m])
                s = m & pick
                if s.any():
                    samples.append(
                        pd.DataFrame({"split": name, "reference": ref[s], "prediction": pred[s]})
                    )
    if all(st.n == 0 for st in stats.values()):
        raise NoValidData(f"no pixel where both {pred_path} and {dsm_path} are valid")
    rows = [{"split": k, **stats[k].result()} for k in SPLITS]
    metrics = pd.DataFrame(rows)
    metrics["diff_convention"] = DIFF_CONVENTION
    sample = (
        pd.concat(samples, ignore_index=True)
        if samples
        else pd.DataFrame(columns=["split", "reference", "prediction"])
    )
    return metrics, sample


def write_csv(df: pd.DataFrame, path: Path) -> None:
    """Write a CSV atomically (fixed float format, so reruns are byte-identical)."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6g")
