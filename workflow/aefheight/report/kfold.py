"""Spatial k-fold cross-validation and the area of applicability: the tables (rule ``kfold``).

One contiguous test strip gives one number for transfer, and it depends on where the strip
falls. With ``split.folds`` = k, every model and seed is also trained with each of k strips held
out in turn (``split.fold_strips``); this module puts the folds' test metrics side by side with
the single split's:

* :func:`fold_metrics`: one row per fold, model and seed (test area), with the fold's height
  shift (test mean - train mean) and test mean height;
* :func:`summary`: per model, the single split (over seeds) beside the k-fold estimate (over
  folds and seeds) and each fold (over seeds);
* :func:`comparisons`: k-fold vs single split per model, and model vs model on the k-fold
  estimate, each paired by seed (the k-fold value of a seed is its mean over folds), with the
  number of folds in which the difference has the same sign;
* :func:`shift_response`: does a model's test error follow the fold's height shift?
* :func:`aoa_summary`: test pixels outside the area of applicability and the error inside
  vs outside it, per split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from aefheight.core.files import write_csv
from aefheight.core.names import SINGLE_SPLIT as SINGLE
from aefheight.core.names import model_label, split_names
from aefheight.core.steps import step
from aefheight.report import tables
from aefheight.report.findings import rst_table

METRICS = ("r2", "rmse_m", "bias_m", "median_diff_m")
TRAINING = ["fold", "model", "seed", "epochs_run", "best_epoch"]


def fold_metrics(metrics: list[Path], quantiles: list[Path], stats: list[Path]) -> pd.DataFrame:
    """Test metrics of every fold (files in fold order), with the fold's height shift."""
    rows = []
    for fold, (m, q, s) in enumerate(zip(metrics, quantiles, stats, strict=True)):
        test = pd.read_csv(m).query("split == 'test'")
        quant = pd.read_csv(q).set_index("split")
        shift = pd.read_csv(s)
        rows.append(
            test[["model", "seed", "n", *METRICS]].assign(
                fold=fold,
                test_mean_m=float(quant.loc["test", "mean_m"]),
                mean_shift_m=float(shift["mean_shift_m"].iloc[0]),
            )
        )
    out = pd.concat(rows, ignore_index=True)
    return out[["fold", "model", "seed", "n", *METRICS, "test_mean_m", "mean_shift_m"]]


def fold_training(histories: list[Path], folds: int) -> pd.DataFrame:
    """Epochs run and best epoch of every fold's nets.

    ``histories`` come in fold order, the same number per fold (as rule ``kfold`` lists them).
    """
    if len(histories) % max(folds, 1):
        raise ValueError(f"{len(histories)} histories do not split into {folds} folds")
    per = len(histories) // max(folds, 1)
    if per == 0:  # a study of baselines only
        return pd.DataFrame(columns=TRAINING)
    parts = [
        tables.training_summary(
            [pd.read_csv(h) for h in histories[i * per : (i + 1) * per]], 0
        ).assign(fold=i)[TRAINING]
        for i in range(folds)
    ]  # max_epochs (0) is not used: only the epochs columns are kept
    return pd.concat(parts, ignore_index=True)


def per_seed(folds: pd.DataFrame) -> pd.DataFrame:
    """The k-fold estimate of each model and seed: its mean over folds (split "k-fold")."""
    g = folds.groupby(["model", "seed"], sort=False)[list(METRICS)].mean().reset_index()
    return g.assign(split="k-fold")


def _pooled(values: pd.Series, decimals: int) -> str:
    v = values.to_numpy(float)
    return f"{v.mean():.{decimals}f} ± {v.std(ddof=1):.{decimals}f} (n = {v.size})"


