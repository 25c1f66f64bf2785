"""Tables of the study: Markdown and LaTeX (booktabs) renderings of the tidy CSVs.

Use :func:`headline` for the paper's table (one row per model, ``mean ± SD`` over seeds, the
failed fits named), :func:`per_seed` for every seed's values, :func:`metrics_table` for every
metric per model and split, :func:`comparisons` for the paired differences between models with
their 95 % intervals and verdicts, and :func:`plain_table` for any small frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats as sps

from aefheight.core.files import atomic_path
from aefheight.core.names import ENSEMBLE, SPLITS, model_label

# metrics.csv column -> (header, decimals); the paper's columns first, then the DEM ones
COLUMNS = {
    "r2": ("R²", 3),
    "rmse_m": ("RMSE (m)", 2),
    "median_diff_m": ("median dh (m)", 2),
    "bias_m": ("bias (m)", 2),
    "sd_m": ("SD (m)", 2),
    "nmad_m": ("NMAD (m)", 2),
    "mae_m": ("MAE (m)", 2),
    "abs_p68_m": ("|dh| 68.3% (m)", 2),
    "abs_p95_m": ("|dh| 95% (m)", 2),
    "le90_m": ("LE90 (m)", 2),
    "pearson_r": ("Pearson r", 3),
    "spearman_rho": ("Spearman ρ", 3),
    "valid_pct": ("valid (%)", 1),
}
NOTE = (
    "dh = prediction - reference; LE90 = 90th percentile of |dh| (not P95-P5 of signed dh); "
    "NMAD = 1.4826 median(|dh - median dh|)"
)
SPLIT_ORDER = {name: i for i, name in enumerate(SPLITS)}


def cell(values: pd.Series, decimals: int) -> str:
    """``mean ± SD`` over seeds (the per-seed values are in :func:`per_seed`)."""
    v = values.to_numpy(dtype=float)
    if v.size == 0 or np.isnan(v).all():
        return "n/a"
    if v.size == 1:
        return f"{v[0]:.{decimals}f}"
    return f"{np.nanmean(v):.{decimals}f} ± {np.nanstd(v, ddof=1):.{decimals}f}"


def metrics_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per model and split; cells are formatted strings (mean ± sd over seeds)."""
    rows = []
    metrics = metrics.sort_values("seed", kind="stable")
    for (model, split), g in metrics.groupby(["model", "split"], sort=False):
        row = {
            "model": model_label(model),
            "split": split,
            "seeds": g["seed"].nunique(),
            "N": f"{int(g['n'].mean()):,}",
        }
        row |= {head: cell(g[col], dec) for col, (head, dec) in COLUMNS.items() if col in g}
        rows.append(row)
    out = pd.DataFrame(rows)
    key = out["split"].map(SPLIT_ORDER).fillna(9)
    order = {m: i for i, m in enumerate(dict.fromkeys(out["model"]))}
    return (
        out.assign(_m=out["model"].map(order), _s=key)
        .sort_values(["_m", "_s"])
        .drop(columns=["_m", "_s"])
        .reset_index(drop=True)
    )


def plain_table(df: pd.DataFrame, decimals: int = 3) -> pd.DataFrame:
    """Format floats of a small frame for display."""
    out = df.copy()
    for c in out.columns:
        if pd.api.types.is_float_dtype(out[c]):
            out[c] = out[c].map(lambda v: "n/a" if np.isnan(v) else f"{v:.{decimals}f}")
    return out


def _md(value: object) -> str:
    return str(value).replace("|", "\\|")  # a literal pipe would split the cell


def to_markdown(df: pd.DataFrame, note: str = "") -> str:
    """A pipe table (pandas' ``to_markdown``, tabulate), literal pipes escaped; then a note."""
    cells = df.rename(columns=_md).map(_md)
    return cells.to_markdown(index=False) + "\n" + (f"\n{note}\n" if note else "")


