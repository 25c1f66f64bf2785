"""The accumulators of the accuracy metrics: exact in any block or shard order.

Sign convention everywhere: ``dh = prediction - reference`` (positive = over-estimation).
Sums are float64 and merged with Chan's parallel update. Quantiles of dh (median, NMAD, |dh|
68.3 %, 95 %, LE90) come from a histogram of dh with ``HIST_BIN`` m bins, so an AOI of any size
evaluates in memory bounded by one window. :mod:`.metrics` feeds them block by block.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from rasterio.windows import Window

from aefheight.core.raster import (
    window_origins,
)

DIFF_CONVENTION = "prediction - reference"


HIST_BIN = 0.01  # m; resolution of every dh quantile


HIST_RANGE = 2000.0  # m; |dh| beyond this is counted in the edge bins


HIST_BINS = int(2 * HIST_RANGE / HIST_BIN) + 1


NMAD_FACTOR = 1.4826


HEIGHT_BIN = 10.0  # m; width of the reference-height bins of the stratified errors


METRIC_COLUMNS = (
    "n",
    "valid_pct",
    "bias_m",
    "median_diff_m",
    "sd_m",
    "nmad_m",
    "rmse_m",
    "mae_m",
    "abs_p68_m",
    "abs_p95_m",
    "le90_m",
    "r2",
    "pearson_r",
    "spearman_rho",
    "spearman_n",
)


def hist_quantile(counts: np.ndarray, values: np.ndarray, q: float) -> float:
    """q-quantile of values given per-value counts (values sorted ascending)."""
    cum = np.cumsum(counts)
    return float(values[np.searchsorted(cum, q * cum[-1], side="left")])


BLOCK_FIELDS = (
    "n",
    "mean_ref",
    "mean_pred",
    "m2_ref",
    "m2_pred",
    "c_rp",
    "sum_d",
    "sum_d2",
    "sum_abs",
)


def block_stats(ref: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """What a block of valid pixels adds to :class:`DiffStats` (:data:`BLOCK_FIELDS`)."""
    if ref.size == 0:
        return np.zeros(len(BLOCK_FIELDS))
    r, p = ref.astype(np.float64), pred.astype(np.float64)
    mr, mp = r.mean(), p.mean()
    dr, dp = r - mr, p - mp
    d = p - r
    sums = ((dr * dr).sum(), (dp * dp).sum(), (dr * dp).sum(), d.sum(), (d * d).sum())
    return np.array([r.size, mr, mp, *sums, np.abs(d).sum()])


def diff_hist(ref: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Counts of ``dh`` in :data:`HIST_BIN` bins over +-:data:`HIST_RANGE` (edges clipped)."""
    d = pred.astype(np.float64) - ref.astype(np.float64)
    idx = np.clip(np.rint((d + HIST_RANGE) / HIST_BIN), 0, HIST_BINS - 1)
    return np.bincount(idx.astype(np.int64), minlength=HIST_BINS)