def summary(single: pd.DataFrame, folds: pd.DataFrame) -> pd.DataFrame:
    """Per model: test R² and RMSE of the single split, of the k folds pooled, and per fold.

    Single split and per-fold cells: ``mean ± SD`` over seeds (per seed: kfold.csv); the
    pooled k-fold cell: mean ± SD over every fold and seed.
    """
    single = single.query("split == 'test'").sort_values("seed")
    folds = folds.sort_values(["fold", "seed"])
    rows = []
    for model in folds["model"].unique():
        s, f = single[single["model"] == model], folds[folds["model"] == model]
        for metric, (label, _, dec) in tables.COMPARED.items():
            row = {"model": model_label(model), "metric": f"test {label}"}
            row[SINGLE] = tables.cell(s[metric], dec)
            row["k-fold (folds × seeds)"] = _pooled(f[metric], dec)
            for fold, g in f.groupby("fold"):
                row[f"fold {fold}"] = tables.cell(g[metric], dec)
            rows.append(row)
    return pd.DataFrame(rows)


def _same_sign(folds: pd.DataFrame, a: str, b: str, metric: str, sign: float) -> str:
    """In how many folds the mean (over seeds) of ``a - b`` has the sign ``sign``."""
    m = folds.groupby(["fold", "model"])[metric].mean().unstack()
    d = (m[a] - m[b]).dropna()
    return f"{int((np.sign(d) == sign).sum())} of {len(d)}"


def comparisons(
    single: pd.DataFrame, folds: pd.DataFrame, nets: list[str], baselines: list[str]
) -> pd.DataFrame:
    """Paired-by-seed comparisons of the k-fold estimate, with per-fold agreement.

    First each model's k-fold value vs its single-split value, then model vs model on the
    k-fold estimate (as :func:`aefheight.report.tables.comparisons`).
    """
    est = per_seed(folds)
    test = single.query("split == 'test'")
    rows = []
    for model in est["model"].unique():
        for metric, (label, _, dec) in tables.COMPARED.items():
            a = est[est["model"] == model].set_index("seed")[metric]
            b = test[test["model"] == model].set_index("seed")[metric]
            d = tables.paired_difference(a, b)
            rows.append(
                {"group": "k-fold vs single split", "model": model, "versus": SINGLE}
                | {"split": "test", "metric": metric, **d, "folds_same_sign": ""}
                | {"verdict": _kfold_verdict(model, label, dec, d)}
            )
    pairs = tables.comparisons(est, nets, baselines, split="k-fold")
    for r in pairs.itertuples(index=False):
        sign = np.sign(r.mean_diff) if np.isfinite(r.mean_diff) else 0.0
        agree = _same_sign(folds, r.model, r.versus, r.metric, sign)
        rows.append(r._asdict() | {"folds_same_sign": agree})
    return pd.DataFrame(rows)


def _kfold_verdict(model: str, label: str, dec: int, d: dict[str, float]) -> str:
    n, lo, hi = d["n_seeds"], d["ci_low"], d["ci_high"]
    stat = tables.diff_stat(d, dec)
    if n >= 2 and (lo > 0 or hi < 0):
        word = "higher" if lo > 0 else "lower"
        return (
            f"{model_label(model)}: the k-fold test {label} is {word} than the single "
            f"split's ({stat})."
        )
    return (
        f"{model_label(model)}: k-fold and single-split test {label} differ by less than the "
        f"seeds resolve ({stat})."
    )


def shift_response(folds: pd.DataFrame) -> pd.DataFrame:
    """Per model: does the test error follow the fold's height shift?

    Pearson r across folds between the fold's height shift and its test bias and RMSE (fold
    means over seeds), and the slope of bias on shift.
    """
    rows = []
    for model, g in folds.groupby("model", sort=False):
        m = g.groupby("fold")[["mean_shift_m", "bias_m", "rmse_m"]].mean()
        x = m["mean_shift_m"].to_numpy()
        row: dict[str, Any] = {"model": model, "folds": len(m)}
        for col in ("bias_m", "rmse_m"):
            y = m[col].to_numpy()
            ok = len(m) >= 3 and np.std(x) > 0 and np.std(y) > 0
            row[f"r_shift_{col.removesuffix('_m')}"] = (
                float(np.corrcoef(x, y)[0, 1]) if ok else np.nan
            )
        row["bias_per_shift_m_per_m"] = (
            float(np.polyfit(x, m["bias_m"], 1)[0]) if len(m) >= 2 else np.nan
        )
        rows.append(row)
    return pd.DataFrame(rows)