# What LaTeX's text mode lacks, after pandas has escaped the special characters
_MATH = str.maketrans({"±": r"$\pm$", "²": r"$^2$", "ρ": r"$\rho$", "|": r"$|$"})


def to_latex(df: pd.DataFrame, caption: str = "", label: str = "") -> str:
    r"""A booktabs table (pandas' ``Styler.to_latex``; needs ``\usepackage{booktabs}``)."""
    styler = df.style.hide(axis="index").format(escape="latex").format_index(escape="latex", axis=1)
    tex = styler.to_latex(
        column_format="l" * 2 + "r" * (len(df.columns) - 2),
        position="htbp",
        position_float="centering",
        hrules=True,
        caption=caption.replace("%", r"\%") or None,
        label=label or None,
    )
    return tex.translate(_MATH)


def write_text(text: str, path: Path) -> None:
    """Write ``text`` to ``path`` as UTF-8, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def training_summary(histories: list[pd.DataFrame], max_epochs: int) -> pd.DataFrame:
    """Per net and seed: epochs run, best epoch, optimizer steps, wall time, why it stopped.

    Each history carries its ``model``, ``seed`` and ``stopped`` columns (train.py writes them).
    """
    rows = []
    for h in histories:
        best = h.loc[h["val_loss"].idxmin()]
        stopped = str(h["stopped"].iloc[-1])
        rows.append(
            {
                "model": h["model"].iloc[0],
                "seed": int(h["seed"].iloc[0]),
                "epochs_run": len(h),
                "max_epochs": max_epochs,
                "best_epoch": int(best["epoch"]),
                "steps": int(h["steps"].iloc[-1]),
                "stopped": "early stopping" if stopped == "early_stopping" else "cap hit",
                "best_val_rmse_m": best["val_rmse_m"],
                "train_seconds": float(h["seconds"].sum()),
            }
        )
    if not rows:  # a study of baselines only
        return pd.DataFrame(columns=["model", "seed", "epochs_run", "max_epochs", "stopped"])
    return pd.DataFrame(rows).sort_values(["model", "seed"]).reset_index(drop=True)


# metric -> (label, higher is better, decimals) for the paired comparisons
COMPARED = {"r2": ("R²", True, 3), "rmse_m": ("RMSE", False, 2)}


@dataclass(frozen=True)
class Interval:
    """Mean and 95 % t-interval of a few values (one per seed); no interval with one value."""

    mean: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: np.ndarray | pd.Series, level: float = 0.95) -> Interval:
        v = np.asarray(values, dtype=float)
        v = v[np.isfinite(v)]
        if v.size == 0:
            return cls(float("nan"), float("nan"), float("nan"), 0)
        mean = float(v.mean())
        if v.size < 2:
            return cls(mean, float("nan"), float("nan"), 1)
        half = float(sps.t.ppf(0.5 + level / 2, v.size - 1) * v.std(ddof=1) / np.sqrt(v.size))
        return cls(mean, mean - half, mean + half, int(v.size))

    def text(self, decimals: int) -> str:
        if self.n == 0:
            return "n/a"
        if self.n < 2:
            return f"{self.mean:.{decimals}f} (1 seed)"
        return f"{self.mean:.{decimals}f} [{self.low:.{decimals}f}, {self.high:.{decimals}f}]"


def paired_difference(a: pd.Series, b: pd.Series, level: float = 0.95) -> dict[str, float]:
    """Mean of the per-seed differences ``a - b`` and its t-interval over the shared seeds."""
    iv = Interval.of((a - b).dropna(), level)
    return {"n_seeds": iv.n, "mean_diff": iv.mean, "ci_low": iv.low, "ci_high": iv.high}


def diff_stat(diff: dict[str, float], dec: int) -> str:
    """``Δ = +x, 95 % CI [lo, hi], n seeds`` of a :func:`paired_difference` (or one seed)."""
    n, lo, hi = diff["n_seeds"], diff["ci_low"], diff["ci_high"]
    if n >= 2:
        return (
            f"Δ = {diff['mean_diff']:+.{dec}f}, 95 % CI [{lo:+.{dec}f}, {hi:+.{dec}f}], {n} seeds"
        )
    return f"Δ = {diff['mean_diff']:+.{dec}f}, one seed: no interval"


def verdict(a: str, b: str, metric: str, diff: dict[str, float], split: str = "test") -> str:
    """One sentence: is ``a`` better or worse than ``b`` on ``metric``, or not resolved."""
    label, higher, dec = COMPARED[metric]
    n, lo, hi = diff["n_seeds"], diff["ci_low"], diff["ci_high"]
    stat = diff_stat(diff, dec)
    if n >= 2 and (lo > 0 or hi < 0):
        word = "better" if (lo > 0) == higher else "worse"
        return f"{model_label(a)} is {word} than {model_label(b)} on {split} {label} ({stat})."
    return (
        f"{model_label(a)} vs {model_label(b)} on {split} {label}: not resolved at {n} seed"
        f"{'s' if n != 1 else ''} ({stat})."
    )


def comparison_pairs(
    nets: list[str], baselines: list[str], corrected: dict[str, str] | None = None
) -> list[tuple[str, str, str]]:
    """(group, model, versus) of every comparison the tables make.

    Each later net minus each earlier one; each net minus each baseline (Ridge and the coarse
    DEM: does learning add to it?); each corrected prediction minus its uncorrected model.
    """
    pairs = [("nets", nets[j], nets[i]) for i in range(len(nets)) for j in range(i + 1, len(nets))]
    pairs += [("net vs baseline", n, b) for n in nets for b in baselines]
    pairs += [("after vs before correction", c, m) for c, m in (corrected or {}).items()]
    return pairs


def comparisons(
    metrics: pd.DataFrame,
    nets: list[str],
    baselines: list[str],
    split: str = "test",
    corrected: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Paired-by-seed differences between models on ``split``, one row per pair and metric.

    Pairs: :func:`comparison_pairs`; for every metric of :data:`COMPARED`, with a t-interval
    and a verdict sentence.
    """
    sub = metrics[metrics["split"] == split]
    rows = []
    for group, a, b in comparison_pairs(nets, baselines, corrected):
        for metric in COMPARED:
            va = sub[sub["model"] == a].set_index("seed")[metric]
            vb = sub[sub["model"] == b].set_index("seed")[metric]
            diff = paired_difference(va, vb)
            rows.append(
                {"group": group, "model": a, "versus": b, "split": split, "metric": metric}
                | diff
                | {"verdict": verdict(a, b, metric, diff, split)}
            )
    return pd.DataFrame(rows)


