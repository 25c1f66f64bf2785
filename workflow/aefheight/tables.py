"""Tables of the study: Markdown and LaTeX (booktabs) renderings of the tidy CSVs.

Use :func:`metrics_table` for the paper's comparison (one row per model and split; with several
seeds each cell is ``mean ± sd`` over seeds) and :func:`plain_table` for any small frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .figures import model_label
from .raster import atomic_path

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
SPLIT_ORDER = {"train": 0, "val": 1, "test": 2}


def _cell(values: pd.Series, decimals: int) -> str:
    v = values.dropna().to_numpy(dtype=float)
    if v.size == 0:
        return "n/a"
    if v.size == 1:
        return f"{v[0]:.{decimals}f}"
    return f"{v.mean():.{decimals}f} ± {v.std(ddof=1):.{decimals}f}"


def metrics_table(metrics: pd.DataFrame) -> pd.DataFrame:
    """One row per model and split; cells are formatted strings (mean ± sd over seeds)."""
    rows = []
    for (model, split), g in metrics.groupby(["model", "split"], sort=False):
        row = {
            "model": model_label(model),
            "split": split,
            "seeds": g["seed"].nunique(),
            "N": f"{int(g['n'].mean()):,}",
        }
        row |= {head: _cell(g[col], dec) for col, (head, dec) in COLUMNS.items() if col in g}
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
    head = "| " + " | ".join(map(_md, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(map(_md, r)) + " |" for r in df.itertuples(index=False)]
    return "\n".join([head, sep, *body]) + (f"\n\n{note}\n" if note else "\n")


_TEX = str.maketrans(
    {
        "&": r"\&",
        "%": r"\%",
        "_": r"\_",
        "#": r"\#",
        "±": r"$\pm$",
        "²": r"$^2$",
        "ρ": r"$\rho$",
        "|": r"$|$",
    }
)


def to_latex(df: pd.DataFrame, caption: str = "", label: str = "") -> str:
    """A booktabs table (needs ``\\usepackage{booktabs}``)."""
    cols = "l" * 2 + "r" * (len(df.columns) - 2)
    lines = [
        r"\begin{table}[htbp]",
        r"\centering",
        r"\small",
        rf"\begin{{tabular}}{{{cols}}}",
        r"\toprule",
        " & ".join(str(c).translate(_TEX) for c in df.columns) + r" \\",
        r"\midrule",
    ]
    lines += [
        " & ".join(str(v).translate(_TEX) for v in r) + r" \\" for r in df.itertuples(index=False)
    ]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if caption:
        lines.append(rf"\caption{{{caption.translate(_TEX)}}}")
    if label:
        lines.append(rf"\label{{{label}}}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def write_text(text: str, path: Path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def training_summary(histories: dict[tuple[str, str], pd.DataFrame]) -> pd.DataFrame:
    """Epochs actually run, best epoch and its validation RMSE per net and seed."""
    rows = []
    for (model, seed), h in histories.items():
        best = h.loc[h["val_loss"].idxmin()]
        rows.append(
            {
                "model": model,
                "seed": seed,
                "epochs_run": len(h),
                "best_epoch": int(best["epoch"]),
                "best_val_rmse_m": best["val_rmse_m"],
                "train_seconds": float(h["seconds"].sum()),
            }
        )
    return pd.DataFrame(rows)