def aoa_summary(aoa: list[Path], aoa_metrics: list[Path], names: list[str]) -> pd.DataFrame:
    """Per split and model: test pixels outside the AOA, error inside vs outside it.

    ``names`` label the splits (the single split, then the folds); RMSE and bias cells are
    ``mean ± SD (median; per-seed values)`` over seeds.
    """
    rows = []
    for name, a, m in zip(names, aoa, aoa_metrics, strict=True):
        area = pd.read_csv(a).set_index("split")
        met = pd.read_csv(m).query("split == 'test'").sort_values("seed")
        for model, g in met.groupby("model", sort=False):
            row = {"split": name, "model": model_label(model)}
            row["threshold"] = f"{area['threshold'].iloc[0]:.3f}"
            row["test outside"] = (
                f"{int(area.loc['test', 'outside_pixels'])} px "
                f"({area.loc['test', 'outside_pct']:.2f} %)"
            )
            for k in ("train", "test"):  # the DI's median: how far test sits from training
                row[f"{k} median DI"] = f"{area.loc[k, 'median_di']:.2f}"
            for where in ("inside", "outside"):
                w = g[g["area"] == where]
                row[f"RMSE {where} (m)"] = tables.cell(w["rmse_m"], 2)
                row[f"bias {where} (m)"] = tables.cell(w["bias_m"], 2)
            rows.append(row)
    return pd.DataFrame(rows)


def _failed_sentence(folds: pd.DataFrame) -> str:
    """The trainings that did worse than the test area's mean (test R² < 0), by name."""
    bad = folds[folds["r2"] < 0].sort_values(["model", "fold", "seed"])
    if bad.empty:
        return "Every fold, model and seed scored a test R² >= 0."
    each = "; ".join(
        f"{model_label(r.model)} fold {r.fold} seed {r.seed} (R² {r.r2:.2f}, RMSE {r.rmse_m:.1f} m"
        + (f", best epoch {r.best_epoch:.0f} of {r.epochs_run:.0f} run" if r.best_epoch > 0 else "")
        + ")"
        for r in bad.fillna({"best_epoch": 0, "epochs_run": 0}).itertuples(index=False)
    )
    return (
        f"Test R² < 0 (worse than the held-out mean) in {len(bad)} of {len(folds)} fold × "
        f"seed runs: {each}. They stay in every mean and SD above."
    )


def _findings(
    aoi: str,
    folds: pd.DataFrame,
    summ: pd.DataFrame,
    comps: pd.DataFrame,
    resp: pd.DataFrame,
    aoa: pd.DataFrame,
) -> str:
    """The k-fold and AOA findings of one AOI (reStructuredText, after the single split's)."""
    title = f"Spatial k-fold cross-validation: AOI {aoi}"
    out = [title, "-" * len(title), ""]
    out.append(rst_table(summ, "Single split vs k-fold (test area)"))
    out.append("Verdicts (paired by seed; a seed's k-fold value is its mean over folds):\n")
    r2 = comps[comps["metric"] == "r2"]
    for group, g in r2.groupby("group", sort=False):
        out += [f"{group.capitalize()}:", ""]
        for r in g.itertuples(index=False):
            agree = f" Same sign in {r.folds_same_sign} folds." if r.folds_same_sign else ""
            out.append(f"* {r.verdict}{agree}")
        out.append("")
    out += [_failed_sentence(folds), ""]
    out.append("Does the error follow the fold's height shift (Pearson r across folds)?\n")
    for r in resp.itertuples(index=False):
        out.append(
            f"* {model_label(r.model)}: r(shift, bias) = {r.r_shift_bias:+.2f}, "
            f"r(shift, RMSE) = {r.r_shift_rmse:+.2f}, bias {r.bias_per_shift_m_per_m:+.3f} m "
            f"per m of shift ({r.folds} folds)."
        )
    out.append("")
    single = aoa[aoa["split"] == SINGLE]
    if not single.empty:
        out.append(rst_table(single, "Area of applicability, single split (test area)"))
    return "\n".join(out) + "\n\n"


