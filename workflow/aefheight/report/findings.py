"""The findings: the report's first page, before the methods.

Claims first (the paper's, each with this run's value and a verdict), then what this run
concludes, the paper's table and the beyond-the-paper table (``mean ± SD``), the paper's
comparison and a few grouped verdicts, the checks; every verdict and per-seed value last,
under "Details". Use :func:`findings_rst` per AOI on the tidy tables of the ``tables`` step,
and :func:`front_page` to put every AOI's findings in front of the methods text
(``workflow/report/workflow.rst``, still rendered by Snakemake's report with the config).
"""

from __future__ import annotations

import pandas as pd

from aefheight.core.names import CODES, model_label


def rst_table(df: pd.DataFrame, title: str = "") -> str:
    """A reStructuredText ``csv-table`` of a small frame of strings and numbers."""

    def q(v: object) -> str:
        return '"' + str(v).replace('"', '""') + '"'

    lines = [f".. csv-table:: {title}".rstrip(), "   :header: " + ", ".join(map(q, df.columns))]
    lines.append("")
    lines += ["   " + ", ".join(map(q, r)) for r in df.itertuples(index=False)]
    return "\n".join(lines) + "\n"


def _split_sentence(areas: pd.DataFrame) -> str:
    a = areas.set_index("split")
    parts = [
        f"{k} {a.loc[k, 'area_km2']:.1f} km² ({a.loc[k, 'pct']:.1f} %)"
        for k in CODES
        if k in a.index
    ]
    return (
        f"Realized split ({a['method'].iloc[0]}, validation {a['val'].iloc[0]}, buffer "
        f"{int(a['buffer_px'].iloc[0])} px): " + ", ".join(parts) + "."
    )


def _training_sentence(training: pd.DataFrame, failed: pd.DataFrame) -> str:
    if training.empty:
        return "No net was trained."
    fired = int((training["stopped"] == "early stopping").sum())
    bad = failed[failed["failed_to_fit"]]
    named = ", ".join(f"{model_label(m)} seed {s}" for m, s in bad[["model", "seed"]].values)
    return (
        f"Training: {training['steps'].min()}-{training['steps'].max()} optimizer steps per "
        f"training ({training['epochs_run'].min()}-{training['epochs_run'].max()} epochs of "
        f"random windows, at most {training['max_epochs'].max()}); early stopping fired in "
        f"{fired} of {len(training)}. "
        + (
            f"**Failed to fit** (train R² below the pixel-wise Ridge's): {named}; the tables "
            "name them beside the mean."
            if len(bad)
            else "Every training fits its training area better than the pixel-wise Ridge."
        )
    )


def _seam_sentence(seams: pd.DataFrame) -> str:
    seams = seams[seams["window_px"] > 0]  # the coarse DEM has no prediction windows
    r = seams["seam_ratio"].dropna()
    if r.empty:
        return ""
    w = seams.iloc[0]
    return (
        f"Seam check (how dh changes where prediction windows hand over, jump and roughness, "
        f"over how it changes inside them; {int(w['window_px'])} px windows, "
        f"{int(w['overlap_px'])} px overlap, trained on {int(w['train_patch_px'])} px patches): "
        f"{r.min():.2f}-{r.max():.2f} over {len(r)} predictions (1 = seam-free)."
    )


def _grouped_verdicts(comparisons: pd.DataFrame, skip: tuple[str, str]) -> list[str]:
    """One line per (group, baseline) of the R² verdicts, the paper's comparison left out."""
    r2 = comparisons[comparisons["metric"] == "r2"]
    lines = []
    for (group, versus), g in r2.groupby(["group", "versus"], sort=False):
        g = g[~((g["model"] == skip[0]) & (g["versus"] == skip[1]))]
        if g.empty:
            continue
        parts = [_short_verdict(r) for r in g.itertuples(index=False)]
        if group == "after vs before correction":
            lines.append(f"Correction of {model_label(versus)}: " + "; ".join(parts) + ".")
        else:
            lines.append(f"Versus {model_label(versus)} (test R²): " + "; ".join(parts) + ".")
    return lines


def _short_verdict(r: object) -> str:
    d = r._asdict()  # type: ignore[attr-defined]  # a namedtuple row
    n, lo, hi = d["n_seeds"], d["ci_low"], d["ci_high"]
    word = "not resolved"
    if n >= 2 and (lo > 0 or hi < 0):
        word = "better" if lo > 0 else "worse"
    ci = f" [{lo:+.3f}, {hi:+.3f}]" if n >= 2 else ""
    return f"{model_label(d['model'])} {word} (Δ {d['mean_diff']:+.3f}{ci})"


