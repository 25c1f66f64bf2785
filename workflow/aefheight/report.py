"""The steps behind the study's tables and the report's first page (rules tables, report_front).

Use :func:`write_tables` on one AOI's tidy CSVs (metrics, shift, split areas, histories,
errors by height, seam checks): it writes the paper tables (Markdown, LaTeX), the paired
comparisons, the training and seam tables, the crossover heights and the AOI's findings.
:func:`write_front` puts every AOI's findings before the methods text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from . import tables
from .files import write_csv
from .findings import findings_rst, front_page
from .names import model_label


def _shift_markdown(
    head: pd.DataFrame,
    comps: pd.DataFrame,
    quant: pd.DataFrame,
    stats: pd.DataFrame,
    cross: pd.DataFrame,
) -> str:
    """The distribution-shift page: headline, verdicts, heights per split, crossover."""
    return (
        tables.to_markdown(head, "Headline: " + tables.NOTE)
        + "\n"
        + "\n".join(f"* {v}" for v in comps["verdict"])
        + "\n\n"
        + tables.to_markdown(tables.plain_table(quant, 1))
        + "\n"
        + tables.to_markdown(tables.plain_table(stats, 3))
        + "\n"
        + tables.to_markdown(
            tables.plain_table(cross, 1),
            "crossover: reference height where the bias turns from over- to under-estimation",
        )
    )


def write_tables(
    *,
    aoi: str,
    nets: list[str],
    baselines: list[str],
    ridge_models: list[str],
    corrected: dict[str, str],
    roles: dict[str, str],
    synthetic: bool,
    max_epochs: int,
    inputs: dict[str, Any],
    outputs: dict[str, Path],
) -> None:
    """The ``tables`` rule: every table of one AOI and its findings.

    Args:
        aoi: the AOI's name (in the findings' title).
        nets: model names of the nets.
        baselines: model names of the baselines (Ridge, coarse DEM).
        ridge_models: the Ridge baselines (the pixel-wise one and its controls: the paper's
            table; the other models make the beyond-the-paper table).
        corrected: corrected prediction name -> the model it corrects.
        roles: the paper's models (``unet``, ``unetplusplus``, ``ridge``: the pixel-wise
            Ridge) -> this run's model names.
        synthetic: whether the AOI is the calibrated synthetic one (its Ridge and heights are
            calibration targets, not findings).
        max_epochs: the training cap (the training table says when it was hit).
        inputs: ``metrics``, ``quantiles``, ``stats``, ``areas`` (one CSV path each) and
            ``histories``, ``by_height``, ``seams``, ``fits`` (lists of CSV paths).
        outputs: ``claims``, ``paper_md``, ``paper_tex``, ``md`` (every metric), ``per_seed``,
            ``comparisons``, ``training``, ``training_md``, ``seam_table``, ``crossover``,
            ``shift_md``, ``shift_tex``, ``findings``, ``corrections``.
    """
    from .claims import claims_table

    metrics = pd.read_csv(inputs["metrics"])
    tables.write_text(tables.to_markdown(tables.metrics_table(metrics), tables.NOTE), outputs["md"])
    cross = tables.crossover_table([pd.read_csv(p) for p in inputs["by_height"]])
    write_csv(cross, outputs["crossover"])
    failed = tables.failed_fits(metrics, nets, roles.get("ridge"))
    paper, beyond, seeds = _paper_tables(metrics, roles, ridge_models, failed, outputs)
    comps = tables.comparisons(metrics, nets, baselines, corrected=corrected)
    write_csv(comps, outputs["comparisons"])
    train, seams = _check_tables(inputs, max_epochs, outputs)
    quant, stats = pd.read_csv(inputs["quantiles"]), pd.read_csv(inputs["stats"])
    _shift_tables(paper, comps, quant, stats, cross, outputs)
    claims = claims_table(metrics, roles, stats, quant, cross, synthetic)
    write_csv(claims, outputs["claims"])
    details = {
        "training": train,
        "failed": failed,
        "areas": pd.read_csv(inputs["areas"]),
        "seams": seams,
        "shift": stats,
        "per_seed": tables.plain_table(seeds.assign(model=seeds["model"].map(model_label)), 3),
    }
    findings = findings_rst(
        aoi, claims, paper, beyond, comps, details, ridge_model=roles.get("ridge", "")
    )
    tables.write_text(findings, outputs["findings"])


def _check_tables(
    inputs: dict[str, Any], max_epochs: int, outputs: dict[str, Path]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training, seam and correction tables (the findings' checks), written as CSV."""
    train = tables.training_summary([pd.read_csv(p) for p in inputs["histories"]], max_epochs)
    write_csv(train, outputs["training"])
    tables.write_text(tables.to_markdown(tables.plain_table(train, 2)), outputs["training_md"])
    seams = pd.concat([pd.read_csv(p) for p in inputs["seams"]], ignore_index=True)
    write_csv(seams, outputs["seam_table"])
    fits = [pd.read_csv(p) for p in inputs["fits"]]
    write_csv(
        pd.concat(fits, ignore_index=True) if fits else pd.DataFrame(), outputs["corrections"]
    )
    return train, seams