@dataclass
class DiffStats:
    """Running statistics of (reference, prediction) pairs; feed it with :meth:`update`."""

    n: int = 0
    n_total: int = 0  # pixels of the area, valid or not (for % valid)
    mean_ref: float = 0.0
    mean_pred: float = 0.0
    m2_ref: float = 0.0  # sum of squared deviations
    m2_pred: float = 0.0
    c_rp: float = 0.0  # co-moment
    sum_d: float = 0.0
    sum_d2: float = 0.0
    sum_abs: float = 0.0
    hist: np.ndarray = field(default_factory=lambda: np.zeros(HIST_BINS, np.int64))

    def update(self, ref: np.ndarray, pred: np.ndarray) -> None:
        """Add pixels (1-D arrays of valid values only)."""
        if ref.size == 0:
            return
        self.merge(block_stats(ref, pred))
        self.hist += diff_hist(ref, pred)

    def merge(self, b: np.ndarray) -> None:
        """Add the statistics of a block of pixels (:func:`block_stats`), Chan's parallel update."""
        nb, mr, mp, m2r, m2p, crp, sum_d, sum_d2, sum_abs = b
        if nb == 0:
            return
        n = self.n + int(nb)
        delta_r, delta_p = mr - self.mean_ref, mp - self.mean_pred
        f = self.n * nb / n
        self.m2_ref += m2r + delta_r * delta_r * f
        self.m2_pred += m2p + delta_p * delta_p * f
        self.c_rp += crp + delta_r * delta_p * f
        self.mean_ref += delta_r * nb / n
        self.mean_pred += delta_p * nb / n
        self.n = n
        self.sum_d += sum_d
        self.sum_d2 += sum_d2
        self.sum_abs += sum_abs

    def result(self) -> dict[str, float]:
        """Every metric of :data:`METRIC_COLUMNS` but Spearman's (see :func:`evaluate`)."""
        nan = float("nan")
        if self.n == 0:
            return {k: nan for k in METRIC_COLUMNS} | {"n": 0, "valid_pct": 0.0}
        centers = np.arange(self.hist.size) * HIST_BIN - HIST_RANGE
        med = hist_quantile(self.hist, centers, 0.5)
        # NMAD: median of |dh - median|, from the same histogram folded around the median
        dev = np.abs(centers - med)
        order = np.argsort(dev, kind="stable")
        nmad = NMAD_FACTOR * hist_quantile(self.hist[order], dev[order], 0.5)
        absd = np.abs(centers)
        order = np.argsort(absd, kind="stable")
        abs_q = {q: hist_quantile(self.hist[order], absd[order], q) for q in (0.683, 0.9, 0.95)}
        mean_d = self.sum_d / self.n
        denom = np.sqrt(self.m2_ref * self.m2_pred)
        return {
            "n": self.n,
            "valid_pct": 100.0 * self.n / self.n_total if self.n_total else nan,
            "bias_m": mean_d,
            "median_diff_m": med,
            "sd_m": float(np.sqrt(max(self.sum_d2 / self.n - mean_d * mean_d, 0.0))),
            "nmad_m": nmad,
            "rmse_m": float(np.sqrt(self.sum_d2 / self.n)),
            "mae_m": self.sum_abs / self.n,
            "abs_p68_m": abs_q[0.683],
            "abs_p95_m": abs_q[0.95],
            "le90_m": abs_q[0.9],
            "r2": 1.0 - self.sum_d2 / self.m2_ref if self.m2_ref > 0 else nan,
            "pearson_r": float(self.c_rp / denom) if denom > 0 else nan,
        }


@dataclass
class BinnedErrors:
    """Count, sum dh and sum dh^2 per integer key (height bin or class), streamed."""

    sums: dict[int, np.ndarray] = field(default_factory=dict)

    def update(self, keys: np.ndarray, d: np.ndarray) -> None:
        if keys.size == 0:
            return
        uniq, inv = np.unique(keys, return_inverse=True)
        n = np.bincount(inv)
        s1 = np.bincount(inv, weights=d)
        s2 = np.bincount(inv, weights=d * d)
        for i, k in enumerate(uniq.tolist()):
            acc = self.sums.setdefault(k, np.zeros(3))
            acc += (n[i], s1[i], s2[i])

    def table(self) -> pd.DataFrame:
        rows = [
            {"key": k, "n": int(v[0]), "bias_m": v[1] / v[0], "rmse_m": float(np.sqrt(v[2] / v[0]))}
            for k, v in sorted(self.sums.items())
        ]
        return pd.DataFrame(rows, columns=["key", "n", "bias_m", "rmse_m"])


@dataclass
class Evaluation:
    """Everything :func:`evaluate` measures for one prediction."""

    metrics: pd.DataFrame  # one row per split
    sample: pd.DataFrame  # split, reference, prediction (uniform random pixels)
    by_height: pd.DataFrame  # split, height_lo_m, height_hi_m, n, bias_m, rmse_m
    by_class: pd.DataFrame  # split, class, n, bias_m, rmse_m (empty without land cover)
    seams: pd.DataFrame  # one row: the jump of dh across window seams vs between them


SEAM_UNITS = 1000  # dh summed in mm as integers: the same sums in any block or shard order