HEADLINE = {  # the paper's columns: (split, metric) -> (header, decimals)
    ("train", "r2"): ("train R²", 3),
    ("test", "r2"): ("test R²", 3),
    ("test", "rmse_m"): ("test RMSE (m)", 2),
    ("test", "median_diff_m"): ("test median dh (m)", 2),
}


def failed_fits(metrics: pd.DataFrame, nets: list[str], ridge: str | None) -> pd.DataFrame:
    """Per net and seed: whether it failed to fit (train R² below the pixel-wise Ridge's).

    A net that reads the training area worse than a pixel-wise linear model of the same
    bands has not learnt what it was trained on; tables name it instead of averaging it in.
    The Ridge of the same seed is the bar (its mean over seeds where the seeds differ).
    """
    tr = metrics[metrics["split"] == "train"]
    bar = tr[tr["model"] == ridge].set_index("seed")["r2"] if ridge else pd.Series(dtype=float)
    rows = []
    for net in nets:
        for seed, r2 in tr[tr["model"] == net].set_index("seed")["r2"].items():
            ref = float(bar.get(seed, bar.mean())) if len(bar) else float("nan")
            rows.append([net, int(seed), r2, ref, bool(r2 < ref)])
    cols = ["model", "seed", "train_r2", "ridge_train_r2", "failed_to_fit"]
    return pd.DataFrame(rows, columns=cols)


