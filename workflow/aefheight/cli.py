"""The ``aefheight`` command line: one subcommand per workflow rule, named as the rule.

Rule ``plot_seeds`` runs ``python -m aefheight plot-seeds``; every file the rule declares
is one flag named as the rule names it (``--store-embeddings {input.store_embeddings}``), and
each subcommand calls one function of the step's module (the ``STEPS`` table below: from a
rule name to the function doing the work in one hop). A user can run any step by hand with the
same arguments (``snakemake -p`` prints them). ``--settings`` takes the step's config section
as JSON; the schema fills what it leaves out, so a step run by hand behaves as in the workflow.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import AefHeightError, first_line
from .settings import from_mapping, parse_json

log = logging.getLogger("aefheight")
A = argparse.Namespace


def _settings(cls: Any, a: A, section: str | None = None, flag: str = "settings") -> Any:
    return from_mapping(cls, parse_json(getattr(a, flag), f"--{flag}"), section)


def synthesize(a: A) -> None:
    """Run ``synthesize``: write a synthetic AOI's embeddings, DSM, land cover, coarse DEM."""
    from .synthetic import SyntheticSettings, write_synthetic

    s = _settings(SyntheticSettings, a, f"aois.{a.aoi}.synthetic")
    write_synthetic(s, a.embeddings, a.dsm, a.landcover, a.coarse_dem)


def tile(a: A) -> None:
    """Run ``tile``: cut the AOI's rasters into the patch store and its index."""
    from .patches import TilingSettings, tile

    s = _settings(TilingSettings, a)
    tile(
        a.embeddings, a.dsm, s, a.index, a.store_embeddings, a.store_dsm, a.coarse_dem,
        a.store_coarse_dem,
    )  # fmt: skip


def tile_shard(a: A) -> None:
    """Run ``tile-shard``: the patch store and index of one shard's patches."""
    from .patches import TilingSettings, tile
    from .shards import ShardingSettings, shard_of

    window = shard_of(a.embeddings, a.shard, _settings(ShardingSettings, a, flag="sharding"))
    tile(
        a.embeddings, a.dsm, _settings(TilingSettings, a), a.index, a.store_embeddings,
        a.store_dsm, a.coarse_dem, a.store_coarse_dem, window,
    )  # fmt: skip


def merge_patches(a: A) -> None:
    """Run ``merge-patches``: one index over every shard's patch store."""
    from .patches import merge_shard_indexes

    merge_shard_indexes(a.indexes, a.index)


def split(a: A) -> None:
    """Run ``split``: write the split's patch GeoPackage, label raster and areas table."""
    from .split import SplitSettings, write_split

    write_split(a.index, a.grid, a.gpkg, a.raster, a.areas, _settings(SplitSettings, a))


def split_fold(a: A) -> None:
    """Run ``split-fold``: the split holding out k-fold strip ``--fold`` (same outputs)."""
    from .split import SplitSettings, write_split

    s = _settings(SplitSettings, a)
    write_split(a.index, a.grid, a.gpkg, a.raster, a.areas, s, fold=a.fold)


def aoa(a: A) -> None:
    """Run ``aoa``: the dissimilarity index raster of one split and its AOA table."""
    from .aoa import AOASettings, write_aoa
    from .split import SplitSettings

    sp = _settings(SplitSettings, a, flag="split_settings")
    s = _settings(AOASettings, a)
    write_aoa(a.embeddings, a.split, a.aoa_tif, a.aoa_csv, s, sp.axis, sp.folds)


def aoa_metrics(a: A) -> None:
    """Run ``aoa-metrics``: every prediction's metrics inside vs outside the AOA."""
    from .aoa import write_aoa_metrics

    write_aoa_metrics(a.predictions, a.dsm, a.split, a.aoa_tif, a.metrics)


