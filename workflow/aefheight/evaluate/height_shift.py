"""The height-distribution shift between the splits: the paper's explanation of its test drop.

Histograms of the reference heights per split (where the embeddings are valid), their
quantiles, and the shift statistics (test minus train mean, the share of test pixels above the
training range) that the tables and findings read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from aefheight.core.embeddings import open_embeddings, valid_mask
from aefheight.core.files import write_csv
from aefheight.core.names import CODES, SPLITS
from aefheight.core.raster import (
    Grid,
    check_same_grid,
    open_raster,
    read_checked,
    read_dsm_block,
)
from aefheight.core.steps import step
from aefheight.evaluate.stats import (
    BinnedErrors,
)


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
        open_embeddings(embeddings_path) as em,
    ):
        check_same_grid(Grid.of(dm), Grid.of(sp), dm.name, sp.name)
        check_same_grid(Grid.of(dm), Grid.of(em), dm.name, em.name)
        for _, win in sp.block_windows(1):
            ref = read_dsm_block(dm, win)
            lab = read_checked(sp, win, indexes=1)
            ok = np.isfinite(ref) & valid_mask(read_checked(em, win))
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
def height_shift(
    *, dsm: Path, split: Path, embeddings: Path, hist: Path, quantiles: Path, stats: Path
) -> None:
    """Write the reference heights' histograms, quantiles and shift statistics per split."""
    write_height_shift(dsm, split, embeddings, hist, quantiles, stats)
