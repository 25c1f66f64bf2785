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

from aefheight.core.files import write_csv
from aefheight.core.names import model_label
from aefheight.core.steps import step
from aefheight.report import tables as tbl
from aefheight.report.findings import findings_rst, front_page


def _shift_markdown(
    head: pd.DataFrame,
    comps: pd.DataFrame,
    quant: pd.DataFrame,
    stats: pd.DataFrame,
    cross: pd.DataFrame,
) -> str:
    """The distribution-shift page: headline, verdicts, heights per split, crossover."""
    return (
        tbl.to_markdown(head, "Headline: " + tbl.NOTE)
        + "\n"
        + "\n".join(f"* {v}" for v in comps["verdict"])
        + "\n\n"
        + tbl.to_markdown(tbl.plain_table(quant, 1))
        + "\n"
        + tbl.to_markdown(tbl.plain_table(stats, 3))
        + "\n"
        + tbl.to_markdown(
            tbl.plain_table(cross, 1),
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
    from aefheight.report.claims import claims_table

    metrics = pd.read_csv(inputs["metrics"])
    tbl.write_text(tbl.to_markdown(tbl.metrics_table(metrics), tbl.NOTE), outputs["md"])
    cross = tbl.crossover_table([pd.read_csv(p) for p in inputs["by_height"]])
    write_csv(cross, outputs["crossover"])
    failed = tbl.failed_fits(metrics, nets, roles.get("ridge"))
    paper, beyond, seeds = _paper_tables(metrics, roles, ridge_models, failed, outputs)
    comps = tbl.comparisons(metrics, nets, baselines, corrected=corrected)
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
        "per_seed": tbl.plain_table(seeds.assign(model=seeds["model"].map(model_label)), 3),
    }
    findings = findings_rst(
        aoi, claims, paper, beyond, comps, details, ridge_model=roles.get("ridge", "")
    )
    tbl.write_text(findings, outputs["findings"])


def _check_tables(
    inputs: dict[str, Any], max_epochs: int, outputs: dict[str, Path]
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The training, seam and correction tables (the findings' checks), written as CSV."""
    train = tbl.training_summary([pd.read_csv(p) for p in inputs["histories"]], max_epochs)
    write_csv(train, outputs["training"])
    tbl.write_text(tbl.to_markdown(tbl.plain_table(train, 2)), outputs["training_md"])
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
    paper, beyond = (tbl.headline(metrics, ms, failed) for ms in (paper_models, beyond_models))
    tbl.write_text(
        tbl.to_markdown(paper, "The paper's table. " + tbl.NOTE)
        + ("\n" + tbl.to_markdown(beyond, "Beyond the paper.") if len(beyond) else ""),
        outputs["paper_md"],
    )
    tbl.write_text(
        tbl.to_latex(paper, "The paper's table: mean ± SD over seeds.", "tab:paper")
        + (tbl.to_latex(beyond, "Beyond the paper.", "tab:beyond") if len(beyond) else ""),
        outputs["paper_tex"],
    )
    seeds = tbl.per_seed(metrics, paper_models + beyond_models, failed)
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
    """The distribution-shift page (Markdown) and its LaTeX tbl."""
    tbl.write_text(_shift_markdown(head, comps, quant, stats, cross), outputs["shift_md"])
    tbl.write_text(
        tbl.to_latex(tbl.plain_table(quant, 1), "Reference height per split.", "tab:heights")
        + tbl.to_latex(tbl.plain_table(stats, 3), "Train vs test height shift.", "tab:shift"),
        outputs["shift_tex"],
    )


def write_front(findings: list[Path], methods: Path, out: Path) -> None:
    """The ``report_front`` rule: every AOI's findings, then the methods text."""
    fragments = [Path(p).read_text(encoding="utf-8") for p in findings]
    tbl.write_text(front_page(fragments, Path(methods).read_text(encoding="utf-8")), out)


def write_metrics_table(per_model: list[Path], aoi: str, out: Path) -> None:
    """The ``collect_metrics`` rule: one AOI's per-model metrics in one CSV, AOI first."""
    df = pd.concat([pd.read_csv(p).assign(aoi=aoi) for p in per_model], ignore_index=True)
    write_csv(df[["aoi", *[c for c in df.columns if c != "aoi"]]], out)


@step
def tables(
    *,
    aoi: str,
    nets: list[str],
    baselines: list[str],
    ridge_models: list[str],
    corrected: list[str],
    roles: dict[str, Any],
    synthetic: int,
    max_epochs: int,
    metrics: Path,
    quantiles: Path,
    stats: Path,
    areas: Path,
    histories: list[Path],
    by_height: list[Path],
    seams: list[Path],
    fits: list[Path],
    claims: Path,
    paper_md: Path,
    paper_tex: Path,
    md: Path,
    per_seed: Path,
    comparisons: Path,
    training: Path,
    training_md: Path,
    seam_table: Path,
    crossover: Path,
    shift_md: Path,
    shift_tex: Path,
    findings: Path,
    corrections: Path,
) -> None:
    """Write one AOI's tables, paired comparisons and findings (see :func:`write_tables`).

    ``corrected`` holds ``<corrected>=<model>`` pairs; ``synthetic`` is 1 for the calibrated
    synthetic AOI.
    """
    inputs: dict[str, Any] = dict(metrics=metrics, quantiles=quantiles, stats=stats, areas=areas)
    inputs |= dict(histories=histories, by_height=by_height, seams=seams, fits=fits)
    outputs = dict(claims=claims, paper_md=paper_md, paper_tex=paper_tex, md=md)
    outputs |= dict(per_seed=per_seed, comparisons=comparisons, training=training)
    outputs |= dict(training_md=training_md, seam_table=seam_table, crossover=crossover)
    outputs |= dict(shift_md=shift_md, shift_tex=shift_tex, findings=findings)
    write_tables(
        aoi=aoi,
        nets=nets,
        baselines=baselines,
        ridge_models=ridge_models,
        corrected=dict(pair.split("=", 1) for pair in corrected),
        roles=roles,
        synthetic=bool(synthetic),
        max_epochs=max_epochs,
        inputs=inputs,
        outputs={**outputs, "corrections": corrections},
    )


@step
def report_front(*, findings: list[Path], methods: Path, front: Path) -> None:
    """Write the report's first page: every AOI's findings, then the methods."""
    write_front(findings, methods, front)


@step
def collect_metrics(*, aoi: str, per_model: list[Path], table: Path) -> None:
    """Write one AOI's per-model metrics as one CSV."""
    write_metrics_table(per_model, aoi, table)