def kfold(a: A) -> None:
    """Run ``kfold``: the k-fold tables, comparisons, AOA table and findings of one AOI."""
    from .kfold import write_kfold

    step = STEPS["kfold"]
    write_kfold(
        aoi=a.aoi,
        nets=a.nets,
        baselines=a.baselines,
        inputs={k: getattr(a, k) for k in (*step.inputs, *step.lists)},
        outputs={k: getattr(a, k) for k in step.outputs},
    )


def plot_kfold(a: A) -> None:
    """Run ``plot-kfold``: held-out heights and test errors per fold."""
    import pandas as pd

    from .figures import kfold_errors

    kfold_errors(pd.read_csv(a.table), [pd.read_csv(p) for p in a.quantiles], a.png, a.pdf)


def plot_aoa(a: A) -> None:
    """Run ``plot-aoa``: the area-of-applicability map of every split."""
    from .figures import aoa_maps
    from .names import split_names

    aoa_maps(a.aoa_tifs, a.splits, split_names(len(a.aoa_tifs) - 1), a.png, a.pdf)


def train_net(a: A) -> None:
    """Run ``train-net``: train one net for one seed (checkpoint, history, resume state)."""
    from .models import ModelSettings
    from .train import TrainSettings, train_net

    ms = _settings(ModelSettings, a, f"models.{a.model}", "model_settings")
    ts = _settings(TrainSettings, a)
    train_net(
        a.store_embeddings, a.store_dsm, a.split_gpkg, a.split_tif, ms, ts, a.seed, a.model,
        a.checkpoint, a.history, a.resume, a.threads, a.store_coarse_dem,
    )  # fmt: skip


def train_ridge(a: A) -> None:
    """Run ``train-ridge``: fit one Ridge baseline for one seed (checkpoint, history)."""
    from .models import ModelSettings
    from .train import train_ridge

    ms = _settings(ModelSettings, a, f"models.{a.model}", "model_settings")
    train_ridge(
        a.store_embeddings, a.store_dsm, a.split_gpkg, a.split_tif, ms, a.seed, a.model,
        a.checkpoint, a.history,
    )  # fmt: skip


def predict(a: A) -> None:
    """Run ``predict``: predict the whole AOI with one checkpoint into a COG."""
    from .predict import PredictSettings, predict_raster

    s = _settings(PredictSettings, a)
    meta = {"model": a.model, "seed": str(a.seed)}
    predict_raster(
        a.embeddings, a.checkpoint, a.prediction, s, a.threads, meta=meta,
        coarse_dem_path=a.coarse_dem,
    )  # fmt: skip


def predict_shard(a: A) -> None:
    """Run ``predict-shard``: one shard of the whole-AOI prediction (a tiled GeoTIFF)."""
    from .predict import PredictSettings, predict_raster
    from .shards import ShardingSettings, shard_of

    window = shard_of(a.embeddings, a.shard, _settings(ShardingSettings, a, flag="sharding"))
    meta = {"model": a.model, "seed": str(a.seed)}
    predict_raster(
        a.embeddings, a.checkpoint, a.prediction, _settings(PredictSettings, a), a.threads,
        meta=meta, coarse_dem_path=a.coarse_dem, window=window,
    )  # fmt: skip


def assemble_prediction(a: A) -> None:
    """Run ``assemble-prediction``: the shards' predictions as one COG of the AOI."""
    from .raster import mosaic_cog

    mosaic_cog(a.shards, a.prediction)


def predict_coarse_dem(a: A) -> None:
    """Run ``predict-coarse-dem``: the coarse DEM itself as a prediction (no learning)."""
    from .correction import write_coarse_dem_prediction

    write_coarse_dem_prediction(a.coarse_dem, a.embeddings, a.prediction, a.model, a.seed)


def correct(a: A) -> None:
    """Run ``correct``: a bias-corrected copy of one prediction, by one method."""
    from .correction import CorrectionSettings, correct

    s = _settings(CorrectionSettings, a)
    correct(
        a.prediction, a.split, a.method, s, a.seed, a.corrected, a.fit, a.model, a.dsm,
        a.coarse_dem,
    )  # fmt: skip