class SeamCheck:
    """Whether a prediction shows its windows: dh's change at hand-overs / inside windows.

    1 = seam-free. Use :meth:`add` on every block, then :meth:`table`. Along each axis,
    dh = prediction - reference is averaged over bands one window step (``window - overlap``)
    deep, giving a profile per band. Seam lines are the centres of the overlaps, where
    blending hands one window to the next; reference lines lie halfway between them (the
    windows' cores). At each line two statistics are taken, the same way at both kinds:

    * the **jump**: the difference of the profile's means over ``k`` px strips on either side
      of the line (a level that differs from window to window raises it at seams);
    * the **roughness**: the summed 1 px changes of the profile across the band around the
      line (a thin line or ridge along window edges raises it, a smooth level change does not).

    ``seam_ratio`` is the larger of the two ratios (seams over cores). Differencing dh, not
    the prediction, leaves out the terrain's own relief. The layout comes from the
    prediction's tags (``window``, ``overlap``).
    """

    def __init__(self, tags: dict[str, str], height: int, width: int) -> None:
        self.window, self.overlap = int(tags.get("window", 0)), int(tags.get("overlap", 0))
        self.patch = int(tags.get("train_patch_size", 0))
        self.shape = (height, width)
        self.step = max(1, self.window - self.overlap)
        # per axis: (sum of dh in mm, pixels) per band of `step` lines and position along it
        self.along_x = np.zeros((2, -(-height // self.step), width), np.int64)
        self.along_y = np.zeros((2, -(-width // self.step), height), np.int64)

    def add(self, win: Window, ok: np.ndarray, dh: np.ndarray) -> None:
        """Add one block's valid pixels ``ok`` and differences ``dh`` (both the block's shape)."""
        if not self.window:
            return
        mm = np.where(ok, np.rint(dh * SEAM_UNITS), 0).astype(np.int64)
        (r0, r1), (c0, c1) = win.toranges()
        for prof, units, cnt, lo, hi, first in (
            (self.along_x, mm, ok, r0, r1, c0),
            (self.along_y, mm.T, ok.T, c0, c1, r0),
        ):
            bands = np.arange(lo, hi) // self.step
            for b in np.unique(bands):
                rows = bands == b
                n = units.shape[1]
                prof[0, b, first : first + n] += units[rows].sum(axis=0)
                prof[1, b, first : first + n] += cnt[rows].sum(axis=0)

    def _lines(self, prof: np.ndarray, length: int) -> dict[str, np.ndarray]:
        """Jump and roughness at every seam and reference line of one axis (NaN-free)."""
        origins = np.array(window_origins(length, self.window, self.step), np.float64)
        seams = (origins[1:] + origins[:-1] + self.window) / 2  # overlap centres
        lines = {"seam": seams, "between": (seams[1:] + seams[:-1]) / 2}
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = prof[0] / SEAM_UNITS / prof[1]  # (bands, length); NaN where no pixel
        step1 = np.abs(np.diff(mean, axis=1))  # 1 px changes
        # half an overlap either side of the line, no more than a quarter step (dense overlaps
        # hand over everywhere); strips an eighth as wide
        half = min(self.overlap / 2, self.step / 4)
        k = max(1, int(min(self.overlap, self.step)) // 8)
        out = {}
        for kind, at in lines.items():
            jump, rough = [], []
            for line in at:
                a0, b0 = int(np.floor(line - half)), int(np.ceil(line + half))
                if a0 - k < 0 or b0 + k > length:
                    continue
                left, right = mean[:, a0 - k : a0], mean[:, b0 : b0 + k]
                jump.append(np.abs(np.nanmean(right, axis=1) - np.nanmean(left, axis=1)))
                rough.append(np.nanmean(step1[:, a0:b0], axis=1) * (b0 - a0))
            for name, got in (("jump", jump), ("rough", rough)):
                v = np.concatenate(got) if got else np.zeros(0)
                out[f"{kind}_{name}"] = v[np.isfinite(v)]
        return out

    def table(self) -> pd.DataFrame:
        keys = ("seam_jump", "between_jump", "seam_rough", "between_rough")
        stats = dict.fromkeys(keys, float("nan"))
        n = {"seam_jump": 0, "between_jump": 0}
        if self.window and self.overlap:
            with np.errstate(invalid="ignore"), warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN strips (nodata)
                parts = [self._lines(self.along_x, self.shape[1]),
                         self._lines(self.along_y, self.shape[0])]  # fmt: skip
            for key in keys:
                v = np.concatenate([p[key] for p in parts])
                stats[key] = float(v.mean()) if v.size else float("nan")
                n[key] = int(v.size)
        jump = stats["seam_jump"] / stats["between_jump"] if stats["between_jump"] else np.nan
        rough = stats["seam_rough"] / stats["between_rough"] if stats["between_rough"] else np.nan
        return pd.DataFrame(
            [
                {
                    "window_px": self.window,
                    "overlap_px": self.overlap,
                    "train_patch_px": self.patch,
                    "seam_ratio": float(np.fmax(jump, rough)),
                    "seam_jump_m": stats["seam_jump"],
                    "between_jump_m": stats["between_jump"],
                    "seam_jump_ratio": float(jump),
                    "seam_roughness_m": stats["seam_rough"],
                    "between_roughness_m": stats["between_rough"],
                    "seam_roughness_ratio": float(rough),
                    "n_seam": n["seam_jump"],
                    "n_between": n["between_jump"],
                }
            ]
        )
