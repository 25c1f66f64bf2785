"""The paper's claims, each beside this run's value and a verdict.

This run's value is the mean and 95 % interval over seeds; the verdict says reproduced, not
reproduced, or not resolved at N seeds. Use :func:`claims_table` on one AOI's tidy tables
(the ``tables`` step); :data:`PAPER` holds the paper's numbers, defined once here. The rule
of every verdict is :data:`RULE`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

from aefheight.core.names import model_label
from aefheight.report.tables import Interval

# (role, split, metric) -> the paper's value (arXiv 2602.17250, abstract and results table)
PAPER: dict[tuple[str, str, str], float] = {
    ("unet", "train", "r2"): 0.97,
    ("unetplusplus", "train", "r2"): 0.97,
    ("unetplusplus", "test", "r2"): 0.84,
    ("unetplusplus", "test", "rmse_m"): 16.42,
    ("unetplusplus", "test", "median_diff_m"): -2.62,
    ("unet", "test", "r2"): 0.78,
    ("unet", "test", "rmse_m"): 19.26,
    ("unet", "test", "median_diff_m"): -7.22,
    ("ridge", "train", "r2"): 0.64,
    ("ridge", "test", "r2"): 0.38,
    ("ridge", "test", "rmse_m"): 32.22,
}
PAPER_CROSSOVER_M = 100.0  # "both nets over-estimate below ~100 m and under-estimate above"
# what the synthetic AOI was calibrated on (aefheight.calibration): not findings there
CALIBRATED = {("ridge", "train", "r2"), ("ridge", "test", "r2"), ("ridge", "test", "rmse_m")}
METRIC_WORDS = {"r2": "R²", "rmse_m": "RMSE (m)", "median_diff_m": "median dh (m)"}
# how close this run's interval must stay to the paper's number to call it reproduced
TOLERANCE = {"r2": 0.05, "rmse_m": 3.0, "median_diff_m": 3.0}
RULE = (
    "Verdicts: a value is reproduced when this run's 95 % t-interval over seeds holds the "
    "paper's number and stays within ±0.05 (R²) or ±3 m (RMSE, median dh) of it; not "
    "reproduced when the interval excludes it (the direction is given); not resolved when the "
    "interval holds it but is wider than that, or with one seed. A comparison is reproduced "
    "when its paired interval excludes 0 on the paper's side. On the synthetic AOI the "
    "pixel-wise Ridge and the height distributions are calibration targets (README), not "
    "findings."
)


def seeds_needed(diffs: np.ndarray | pd.Series, level: float = 0.95, most: int = 1000) -> int:
    """Seeds a paired difference needs for its t-interval to exclude 0.

    At its observed mean and SD (the same both ways); ``most + 1`` when more than ``most``.
    """
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    if d.size < 2 or d.std(ddof=1) == 0 or d.mean() == 0:
        return 2 if d.size >= 2 and d.std(ddof=1) == 0 and d.mean() != 0 else most + 1
    ratio = abs(d.mean()) / d.std(ddof=1)
    for n in range(2, most + 1):
        if sps.t.ppf(0.5 + level / 2, n - 1) / np.sqrt(n) < ratio:
            return n
    return most + 1


def value_verdict(iv: Interval, paper: float, tolerance: float) -> str:
    """Reproduced / not reproduced (lower, higher) / not resolved, for one number (:data:`RULE`)."""
    if iv.n == 0:
        return "not run"
    if iv.n < 2:
        return "not resolved at 1 seed"
    if not iv.low <= paper <= iv.high:
        return f"not reproduced ({'higher' if iv.low > paper else 'lower'})"
    if paper - tolerance <= iv.low and iv.high <= paper + tolerance:
        return "reproduced"
    return f"not resolved at {iv.n} seeds (interval wider than ±{tolerance:g})"


def comparison_verdict(iv: Interval, better: str, worse: str, needed: int) -> str:
    """Reproduced when ``better - worse`` (R²) is above 0, for a paired interval ``iv``."""
    if iv.n < 2:
        return f"not resolved at {iv.n} seed"
    if iv.low > 0:
        return "reproduced"
    if iv.high < 0:
        return f"not reproduced ({better} worse than {worse})"
    more = f"more than {needed - 1}" if needed > 1000 else f"about {needed}"
    return f"not resolved at {iv.n} seeds ({more} would resolve it)"


def _values(metrics: pd.DataFrame, model: str, split: str, metric: str) -> pd.Series:
    sub = metrics[(metrics["model"] == model) & (metrics["split"] == split)]
    return sub.set_index("seed")[metric].sort_index()


def _value_rows(metrics: pd.DataFrame, roles: dict[str, str], synthetic: bool) -> list[dict]:
    rows = []
    for (role, split, metric), paper in PAPER.items():
        model = roles.get(role)
        if model is None:
            continue
        iv = Interval.of(_values(metrics, model, split, metric))
        calibrated = synthetic and (role, split, metric) in CALIBRATED
        dec = 3 if metric == "r2" else 2
        rows.append(
            {
                "claim": f"{model_label(role)} {split} {METRIC_WORDS[metric]}",
                "paper": f"{paper:g}",
                "this run": iv.text(dec),
                "verdict": "calibration target"
                if calibrated
                else value_verdict(iv, paper, TOLERANCE[metric]),
            }
        )
    return rows


def comparison(metrics: pd.DataFrame, a: str, b: str) -> tuple[Interval, int]:
    """Paired test R² difference ``a - b`` over the shared seeds and the seeds it needs."""
    d = (_values(metrics, a, "test", "r2") - _values(metrics, b, "test", "r2")).dropna()
    return Interval.of(d), seeds_needed(d)


def _drop_row(metrics: pd.DataFrame, nets: list[str]) -> dict:
    """Both nets lose accuracy from the training to the test area (paired by seed)."""
    parts, verdicts = [], []
    for m in nets:
        d = (_values(metrics, m, "train", "r2") - _values(metrics, m, "test", "r2")).dropna()
        iv = Interval.of(d)
        parts.append(f"{model_label(m)} {iv.text(3)}")
        verdicts.append(iv.n >= 2 and iv.low > 0)
    n = len(verdicts)
    verdict = "reproduced" if all(verdicts) else f"reproduced for {sum(verdicts)} of {n} nets"
    return {
        "claim": "The nets lose R² from the training to the test area",
        "paper": "0.97 → 0.78 / 0.84",
        "this run": "drop " + "; ".join(parts),
        "verdict": verdict if n else "not run",
    }


def _shift_row(shift: pd.DataFrame, quantiles: pd.DataFrame, synthetic: bool) -> dict:
    st, q = shift.iloc[0], quantiles.set_index("split")["mean_m"]
    higher = st["mean_shift_m"] > 0
    return {
        "claim": "The test area lies higher than the training area",
        "paper": "test ~110-160 m",
        "this run": (
            f"test mean {q['test']:.0f} m vs train {q['train']:.0f} m "
            f"(+{st['mean_shift_m']:.0f} m, KS {st['ks_statistic']:.2f})"
        ),
        "verdict": "calibration target"
        if synthetic
        else ("reproduced" if higher else "not reproduced"),
    }


def _crossover_row(crossover: pd.DataFrame, nets: list[str]) -> dict:
    """Over-estimation below a height and under-estimation above, in the test area."""
    parts, shown = [], 0
    for m in nets:
        c = crossover[(crossover["model"] == m) & (crossover["split"] == "test")]
        have = c["crossover_height_m"].notna()
        shown += int(have.all() and len(c) > 0)
        iv = Interval.of(c["crossover_height_m"])
        parts.append(f"{model_label(m)} {iv.text(0)} m ({int(have.sum())} of {len(c)} seeds)")
    verdict = (
        "reproduced (pattern)" if shown == len(nets) else f"shown by {shown} of {len(nets)} nets"
    )
    return {
        "claim": "The nets over-estimate below a height and under-estimate above it",
        "paper": f"~{PAPER_CROSSOVER_M:.0f} m",
        "this run": "; ".join(parts),
        "verdict": verdict if nets else "not run",
    }


def claims_table(
    metrics: pd.DataFrame,
    roles: dict[str, str],
    shift: pd.DataFrame,
    quantiles: pd.DataFrame,
    crossover: pd.DataFrame,
    synthetic: bool,
) -> pd.DataFrame:
    """The paper's claims with this run's values and verdicts (strings), in the paper's order.

    Args:
        metrics: metrics.csv (model, seed, split, r2, rmse_m, median_diff_m, ...).
        roles: the paper's models (``unet``, ``unetplusplus``, ``ridge``) -> this run's model
            names; a role the config lacks leaves its claims out.
        shift: the shift statistics (one row).
        quantiles: the reference heights per split (``mean_m`` per ``split``).
        crossover: the crossover heights (:func:`aefheight.report.tables.crossover_table`).
        synthetic: whether the AOI is the calibrated synthetic one.
    """
    rows = _value_rows(metrics, roles, synthetic)
    nets = [roles[r] for r in ("unet", "unetplusplus") if r in roles]
    if len(nets) == 2:
        iv, needed = comparison(metrics, nets[1], nets[0])
        rows.insert(
            0,
            {
                "claim": "U-Net++ beats U-Net on the test area (R²)",
                "paper": "+0.06 (0.84 vs 0.78)",
                "this run": f"{iv.text(3)} (paired)",
                "verdict": comparison_verdict(iv, "U-Net++", "U-Net", needed),
            },
        )
    rows += [
        _shift_row(shift, quantiles, synthetic),
        _drop_row(metrics, nets),
        _crossover_row(crossover, nets),
    ]
    return pd.DataFrame(rows, columns=["claim", "paper", "this run", "verdict"])