def evaluate(a: A) -> None:
    """Run ``evaluate``: score one prediction per split and write its five tables."""
    from .metrics import write_evaluation

    outputs = {k: getattr(a, k) for k in ("metrics", "samples", "by_height", "by_class", "seams")}
    write_evaluation(a.prediction, a.dsm, a.split, a.landcover, a.model, a.seed, outputs)


def evaluate_shard(a: A) -> None:
    """Run ``evaluate-shard``: the partial statistics of one prediction in one shard."""
    from .metrics import evaluate_partials, write_partials
    from .shards import ShardingSettings, shard_of

    window = shard_of(a.prediction, a.shard, _settings(ShardingSettings, a, flag="sharding"))
    parts = evaluate_partials(a.prediction, a.dsm, a.split, a.landcover, window, seed=a.seed)
    write_partials(parts, a.partials)


def merge_evaluation(a: A) -> None:
    """Run ``merge-evaluation``: ``evaluate``'s five tables from every shard's statistics."""
    from .metrics import write_merged_evaluation

    outputs = {k: getattr(a, k) for k in ("metrics", "samples", "by_height", "by_class", "seams")}
    write_merged_evaluation(a.partials, a.model, a.seed, outputs)


def collect_metrics(a: A) -> None:
    """Run ``collect-metrics``: concatenate one AOI's per-model metrics into one CSV."""
    from .report import collect_metrics

    collect_metrics(a.per_model, a.aoi, a.table)


def height_shift(a: A) -> None:
    """Run ``height-shift``: write the height histograms, quantiles and shift statistics."""
    from .metrics import write_height_shift

    write_height_shift(a.dsm, a.split, a.embeddings, a.hist, a.quantiles, a.stats)


def tables(a: A) -> None:
    """Run ``tables``: write every table and the findings of one AOI."""
    from .report import write_tables

    write_tables(
        aoi=a.aoi,
        nets=a.nets,
        baselines=a.baselines,
        ridge_models=a.ridge_models,
        corrected=dict(pair.split("=", 1) for pair in a.corrected),
        roles=parse_json(a.roles, "--roles"),
        synthetic=bool(a.synthetic),
        max_epochs=a.max_epochs,
        inputs={k: getattr(a, k) for k in (*STEPS["tables"].inputs, *STEPS["tables"].lists)},
        outputs={k: getattr(a, k) for k in STEPS["tables"].outputs},
    )


def report_front(a: A) -> None:
    """Run ``report-front``: write the report's first page (findings, then methods)."""
    from .report import write_front

    write_front(a.findings, a.methods, a.front)


def split_map(a: A) -> None:
    """Run ``split-map``: draw the split map figure (PNG and PDF)."""
    from .figures import split_map

    split_map(a.gpkg, a.raster, a.dsm, a.png, a.pdf)


def plot_seeds(a: A) -> None:
    """Run ``plot-seeds``: every seed's test R² and RMSE per model, and the paired intervals."""
    import pandas as pd

    from .figures import seed_figure

    pairs = [(p.split("=", 1)[0], p.split("=", 1)[1]) for p in a.pairs]
    seed_figure(pd.read_csv(a.metrics), pairs, a.png, a.pdf)


def plot_pred_vs_ref(a: A) -> None:
    """Run ``plot-pred-vs-ref``: predicted vs reference and dh, median seed per model."""
    from .figures import write_sample_figures

    write_sample_figures(a.samples, a.metrics, a.png, a.pdf, a.all_seeds, a.dh_png, a.dh_pdf)


def plot_residual_maps(a: A) -> None:
    """Run ``plot-residual-maps``: every model's dh map (median seed), all seeds in a PDF."""
    from .figures import write_residual_maps

    write_residual_maps(a.predictions, a.metrics, a.dsm, a.split, a.png, a.pdf, a.all_seeds)


def plot_error_by_height(a: A) -> None:
    """Run ``plot-error-by-height``: bias per height bin, a panel per model family."""
    import pandas as pd

    from .figures import error_by_height_panels

    error_by_height_panels([pd.read_csv(p) for p in a.by_height], a.png, a.pdf)


