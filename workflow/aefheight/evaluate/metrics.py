"""Streaming accuracy metrics of a predicted height raster against the reference DSM.

Sign convention everywhere: ``dh = prediction - reference`` (positive = over-estimation).
Rasters are read window by window; sums are float64 and merged with Chan's parallel update.
Quantiles of dh (median, NMAD, |dh| 68.3 %, 95 %, LE90) come from a histogram of dh with
``HIST_BIN`` m bins, so an AOI of any size evaluates in memory bounded by one window. Spearman's
rho needs ranks, so it is computed on the uniform random pixel sample (its size is reported).
"""

from __future__ import annotations

import contextlib
import json
import logging
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import rasterio
from rasterio.windows import Window
from scipy import stats as sps

from aefheight.core import aef
from aefheight.core.errors import NoValidData
from aefheight.core.files import atomic_path, write_csv
from aefheight.core.names import CODES, SPLITS
from aefheight.core.raster import (
    Grid,
    check_same_grid,
    open_raster,
    read_checked,
    read_dsm_block,
    window_origins,
)
from aefheight.core.steps import step
from aefheight.inputs.shards import BLOCK_PX, ShardingSettings, shard_of

log = logging.getLogger(__name__)

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


@dataclass
class _Tally:
    """The statistics :func:`fold_partials` folds from the blocks, per split."""

    stats: dict[str, DiffStats] = field(default_factory=lambda: {k: DiffStats() for k in SPLITS})
    by_h: dict[str, BinnedErrors] = field(
        default_factory=lambda: {k: BinnedErrors() for k in SPLITS}
    )
    by_c: dict[str, BinnedErrors] = field(
        default_factory=lambda: {k: BinnedErrors() for k in SPLITS}
    )


@dataclass
class _Partials:
    """What each evaluation block adds, kept apart so that shards merge in one fixed order.

    Rows of ``binned_h``/``binned_c``: block row, block column, split, key, n, sum dh,
    sum dh^2; of ``samples``: block row, block column, split, reference, prediction.
    """

    blocks: list[tuple[int, int]] = field(default_factory=list)
    diff: list[np.ndarray] = field(default_factory=list)  # (splits, 1 + BLOCK_FIELDS)
    binned_h: list[np.ndarray] = field(default_factory=list)
    binned_c: list[np.ndarray] = field(default_factory=list)
    samples: list[np.ndarray] = field(default_factory=list)
    hist: np.ndarray = field(default_factory=lambda: np.zeros((len(SPLITS), HIST_BINS), np.int64))

    def arrays(self) -> dict[str, np.ndarray]:
        """Flat arrays (what :func:`write_partials` saves)."""

        def rows(parts: list[np.ndarray], n: int) -> np.ndarray:
            return np.concatenate(parts) if parts else np.zeros((0, n))

        return {
            "blocks": np.array(self.blocks, np.int64).reshape(-1, 2),
            "diff": np.array(self.diff).reshape(-1, len(SPLITS), 1 + len(BLOCK_FIELDS)),
            "binned_h": rows(self.binned_h, 7),
            "binned_c": rows(self.binned_c, 7),
            "samples": rows(self.samples, 5),
            "hist": self.hist,
        }