def _failed_text(failed: pd.DataFrame, model: str) -> str:
    f = failed[failed["model"] == model]
    if f.empty:
        return ""
    bad = f.loc[f["failed_to_fit"], "seed"].tolist()
    return f"{len(bad)} of {len(f)}" + (f" (seed {', '.join(map(str, bad))})" if bad else "")


def headline(
    metrics: pd.DataFrame, models: list[str], failed: pd.DataFrame | None = None
) -> pd.DataFrame:
    """The paper's table for ``models``: train R², test R², RMSE and median dh, ``mean ± SD``.

    With ``failed`` (:func:`failed_fits`), a column names the seeds that failed to fit.
    """
    metrics = metrics.sort_values("seed", kind="stable")
    rows = []
    for model in models:
        g = metrics[metrics["model"] == model]
        if g.empty:
            continue
        base = model.removesuffix(f"_{ENSEMBLE}")  # an ensemble: one row, its seeds averaged
        seeds = metrics.loc[metrics["model"] == base, "seed"].nunique()
        row = {
            "model": model_label(model),
            "seeds": seeds if base != model else g["seed"].nunique(),
        }
        for (split, col), (head, dec) in HEADLINE.items():
            row[head] = cell(g.loc[g["split"] == split, col], dec)
        if failed is not None:
            none = "n/a (an ensemble)" if base != model else "n/a (no training)"
            row["failed to fit"] = _failed_text(failed, model) or none
        rows.append(row)
    return pd.DataFrame(rows)


def per_seed(metrics: pd.DataFrame, models: list[str], failed: pd.DataFrame) -> pd.DataFrame:
    """Every model's and seed's headline values (numbers), with the failed-fit flag."""
    rows = []
    for model in models:
        g = metrics[metrics["model"] == model]
        for seed, s in g.groupby("seed"):
            row = {"model": model, "seed": int(seed)}
            for (split, col), (head, _) in HEADLINE.items():
                row[head] = float(s.loc[s["split"] == split, col].iloc[0])
            f = failed[(failed["model"] == model) & (failed["seed"] == seed)]
            row["failed to fit"] = bool(f["failed_to_fit"].iloc[0]) if len(f) else False
            rows.append(row)
    return pd.DataFrame(rows)


def crossover_height(by_height: pd.DataFrame, min_n: int = 100) -> float:
    """Reference height where a model turns from over- (dh > 0) to under-estimation.

    The bin edge that best separates the two: it maximises the summed dh (n x bias) of the bins
    below minus that of the bins above, so a few noisy sign flips do not move it. NaN when the
    bias is not positive below and negative above any edge (e.g. it never changes sign).
    """
    b = by_height[by_height["n"] >= min_n].sort_values("height_lo_m")
    if len(b) < 2:
        return float("nan")
    total = (b["n"] * b["bias_m"]).to_numpy()
    below = np.cumsum(total)[:-1]  # summed dh of bins 0..k
    above = total.sum() - below
    k = int(np.argmax(below - above))
    if below[k] <= 0 or above[k] >= 0:
        return float("nan")
    return float(b["height_hi_m"].iloc[k])


def crossover_table(by_height: list[pd.DataFrame]) -> pd.DataFrame:
    """Per prediction and split (test, all): the height where the bias changes sign."""
    rows = []
    for bh in by_height:
        for split in ("test", "all"):
            sub = bh if split == "all" else bh[bh["split"] == split]
            g = sub.assign(s1=sub["n"] * sub["bias_m"])
            g = g.groupby(["height_lo_m", "height_hi_m"], as_index=False)[["n", "s1"]].sum()
            g["bias_m"] = g["s1"] / g["n"]
            rows.append(
                {
                    "model": bh["model"].iloc[0],
                    "seed": bh["seed"].iloc[0],
                    "split": split,
                    "crossover_height_m": crossover_height(g),
                }
            )
    return pd.DataFrame(rows)
