"""The findings: the report's first page (headline table, verdicts), before the methods.

Use :func:`findings_rst` per AOI on the tidy tables of the ``tables`` step, and
:func:`front_page` to put every AOI's findings in front of the methods text
(``workflow/report/workflow.rst``, still rendered by Snakemake's report with the config).
"""

from __future__ import annotations

import pandas as pd

from .names import CODES


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


def _training_sentence(training: pd.DataFrame) -> str:
    if training.empty:
        return "No net was trained."
    fired = int((training["stopped"] == "early stopping").sum())
    return (
        f"Early stopping fired in {fired} of {len(training)} trainings (epochs run "
        f"{training['epochs_run'].min()}-{training['epochs_run'].max()} of at most "
        f"{training['max_epochs'].max()}; best epochs {training['best_epoch'].min()}-"
        f"{training['best_epoch'].max()}; {training['steps'].min()}-{training['steps'].max()} "
        f"optimizer steps)."
        + (" A cap was hit: those nets may be under-trained." if fired < len(training) else "")
    )


def _seam_sentence(seams: pd.DataFrame) -> str:
    seams = seams[seams["window_px"] > 0]  # the coarse DEM has no prediction windows
    r = seams["seam_centre_ratio"].dropna()
    if r.empty:
        return ""
    w = seams.iloc[0]
    return (
        f"Seam check (mean ``|dh|`` on prediction-window seams / window centres, "
        f"{int(w['window_px'])} px windows, {int(w['overlap_px'])} px overlap, trained on "
        f"{int(w['train_patch_px'])} px patches): {r.min():.2f}-{r.max():.2f} over "
        f"{len(r)} predictions (1 = seam-free)."
    )


def findings_rst(
    aoi: str,
    headline: pd.DataFrame,
    comparisons: pd.DataFrame,
    training: pd.DataFrame,
    areas: pd.DataFrame,
    seams: pd.DataFrame,
    shift: pd.DataFrame,
) -> str:
    """The findings of one AOI as reStructuredText: table first, then verdicts and checks."""
    title = f"Findings: AOI {aoi}"
    out = [title, "-" * len(title), ""]
    out.append(rst_table(headline, "Test and train accuracy over seeds"))
    out.append(
        "Cells: mean ± SD over seeds (median; per-seed values in seed order). "
        "dh = prediction - reference.\n"
    )
    out.append("Verdicts (paired by seed, 95 % t-interval of the difference):\n")
    r2 = comparisons[comparisons["metric"] == "r2"]
    for group, g in r2.groupby("group", sort=False) if "group" in r2 else [("", r2)]:
        out += [f"{group.capitalize()}:", ""] if group else []
        out += [f"* {v}" for v in g["verdict"]]
        out.append("")
    if not shift.empty:
        st = shift.iloc[0]
        out.append(
            f"Distribution shift: the test area lies {st['mean_shift_m']:.1f} m higher on "
            f"average (KS {st['ks_statistic']:.2f}, Wasserstein {st['wasserstein_m']:.1f} m); "
            f"{st['test_outside_train_range_pct']:.1f} % of test pixels are outside the "
            "training height range.\n"
        )
    out += [_training_sentence(training), "", _split_sentence(areas), "", _seam_sentence(seams)]
    return "\n".join(out) + "\n\n"


def front_page(fragments: list[str], methods: str) -> str:
    """The report's first page: the title, every AOI's findings, then the methods text."""
    lines = methods.splitlines()
    title, rest = lines[:2], lines[2:]  # the methods file starts with its title and underline
    return "\n".join(title) + "\n\n" + "".join(fragments) + "\n".join(rest) + "\n"