def _binned_rows(key: tuple[int, int, int], keys: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Rows (block, split, key, n, sum dh, sum dh^2) of one block and split (keys ascending)."""
    uniq, inv = np.unique(keys, return_inverse=True)
    sums = [np.bincount(inv, minlength=uniq.size), np.bincount(inv, weights=d, minlength=uniq.size)]
    sums.append(np.bincount(inv, weights=d * d, minlength=uniq.size))
    head = np.broadcast_to(np.array(key, np.float64), (uniq.size, 3))
    return np.column_stack([head, uniq, *sums])


def _add_block(
    out: _Partials,
    key: tuple[int, int],
    pixels: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray],
    height_bin: float,
) -> None:
    """Add one block: reference, prediction, validity, split labels, classes, sample picks."""
    ref, pred, ok, lab, cls, pick = pixels
    diff = np.zeros((len(SPLITS), 1 + len(BLOCK_FIELDS)))
    for i, name in enumerate(SPLITS):
        area = lab == CODES[name]
        m = ok & area
        r, p = ref[m], pred[m]
        diff[i] = (int(area.sum()), *block_stats(r, p))
        if r.size == 0:
            continue
        out.hist[i] += diff_hist(r, p)
        d = p.astype(np.float64) - r
        out.binned_h.append(_binned_rows((*key, i), np.floor(r / height_bin).astype(np.int64), d))
        if cls is not None:
            out.binned_c.append(_binned_rows((*key, i), cls[m].astype(np.int64), d))
        sm = m & pick
        if sm.any():
            head = np.broadcast_to(np.array((*key, i), np.float64), (int(sm.sum()), 3))
            out.samples.append(np.column_stack([head, ref[sm], pred[sm]]))
    out.blocks.append(key)
    out.diff.append(diff)


def _metrics_table(tally: _Tally, sample: pd.DataFrame) -> pd.DataFrame:
    """One row per split: the accuracy metrics and the Spearman rank correlation (sample)."""
    rows = []
    for k in SPLITS:
        row = {"split": k, **tally.stats[k].result()}
        sub = sample[sample["split"] == k]
        row["spearman_rho"] = (
            float(sps.spearmanr(sub["reference"], sub["prediction"])[0])
            if len(sub) > 2
            else float("nan")
        )
        row["spearman_n"] = len(sub)
        rows.append(row)
    metrics = pd.DataFrame(rows)[["split", *METRIC_COLUMNS]]
    metrics["diff_convention"] = DIFF_CONVENTION
    return metrics


def _binned_tables(
    tally: _Tally, height_bin: float, names: dict[str, str] | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Errors per reference-height bin and per land-cover class (empty without classes)."""
    hs, cs = [], []
    for k in SPLITS:
        t = tally.by_h[k].table()
        t.insert(0, "split", k)
        t.insert(1, "height_lo_m", t.pop("key") * height_bin)
        t.insert(2, "height_hi_m", t["height_lo_m"] + height_bin)
        hs.append(t)
    for k in SPLITS:
        t = tally.by_c[k].table().rename(columns={"key": "class"})
        t.insert(0, "split", k)
        labels = [names.get(str(c), str(c)) for c in t["class"]] if names is not None else []
        t.insert(2, "class_name", labels)
        cs.append(t)
    return pd.concat(hs, ignore_index=True), pd.concat(cs, ignore_index=True)


def _class_names(lc: rasterio.io.DatasetReader) -> dict[str, str]:
    """Land-cover code -> name, from the raster's ``classes`` tag (``1:forest,2:urban``)."""
    return dict(kv.split(":", 1) for kv in lc.tags().get("classes", "").split(",") if kv)


def _blocks(window: Window) -> list[tuple[tuple[int, int], Window]]:
    """The evaluation blocks of ``window``, as ((block row, block column), window), row by row.

    Whole :data:`~aefheight.inputs.shards.BLOCK_PX` blocks of the AOI's grid, clipped at its edges.
    """
    (r0, r1), (c0, c1) = window.toranges()
    return [
        ((r // BLOCK_PX, c // BLOCK_PX), Window(c, r, min(BLOCK_PX, c1 - c), min(BLOCK_PX, r1 - r)))
        for r in range(r0, r1, BLOCK_PX)
        for c in range(c0, c1, BLOCK_PX)
    ]


def evaluate_partials(
    pred_path: Path,
    dsm_path: Path,
    split_path: Path,
    landcover_path: Path | None = None,
    window: Window | None = None,
    max_samples: int = 200_000,
    seed: int = 0,
    height_bin: float = HEIGHT_BIN,
) -> dict[str, np.ndarray]:
    """What every evaluation block of ``window`` (a shard; None = the AOI) adds to the metrics.

    :func:`fold_partials` turns them into the metrics; blocks from several shards fold into
    exactly the metrics of the whole AOI, since blocks fold in one fixed order whoever computed
    them. Each block draws its sample pixels from its own seeded stream, for the same reason.
    """
    out = _Partials()
    with (
        open_raster(pred_path, bands=1) as pr,
        open_raster(dsm_path, bands=1) as dm,
        open_raster(split_path, bands=1) as sp,
        contextlib.ExitStack() as stack,
    ):
        lc = stack.enter_context(open_raster(landcover_path, 1)) if landcover_path else None
        grid = Grid.of(pr)
        for other in (dm, sp, *([lc] if lc is not None else [])):
            check_same_grid(grid, Grid.of(other), pr.name, other.name)
        keep = min(1.0, max_samples / (grid.width * grid.height))
        seams = SeamCheck(pr.tags(), grid.height, grid.width)
        for key, win in _blocks(window or Window(0, 0, grid.width, grid.height)):
            pred = read_checked(pr, win, indexes=1)
            ref = read_dsm_block(dm, win)
            lab = read_checked(sp, win, indexes=1)
            cls = read_checked(lc, win, indexes=1) if lc is not None else None
            ok = (pred != pr.nodata) & np.isfinite(pred) & np.isfinite(ref)
            pick = np.random.default_rng([seed, *key]).random(ref.shape) < keep
            seams.add(win, ok, pred.astype(np.float64) - ref)
            _add_block(out, key, (ref, pred, ok, lab, cls, pick), height_bin)
        about = {"tags": pr.tags(), "shape": [grid.height, grid.width], "pred": str(pred_path)}
        seam_profiles = {"seam_x": seams.along_x, "seam_y": seams.along_y}
        about["classes"] = _class_names(lc) if lc is not None else None
    return out.arrays() | seam_profiles | {"about": np.array(json.dumps(about, sort_keys=True))}


def write_partials(parts: dict[str, np.ndarray], path: Path) -> None:
    """Save one shard's partial statistics (``.npz``), atomically."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez_compressed(fh, allow_pickle=False, **parts)


SUMMED = ("hist", "seam_x", "seam_y")  # integer partials: shards add up in any order


def merge_partials(paths: Sequence[Path]) -> dict[str, np.ndarray]:
    """The partial statistics of several shards of one prediction, as one."""
    loaded = []
    for path in paths:
        with np.load(path, allow_pickle=False) as z:
            loaded.append({k: z[k] for k in z.files})
    abouts = {str(p["about"]) for p in loaded}
    if len(abouts) != 1:
        raise NoValidData(f"{', '.join(map(str, paths))} do not come from one prediction")
    out = {
        k: np.concatenate([p[k] for p in loaded]) for k in loaded[0] if k not in (*SUMMED, "about")
    }
    return out | {k: sum(p[k] for p in loaded) for k in SUMMED} | {"about": loaded[0]["about"]}


def _stable_by_block(rows: np.ndarray) -> np.ndarray:
    """``rows`` (block row, block column first) sorted by block, keeping their order within."""
    return rows[np.lexsort((rows[:, 1], rows[:, 0]))] if len(rows) else rows


def fold_partials(parts: dict[str, np.ndarray], height_bin: float = HEIGHT_BIN) -> Evaluation:
    """Metrics per split, stratified errors, seams and the sample, from the blocks' partials.

    Blocks are folded in row-major order of the AOI's block grid, so the result does not
    depend on how the blocks were shared out among shards.
    """
    about = json.loads(str(parts["about"]))
    tally = _Tally()
    seams = SeamCheck(about["tags"], *about["shape"])
    seams.along_x, seams.along_y = parts["seam_x"], parts["seam_y"]
    for b in np.lexsort((parts["blocks"][:, 1], parts["blocks"][:, 0])):
        for i, name in enumerate(SPLITS):
            tally.stats[name].n_total += int(parts["diff"][b, i, 0])
            tally.stats[name].merge(parts["diff"][b, i, 1:])
    for i, name in enumerate(SPLITS):
        tally.stats[name].hist = parts["hist"][i]
    for kind, binned in (("binned_h", tally.by_h), ("binned_c", tally.by_c)):
        for _, _, i, key, n, s1, s2 in _stable_by_block(parts[kind]):
            acc = binned[SPLITS[int(i)]].sums.setdefault(int(key), np.zeros(3))
            acc += (n, s1, s2)
    if all(st.n == 0 for st in tally.stats.values()):
        raise NoValidData(f"no pixel where both {about['pred']} and the reference DSM are valid")
    rows = _stable_by_block(parts["samples"])
    sample = pd.DataFrame(
        {
            "split": np.array(SPLITS, dtype=object)[rows[:, 2].astype(np.int64)],
            "reference": rows[:, 3].astype(np.float32),
            "prediction": rows[:, 4].astype(np.float32),
        }
    )
    by_height, by_class = _binned_tables(tally, height_bin, about["classes"])
    return Evaluation(_metrics_table(tally, sample), sample, by_height, by_class, seams.table())


def evaluate_prediction(
    pred_path: Path,
    dsm_path: Path,
    split_path: Path,
    landcover_path: Path | None = None,
    max_samples: int = 200_000,
    seed: int = 0,
    height_bin: float = HEIGHT_BIN,
) -> Evaluation:
    """Metrics per split (train, val, test), stratified errors and a random pixel sample.

    Streams the rasters block by block (memory flat in the AOI size); pixels of the split's
    buffer and unused labels enter no metric. The same as evaluating every shard of a
    sharded AOI and merging (:func:`evaluate_partials`, :func:`merge_partials`).
    """
    parts = evaluate_partials(
        pred_path, dsm_path, split_path, landcover_path, None, max_samples, seed, height_bin
    )
    return fold_partials(parts, height_bin)


def height_histograms(
    dsm_path: Path, split_path: Path, embeddings_path: Path, bin_m: float = 1.0
) -> pd.DataFrame:
    """Reference-height histogram per split (``bin_m`` bins), streamed window by window.

    Counts the pixels the metrics count: valid reference and valid embeddings.
    """
    counts = {k: BinnedErrors() for k in SPLITS}
    with (
        open_raster(dsm_path, bands=1) as dm,
        open_raster(split_path, bands=1) as sp,
        open_raster(embeddings_path, bands=aef.BANDS) as em,
    ):
        check_same_grid(Grid.of(dm), Grid.of(sp), dm.name, sp.name)
        check_same_grid(Grid.of(dm), Grid.of(em), dm.name, em.name)
        for _, win in sp.block_windows(1):
            ref = read_dsm_block(dm, win)
            lab = read_checked(sp, win, indexes=1)
            ok = np.isfinite(ref) & aef.valid_mask(read_checked(em, win))
            for k in SPLITS:
                r = ref[(lab == CODES[k]) & ok]
                counts[k].update(np.floor(r / bin_m).astype(np.int64), np.zeros(r.size))
    rows = []
    for k in SPLITS:
        t = counts[k].table()
        rows.append(
            pd.DataFrame(
                {
                    "split": k,
                    "height_lo_m": t["key"] * bin_m,
                    "height_hi_m": (t["key"] + 1) * bin_m,
                    "n": t["n"],
                }
            )
        )
    return pd.concat(rows, ignore_index=True)


def _hist_quantile(lo: np.ndarray, hi: np.ndarray, n: np.ndarray, q: float) -> float:
    """Quantile with linear interpolation inside the bin."""
    cum = np.cumsum(n)
    target = q * cum[-1]
    i = int(np.searchsorted(cum, target, side="left"))
    before = cum[i - 1] if i > 0 else 0
    return float(lo[i] + (hi[i] - lo[i]) * (target - before) / max(n[i], 1))


def shift_statistics(hist: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Quantile table per split and train-vs-test shift statistics from height histograms.

    KS statistic and Wasserstein-1 distance are computed on the binned distributions (exact up
    to the bin width); the share of test pixels outside the training range uses bin edges.
    """
    q_rows = []
    cdfs = {}
    edges = np.union1d(hist["height_lo_m"], hist["height_hi_m"])
    for k in SPLITS:
        h = hist[hist["split"] == k].sort_values("height_lo_m")
        lo, hi, n = (h[c].to_numpy() for c in ("height_lo_m", "height_hi_m", "n"))
        if n.sum() == 0:
            continue
        centers = (lo + hi) / 2
        mean = float((centers * n).sum() / n.sum())
        q_rows.append(
            {
                "split": k,
                "n": int(n.sum()),
                "mean_m": mean,
                "sd_m": float(np.sqrt((n * (centers - mean) ** 2).sum() / n.sum())),
                "min_m": float(lo[0]),
                **{
                    f"p{int(q * 100):02d}_m": _hist_quantile(lo, hi, n, q)
                    for q in (0.05, 0.25, 0.5, 0.75, 0.95)
                },
                "max_m": float(hi[-1]),
            }
        )
        full = np.zeros(len(edges) - 1)
        full[np.searchsorted(edges, lo)] = n
        cdfs[k] = np.cumsum(full) / n.sum()
    quantiles = pd.DataFrame(q_rows)
    stats = {}
    if "train" in cdfs and "test" in cdfs:
        ft, fs = cdfs["train"], cdfs["test"]
        widths = np.diff(edges)
        tr = quantiles.set_index("split").loc["train"]
        test = hist[hist["split"] == "test"]
        outside = test[(test["height_hi_m"] > tr["max_m"]) | (test["height_lo_m"] < tr["min_m"])]
        stats = {
            "ks_statistic": float(np.max(np.abs(ft - fs))),
            "wasserstein_m": float(np.sum(np.abs(ft - fs) * widths)),
            "test_outside_train_range_pct": 100.0 * outside["n"].sum() / test["n"].sum(),
            "test_above_train_p95_pct": 100.0
            * test.loc[test["height_lo_m"] >= tr["p95_m"], "n"].sum()
            / test["n"].sum(),
            "mean_shift_m": float(
                quantiles.set_index("split").loc["test", "mean_m"] - tr["mean_m"]
            ),
            "bin_m": float(widths.min()),
        }
    return quantiles, pd.DataFrame([stats])


def write_evaluation(
    prediction: Path,
    dsm: Path,
    split: Path,
    landcover: Path | None,
    model: str,
    seed: int,
    outputs: dict[str, Path],
) -> Evaluation:
    """The ``evaluate`` rule: evaluate one prediction and write its five tables.

    ``outputs`` names the CSVs: ``metrics``, ``samples``, ``by_height``, ``by_class``,
    ``seams``. Every table carries the ``model`` and ``seed`` it belongs to.
    """
    return _write_tables(
        evaluate_prediction(prediction, dsm, split, landcover, seed=seed), model, seed, outputs
    )


def write_merged_evaluation(
    partials: Sequence[Path], model: str, seed: int, outputs: dict[str, Path]
) -> Evaluation:
    """The ``merge_evaluation`` rule: ``evaluate``'s five tables from the shards' partials.

    Each shard's ``evaluate_shard`` job wrote them (:func:`evaluate_partials`); the tables are
    byte for byte those of the unsharded ``evaluate`` rule.
    """
    return _write_tables(fold_partials(merge_partials(partials)), model, seed, outputs)


def _write_tables(ev: Evaluation, model: str, seed: int, outputs: dict[str, Path]) -> Evaluation:
    tables = {
        "metrics": ev.metrics,
        "samples": ev.sample,
        "by_height": ev.by_height,
        "by_class": ev.by_class,
        "seams": ev.seams,
    }
    for name, df in tables.items():
        df.insert(0, "seed", seed)
        df.insert(0, "model", model)
        write_csv(df, outputs[name])
    return ev


def write_height_shift(
    dsm: Path, split: Path, embeddings: Path, hist: Path, quantiles: Path, stats: Path
) -> None:
    """The ``height_shift`` rule: height histograms per split, quantiles, shift statistics."""
    h = height_histograms(dsm, split, embeddings)
    q, s = shift_statistics(h)
    write_csv(h, hist)
    write_csv(q, quantiles)
    write_csv(s, stats)


@step
def evaluate(
    *,
    model: str,
    seed: int,
    prediction: Path,
    dsm: Path,
    split: Path,
    metrics: Path,
    samples: Path,
    by_height: Path,
    by_class: Path,
    seams: Path,
    landcover: Path | None = None,
) -> None:
    """Score one prediction per split: metrics, samples, errors by height and class, seams."""
    outputs = dict(metrics=metrics, samples=samples, by_height=by_height, by_class=by_class)
    write_evaluation(prediction, dsm, split, landcover, model, seed, {**outputs, "seams": seams})


@step
def evaluate_shard(
    *,
    sharding: ShardingSettings,
    seed: int,
    shard: str,
    prediction: Path,
    dsm: Path,
    split: Path,
    partials: Path,
    landcover: Path | None = None,
) -> None:
    """Write the partial statistics of one prediction in one shard (``merge-evaluation``)."""
    window = shard_of(prediction, shard, sharding)
    parts = evaluate_partials(prediction, dsm, split, landcover, window, seed=seed)
    write_partials(parts, partials)


@step
def merge_evaluation(
    *,
    model: str,
    seed: int,
    partials: list[Path],
    metrics: Path,
    samples: Path,
    by_height: Path,
    by_class: Path,
    seams: Path,
) -> None:
    """Write ``evaluate``'s five tables of one prediction from its shards' statistics."""
    outputs = dict(metrics=metrics, samples=samples, by_height=by_height, by_class=by_class)
    write_merged_evaluation(partials, model, seed, {**outputs, "seams": seams})


@step
def height_shift(
    *, dsm: Path, split: Path, embeddings: Path, hist: Path, quantiles: Path, stats: Path
) -> None:
    """Write the reference heights' histograms, quantiles and shift statistics per split."""
    write_height_shift(dsm, split, embeddings, hist, quantiles, stats)