def plot_height_shift(a: A) -> None:
    """Run ``plot-height-shift``: draw the reference-height distribution per split."""
    import pandas as pd

    from .figures import height_distributions

    height_distributions(pd.read_csv(a.hist), pd.read_csv(a.stats), a.png, a.pdf)


def plot_loss_curves(a: A) -> None:
    """Run ``plot-loss-curves``: every net's validation error over steps, a line per seed."""
    import pandas as pd

    from .figures import loss_curve_panels

    loss_curve_panels([pd.read_csv(p) for p in a.histories], a.png, a.pdf)


def fetch_aef_index(a: A) -> None:
    """Run ``fetch-aef-index``: fetch one source's AEF tile index and its checksum."""
    from .sources import steps

    steps.run_index(a.source, parse_json(a.downloads, "--downloads"), a.index, a.checksum)


def fetch_embeddings(a: A) -> None:
    """Run ``fetch-embeddings``: download one AOI's AEF embeddings onto its grid."""
    from .sources import steps

    steps.run_embeddings(
        a.aoi, parse_json(a.settings), parse_json(a.downloads, "--downloads"), a.embeddings,
        a.cache_dir, a.index, a.threads, a.provenance, a.aoi_file,
    )  # fmt: skip


def fetch_dsm(a: A) -> None:
    """Run ``fetch-dsm``: download one AOI's reference DSM and co-register it."""
    from .sources import steps

    steps.run_dsm(
        a.aoi, parse_json(a.settings), parse_json(a.downloads, "--downloads"), a.dsm,
        a.cache_dir, a.provenance, a.aoi_file, a.local_dsm,
    )  # fmt: skip


def fetch_coarse_dem(a: A) -> None:
    """Run ``fetch-coarse-dem``: GLO-30 onto one AOI's grid and its reference's datum."""
    from .sources import steps

    steps.run_coarse_dem(
        a.aoi, parse_json(a.settings), parse_json(a.downloads, "--downloads"), a.reference,
        a.coarse_dem, a.cache_dir, a.provenance, a.aoi_file,
    )  # fmt: skip


@dataclass(frozen=True)
class Step:
    """A subcommand: its function and flags (each named as the rule's input/output/param)."""

    run: Callable[[A], None]
    about: str
    inputs: tuple[str, ...] = ()  # one file each
    outputs: tuple[str, ...] = ()
    lists: tuple[str, ...] = ()  # inputs of several files (expand)
    optional: tuple[str, ...] = ()  # inputs some AOIs lack (a flag given or not)
    values: tuple[str, ...] = ()  # wildcards and params, required strings
    settings: tuple[str, ...] = ()  # JSON config sections
    dirs: tuple[str, ...] = ()  # cache folders (not outputs: shared between jobs)