def _paper_tables(
    metrics: pd.DataFrame,
    roles: dict[str, str],
    ridge_models: list[str],
    failed: pd.DataFrame,
    outputs: dict[str, Path],
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """The paper's table, the beyond-the-paper table and the per-seed table, written out.

    The paper's table holds its models and the Ridge controls, the other every other
    prediction; as Markdown and LaTeX, the per-seed values as CSV.
    """
    paper_models = [roles[r] for r in ("unet", "unetplusplus", "ridge") if r in roles]
    paper_models += [r for r in ridge_models if r not in paper_models]  # the controls
    beyond_models = [m for m in dict.fromkeys(metrics["model"]) if m not in paper_models]
    paper, beyond = (tables.headline(metrics, ms, failed) for ms in (paper_models, beyond_models))
    tables.write_text(
        tables.to_markdown(paper, "The paper's table. " + tables.NOTE)
        + ("\n" + tables.to_markdown(beyond, "Beyond the paper.") if len(beyond) else ""),
        outputs["paper_md"],
    )
    tables.write_text(
        tables.to_latex(paper, "The paper's table: mean ± SD over seeds.", "tab:paper")
        + (tables.to_latex(beyond, "Beyond the paper.", "tab:beyond") if len(beyond) else ""),
        outputs["paper_tex"],
    )
    seeds = tables.per_seed(metrics, paper_models + beyond_models, failed)
    write_csv(seeds, outputs["per_seed"])
    return paper, beyond, seeds


def _shift_tables(
    head: pd.DataFrame,
    comps: pd.DataFrame,
    quant: pd.DataFrame,
    stats: pd.DataFrame,
    cross: pd.DataFrame,
    outputs: dict[str, Path],
) -> None:
    """The distribution-shift page (Markdown) and its LaTeX tables."""
    tables.write_text(_shift_markdown(head, comps, quant, stats, cross), outputs["shift_md"])
    tables.write_text(
        tables.to_latex(tables.plain_table(quant, 1), "Reference height per split.", "tab:heights")
        + tables.to_latex(tables.plain_table(stats, 3), "Train vs test height shift.", "tab:shift"),
        outputs["shift_tex"],
    )


def write_front(findings: list[Path], methods: Path, out: Path) -> None:
    """The ``report_front`` rule: every AOI's findings, then the methods text."""
    fragments = [Path(p).read_text(encoding="utf-8") for p in findings]
    tables.write_text(front_page(fragments, Path(methods).read_text(encoding="utf-8")), out)


def collect_metrics(per_model: list[Path], aoi: str, out: Path) -> None:
    """The ``collect_metrics`` rule: one AOI's per-model metrics in one CSV, AOI first."""
    df = pd.concat([pd.read_csv(p).assign(aoi=aoi) for p in per_model], ignore_index=True)
    write_csv(df[["aoi", *[c for c in df.columns if c != "aoi"]]], out)