def conclusions(
    claims: pd.DataFrame, comparisons: pd.DataFrame, failed: pd.DataFrame, ridge_model: str
) -> str:
    """One short paragraph of what this run concludes, from its verdicts."""
    verdicts = dict(zip(claims["claim"], claims["verdict"], strict=True))
    values = dict(zip(claims["claim"], claims["this run"], strict=True))

    def nets(what: str) -> str:  # "U-Net 0.885 [...]; U-Net++ ..." of the nets' `what` claims
        rows = [c for c in claims["claim"] if c.endswith(what) and "Ridge" not in c]
        return "; ".join(f"{c.removesuffix(' ' + what)} {values[c]}" for c in rows)

    out = []
    if nets("train R²"):
        out.append(f"The nets fit their training area ({nets('train R²')}, paper 0.97)")
    if nets("test R²"):
        out.append(f"and reach test R² {nets('test R²')} (paper 0.78 and 0.84).")
    key = "U-Net++ beats U-Net on the test area (R²)"
    if key in verdicts:
        out.append(f"The paper's comparison, U-Net++ over U-Net: {verdicts[key]}.")
    r2 = comparisons[comparisons["metric"] == "r2"]
    for versus, g in r2[r2["group"] == "net vs baseline"].groupby("versus", sort=False):
        ok = g["n_seeds"] >= 2
        better, worse = int((ok & (g["ci_low"] > 0)).sum()), int((ok & (g["ci_high"] < 0)).sum())
        what = "the pixel-wise Ridge" if versus == ridge_model else model_label(str(versus))
        out.append(
            f"Against {what}, {better} of {len(g)} nets are better on test R² and {worse} "
            "worse (resolved intervals)."
        )
    cross = "The nets over-estimate below a height and under-estimate above it"
    if cross in verdicts:
        out.append(f"Over- then under-estimation with height: {verdicts[cross]}.")
    n_bad = int(failed["failed_to_fit"].sum())
    if n_bad:
        out.append(f"{n_bad} training(s) failed to fit (named below).")
    return " ".join(out)


def findings_rst(
    aoi: str,
    claims: pd.DataFrame,
    paper_table: pd.DataFrame,
    beyond_table: pd.DataFrame,
    comparisons: pd.DataFrame,
    details: dict[str, pd.DataFrame],
    ridge_model: str = "ridge",
) -> str:
    """The findings of one AOI as reStructuredText: claims first, then tables and checks.

    ``details``: ``training``, ``failed``, ``areas``, ``seams``, ``shift`` and ``per_seed``
    (the tidy tables behind the checks and the Details section).
    """
    from aefheight.report.claims import RULE

    title = f"Findings: AOI {aoi}"
    out = [title, "-" * len(title), ""]
    out.append(conclusions(claims, comparisons, details["failed"], ridge_model) + "\n")
    out.append(
        rst_table(claims, "The paper's claims and this run (mean [95 % interval] over seeds)")
    )
    out.append(RULE + "\n")
    out.append(rst_table(paper_table, "The paper's table: mean ± SD over seeds"))
    if not beyond_table.empty:
        out.append(rst_table(beyond_table, "Beyond the paper: mean ± SD over seeds"))
    out.append("dh = prediction - reference. Per-seed values: Details, below, and per_seed.csv.\n")
    pair = ("unetplusplus", "unet")
    main = comparisons[(comparisons["model"] == pair[0]) & (comparisons["versus"] == pair[1])]
    lines = [f"* **The paper's comparison**: {v}" for v in main["verdict"]]
    lines += [f"* {v}" for v in _grouped_verdicts(comparisons, pair)]
    out += ["Verdicts (paired by seed, 95 % t-interval of the difference):", "", *lines, ""]
    checks = [_training_sentence(details["training"], details["failed"])]
    checks += [_seam_sentence(details["seams"]), _split_sentence(details["areas"])]
    if not details["shift"].empty:
        st = details["shift"].iloc[0]
        checks.append(
            f"Distribution shift: the test area lies {st['mean_shift_m']:.1f} m higher on "
            f"average (KS {st['ks_statistic']:.2f}, Wasserstein {st['wasserstein_m']:.1f} m); "
            f"{st['test_above_train_p95_pct']:.1f} % of test pixels lie above the training "
            f"area's 95th percentile, {st['test_outside_train_range_pct']:.1f} % outside its "
            "whole range."
        )
    out += ["Checks:", "", *(f"* {c}" for c in checks if c), ""]
    out += ["Details", "~~~~~~~", "", "Every paired comparison:", ""]
    out += [f"* {v}" for v in comparisons["verdict"]] + [""]
    out.append(rst_table(details["per_seed"], "Every seed"))
    return "\n".join(out) + "\n\n"


# Snakemake's report sets its first page in a narrow (max-w-lg) column centred in the window, so
# a long page opened mid-way and tables wrapped; widen it and start it at the top.
WIDE_PAGE = """.. raw:: html

   <style>.prose.max-w-lg { max-width: 80rem; } .h-screen.overflow-auto { align-items:
   flex-start; } .prose table { font-size: 0.85em; }</style>

"""


def front_page(fragments: list[str], methods: str) -> str:
    """The report's first page: the title, every AOI's findings, then the methods text."""
    lines = methods.splitlines()
    title, rest = lines[:2], lines[2:]  # the methods file starts with its title and underline
    head = "\n".join(title) + "\n\n" + WIDE_PAGE
    return head + "".join(fragments) + "\n".join(rest) + "\n"