STEPS: dict[str, Step] = {
    "synthesize": Step(
        synthesize, "make a synthetic AOI",
        outputs=("embeddings", "dsm", "landcover", "coarse_dem"),
        values=("aoi",), settings=("settings",),
    ),
    "tile": Step(
        tile, "cut the AOI into the patch store", inputs=("embeddings", "dsm", "coarse_dem"),
        outputs=("index", "store_embeddings", "store_dsm", "store_coarse_dem"),
        settings=("settings",),
    ),
    "tile-shard": Step(
        tile_shard, "cut one shard's patches into its patch store",
        inputs=("embeddings", "dsm", "coarse_dem"),
        outputs=("index", "store_embeddings", "store_dsm", "store_coarse_dem"),
        values=("shard",), settings=("settings", "sharding"),
    ),
    "merge-patches": Step(
        merge_patches, "one patch index over every shard's store", lists=("indexes",),
        outputs=("index",),
    ),
    "split": Step(
        split, "pixel-level spatial train/val/test split", inputs=("index", "grid"),
        outputs=("gpkg", "raster", "areas"), settings=("settings",),
    ),
    "split-fold": Step(
        split_fold, "the split holding out one k-fold strip", inputs=("index", "grid"),
        outputs=("gpkg", "raster", "areas"), values=("fold",), settings=("settings",),
    ),
    "aoa": Step(
        aoa, "area of applicability of one split (dissimilarity index COG)",
        inputs=("embeddings", "split"), outputs=("aoa_tif", "aoa_csv"),
        settings=("settings", "split_settings"),
    ),
    "aoa-metrics": Step(
        aoa_metrics, "metrics inside vs outside the area of applicability",
        inputs=("dsm", "split", "aoa_tif"), lists=("predictions",), outputs=("metrics",),
    ),
    "kfold": Step(
        kfold, "k-fold tables, comparisons with the single split, AOA table",
        inputs=("metrics", "aoa", "aoa_metrics"),
        lists=(
            "fold_metrics", "fold_quantiles", "fold_stats", "fold_aoa", "fold_aoa_metrics",
            "fold_histories",
        ),
        outputs=("table", "comparisons", "shift_response", "aoa_table", "md", "findings"),
        values=("aoi",),
    ),
    "plot-kfold": Step(
        plot_kfold, "figure: held-out heights and errors per fold", inputs=("table",),
        lists=("quantiles",), outputs=("png", "pdf"),
    ),
    "plot-aoa": Step(
        plot_aoa, "figure: area of applicability per split", lists=("aoa_tifs", "splits"),
        outputs=("png", "pdf"),
    ),
    "train-net": Step(
        train_net, "train one net (U-Net, U-Net++, ...)", inputs=("split_gpkg", "split_tif"),
        lists=("store_embeddings", "store_dsm", "store_coarse_dem"),  # one store per shard
        outputs=("checkpoint", "history", "resume"),  # resume: the rule's param (state)
        values=("model", "seed"),
        settings=("settings", "model_settings"),
    ),
    "train-ridge": Step(
        train_ridge, "fit one Ridge baseline", inputs=("split_gpkg", "split_tif"),
        lists=("store_embeddings", "store_dsm"),
        outputs=("checkpoint", "history"), values=("model", "seed"),
        settings=("model_settings",),
    ),
    "predict": Step(
        predict, "predict the whole AOI into a COG", inputs=("embeddings", "checkpoint"),
        optional=("coarse_dem",), outputs=("prediction",), values=("model", "seed"),
        settings=("settings",),
    ),
    "predict-shard": Step(
        predict_shard, "predict one shard of the AOI", inputs=("embeddings", "checkpoint"),
        optional=("coarse_dem",), outputs=("prediction",), values=("model", "seed", "shard"),
        settings=("settings", "sharding"),
    ),
    "assemble-prediction": Step(
        assemble_prediction, "the shards' predictions as one COG", lists=("shards",),
        outputs=("prediction",),
    ),
    "predict-coarse-dem": Step(
        predict_coarse_dem, "the coarse DEM as a prediction (no-learning baseline)",
        inputs=("coarse_dem", "embeddings"), outputs=("prediction",), values=("model", "seed"),
    ),
    "correct": Step(
        correct, "bias-correct one prediction (no test labels)", inputs=("prediction", "split"),
        optional=("dsm", "coarse_dem"), outputs=("corrected", "fit"),
        values=("model", "method", "seed"), settings=("settings",),
    ),
    "evaluate": Step(
        evaluate, "metrics of one prediction per split", inputs=("prediction", "dsm", "split"),
        optional=("landcover",), values=("model", "seed"),
        outputs=("metrics", "samples", "by_height", "by_class", "seams"),
    ),
    "evaluate-shard": Step(
        evaluate_shard, "partial statistics of one prediction in one shard",
        inputs=("prediction", "dsm", "split"), optional=("landcover",),
        values=("model", "seed", "shard"), outputs=("partials",), settings=("sharding",),
    ),
    "merge-evaluation": Step(
        merge_evaluation, "metrics of one prediction from its shards' statistics",
        lists=("partials",), values=("model", "seed"),
        outputs=("metrics", "samples", "by_height", "by_class", "seams"),
    ),
    "collect-metrics": Step(
        collect_metrics, "one AOI's metrics in one CSV", lists=("per_model",),
        outputs=("table",), values=("aoi",),
    ),
    "height-shift": Step(
        height_shift, "height distribution per split", inputs=("dsm", "split", "embeddings"),
        outputs=("hist", "quantiles", "stats"),
    ),
    "tables": Step(
        tables, "tables, paired comparisons and findings of one AOI",
        inputs=("metrics", "quantiles", "stats", "areas"),
        lists=("histories", "by_height", "seams", "fits"),
        outputs=(
            "claims", "paper_md", "paper_tex", "md", "per_seed", "comparisons", "training",
            "training_md", "seam_table", "crossover", "shift_md", "shift_tex", "findings",
            "corrections",
        ),
        values=("aoi", "max_epochs", "synthetic"),
        settings=("roles",),
    ),
    "report-front": Step(
        report_front, "the report's first page", inputs=("methods",), lists=("findings",),
        outputs=("front",),
    ),
    "split-map": Step(
        split_map, "figure: split map", inputs=("gpkg", "raster", "dsm"),
        outputs=("png", "pdf"),
    ),
    "plot-seeds": Step(
        plot_seeds, "figure: every seed per model, paired intervals", inputs=("metrics",),
        outputs=("png", "pdf"),
    ),
    "plot-pred-vs-ref": Step(
        plot_pred_vs_ref, "figures: predicted vs reference and dh, median seed per model",
        inputs=("metrics",), lists=("samples",),
        outputs=("png", "pdf", "all_seeds", "dh_png", "dh_pdf"),
    ),
    "plot-residual-maps": Step(
        plot_residual_maps, "figure: residual maps, median seed per model",
        inputs=("metrics", "dsm", "split"), lists=("predictions",),
        outputs=("png", "pdf", "all_seeds"),
    ),
    "plot-error-by-height": Step(
        plot_error_by_height, "figure: error by height", lists=("by_height",),
        outputs=("png", "pdf"),
    ),
    "plot-height-shift": Step(
        plot_height_shift, "figure: height distribution per split", inputs=("hist", "stats"),
        outputs=("png", "pdf"),
    ),
    "plot-loss-curves": Step(
        plot_loss_curves, "figure: loss curves", lists=("histories",), outputs=("png", "pdf")
    ),
    "fetch-aef-index": Step(
        fetch_aef_index, "fetch a source's AEF tile index", outputs=("index", "checksum"),
        values=("source",), settings=("downloads",),
    ),
    "fetch-embeddings": Step(
        fetch_embeddings, "download an AOI's AEF embeddings",
        optional=("index", "aoi_file"), outputs=("embeddings", "provenance"),
        values=("aoi",), settings=("settings", "downloads"), dirs=("cache_dir",),
    ),
    "fetch-dsm": Step(
        fetch_dsm, "download an AOI's reference DSM onto its grid",
        optional=("aoi_file", "local_dsm"), outputs=("dsm", "provenance"),
        values=("aoi",), settings=("settings", "downloads"), dirs=("cache_dir",),
    ),
    "fetch-coarse-dem": Step(
        fetch_coarse_dem, "download GLO-30 as an AOI's coarse DEM onto its grid",
        inputs=("reference",), optional=("aoi_file",), outputs=("coarse_dem", "provenance"),
        values=("aoi",), settings=("settings", "downloads"), dirs=("cache_dir",),
    ),
}  # fmt: skip
INTS = {"seed", "max_epochs", "fold", "synthetic"}  # values parsed as integers
# model names, possibly none; corrected: <corrected>=<model> pairs
LIST_VALUES = {
    "tables": ("nets", "baselines", "ridge_models", "corrected"),
    "kfold": ("nets", "baselines"),
    "plot-seeds": ("pairs",),  # <model>=<versus> pairs
}


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _add_step(sub: Any, name: str, step: Step) -> None:
    p = sub.add_parser(name, help=step.about, description=step.about)
    p.add_argument("--threads", type=int, default=1, help="CPU threads to use")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    for f in (*step.inputs, *step.outputs, *step.dirs):
        p.add_argument(_flag(f), type=Path, required=True)
    for f in step.lists:
        p.add_argument(_flag(f), type=Path, nargs="*", required=True)
    for f in step.optional:
        p.add_argument(_flag(f), type=Path)
    for f in step.values:
        p.add_argument(_flag(f), type=int if f in INTS else str, required=True)
    for f in LIST_VALUES.get(name, ()):
        p.add_argument(_flag(f), nargs="*", default=[])
    for f in step.settings:
        p.add_argument(_flag(f), default="{}", help="JSON object of the config section")
    p.set_defaults(func=step.run)