def write_kfold(
    *, aoi: str, nets: list[str], baselines: list[str], inputs: dict[str, Any],
    outputs: dict[str, Path],
) -> None:  # fmt: skip
    """The ``kfold`` rule: the k-fold tables, the AOA table and their findings for one AOI.

    Args:
        aoi: the AOI's name (in the findings' title).
        nets: model names of the nets.
        baselines: model names of the Ridge and coarse-DEM baselines.
        inputs: ``metrics`` (the single split's metrics.csv), ``aoa`` and ``aoa_metrics``
            (single split's), and lists in fold order: ``fold_metrics``, ``fold_quantiles``,
            ``fold_stats``, ``fold_aoa``, ``fold_aoa_metrics``, ``fold_histories`` (the
            nets' training histories, the same number per fold).
        outputs: ``table`` (per fold, model, seed), ``comparisons``, ``shift_response``,
            ``aoa_table``, ``md`` and ``findings``.
    """
    single = pd.read_csv(inputs["metrics"])
    folds = fold_metrics(inputs["fold_metrics"], inputs["fold_quantiles"], inputs["fold_stats"])
    epochs = fold_training(inputs["fold_histories"], len(inputs["fold_metrics"]))
    folds = folds.merge(epochs, on=["fold", "model", "seed"], how="left")
    write_csv(folds, outputs["table"])
    summ = summary(single, folds)
    comps = comparisons(single, folds, nets, baselines)
    write_csv(comps, outputs["comparisons"])
    resp = shift_response(folds)
    write_csv(resp, outputs["shift_response"])
    names = split_names(len(inputs["fold_aoa"]))
    aoa = aoa_summary(
        [inputs["aoa"], *inputs["fold_aoa"]], [inputs["aoa_metrics"], *inputs["fold_aoa_metrics"]],
        names,
    )  # fmt: skip
    write_csv(aoa, outputs["aoa_table"])
    md = (
        tables.to_markdown(summ, "Test area; " + tables.NOTE)
        + "\n"
        + "\n".join(f"* {v}" for v in comps["verdict"])
        + "\n\n"
        + tables.to_markdown(tables.plain_table(resp, 3), "height shift = test mean - train mean")
        + "\n"
        + tables.to_markdown(aoa, "area of applicability: test pixels, inside vs outside")
    )
    tables.write_text(md, outputs["md"])
    tables.write_text(_findings(aoi, folds, summ, comps, resp, aoa), outputs["findings"])


@step
def kfold(
    *,
    aoi: str,
    nets: list[str],
    baselines: list[str],
    metrics: Path,
    aoa: Path,
    aoa_metrics: Path,
    fold_metrics: list[Path],
    fold_quantiles: list[Path],
    fold_stats: list[Path],
    fold_aoa: list[Path],
    fold_aoa_metrics: list[Path],
    fold_histories: list[Path],
    table: Path,
    comparisons: Path,
    shift_response: Path,
    aoa_table: Path,
    md: Path,
    findings: Path,
) -> None:
    """Write the k-fold tables, comparisons with the single split, AOA table and findings."""
    inputs: dict[str, Any] = dict(metrics=metrics, aoa=aoa, aoa_metrics=aoa_metrics)
    inputs |= dict(fold_metrics=fold_metrics, fold_quantiles=fold_quantiles)
    inputs |= dict(fold_stats=fold_stats, fold_aoa=fold_aoa, fold_aoa_metrics=fold_aoa_metrics)
    outputs = dict(table=table, comparisons=comparisons, shift_response=shift_response)
    outputs |= dict(aoa_table=aoa_table, md=md, findings=findings)
    write_kfold(
        aoi=aoi,
        nets=nets,
        baselines=baselines,
        inputs={**inputs, "fold_histories": fold_histories},
        outputs=outputs,
    )