def build_parser() -> argparse.ArgumentParser:
    """The parser: one subcommand per rule (see :data:`STEPS`)."""
    parser = argparse.ArgumentParser(prog="aefheight", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, step in STEPS.items():
        _add_step(sub, name, step)
    return parser


def _low_disk(args: A, below: int = 64 * 2**20) -> str:
    """A note on the fullest filesystem among the paths in ``args``, if nearly full."""
    import shutil

    notes = []
    for value in vars(args).values():
        for p in value if isinstance(value, list) else [value]:
            if isinstance(p, Path):
                folder = next((q for q in (p, *p.parents) if q.is_dir()), None)
                if folder is not None and shutil.disk_usage(folder).free < below:
                    notes.append(f"{folder} has {shutil.disk_usage(folder).free // 2**20} MiB free")
    return f"; disk nearly full: {notes[0]}" if notes else ""


WRITE_ERRNOS = (errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EDQUOT, errno.ENOTDIR, errno.EEXIST)


def _error_line(args: A, exc: BaseException) -> str | None:
    """The one line a user error ends with; None for a bug (the traceback is kept)."""
    if isinstance(exc, AefHeightError):
        return str(exc)
    first = first_line(exc)
    if type(exc).__module__.startswith("rasterio"):  # RasterioError, WarpOperationError, CPLE_*
        return f"raster I/O failed: {first}{_low_disk(args)}"
    if type(exc).__module__.startswith(("pyarrow", "pyogrio")):  # a damaged index or GeoPackage
        return f"cannot read a table ({type(exc).__name__}): {first}; rerun the step that wrote it"
    if isinstance(exc, OSError) and exc.errno in WRITE_ERRNOS:
        return f"cannot write {exc.filename or 'output'}: {exc.strerror}"
    return None


def _unwind(signum: int, frame: Any) -> None:
    """End the step on SIGTERM/SIGINT (Snakemake, SLURM, Ctrl-C) through its ``finally``s.

    So :func:`~aefheight.files.scratch_path` removes the partial file. Later signals are
    ignored (Ctrl-C reaches the step and Snakemake terminates it too: a second one must not
    interrupt the clean-up); a forked child (a DataLoader worker) takes the default action.
    """
    if os.getpid() != _STEP_PID:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
        return
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_IGN)
    raise SystemExit(128 + signum)


_STEP_PID = os.getpid()  # the step's own process (forked children inherit the handler)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one step; a user error ends with one line on stderr and exit code 2."""
    if argv is None:  # a process of its own (tests call main in theirs with argv)
        for sig in (signal.SIGTERM, signal.SIGINT):
            if signal.getsignal(sig) is not signal.SIG_IGN:  # an ignored signal stays so
                signal.signal(sig, _unwind)
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    os.environ.setdefault("GDAL_NUM_THREADS", str(max(1, args.threads)))
    # GDAL's block cache defaults to 5 % of RAM and fills with every block a step reads, so a
    # step's memory would grow with the AOI (up to 6 GB on a 128 GB node). Each step reads a
    # block once or a few times in a row; 256 MB keeps those re-reads cached at any AOI size.
    os.environ.setdefault("GDAL_CACHEMAX", "256")
    try:
        args.func(args)
    except Exception as exc:
        line = _error_line(args, exc)
        if line is None:
            raise
        print(f"aefheight {args.command}: error: {line}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
