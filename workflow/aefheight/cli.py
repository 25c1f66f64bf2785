"""The ``aefheight`` command line: one subcommand per workflow step.

Snakemake rules call these; a user can run any step by hand with the same arguments (the
rule's shell command is printed by ``snakemake -p``). Settings arrive as one JSON object per
config section (``--settings``), checked against the same dataclasses as the config.
"""

from __future__ import annotations

import argparse
import errno
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from rasterio.errors import RasterioIOError

from .errors import AefHeightError
from .settings import from_mapping, parse_json

log = logging.getLogger("aefheight")


def _common() -> argparse.ArgumentParser:
    """Options every subcommand shares."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--threads", type=int, default=1, help="CPU threads to use")
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"])
    return p


def _settings(p: argparse.ArgumentParser, flag: str = "--settings") -> None:
    p.add_argument(flag, default="{}", help="JSON object of the config section")


def cmd_synthesize(a: argparse.Namespace) -> None:
    from .synthetic import SyntheticSettings, write_synthetic

    s = from_mapping(SyntheticSettings, parse_json(a.settings), a.section)
    write_synthetic(s, a.embeddings, a.dsm, a.landcover)


def cmd_tile(a: argparse.Namespace) -> None:
    from .patches import TilingSettings, tile

    tile(
        a.embeddings,
        a.dsm,
        a.out_dir,
        from_mapping(TilingSettings, parse_json(a.settings), "tiling"),
    )


def cmd_split(a: argparse.Namespace) -> None:
    from .split import SplitSettings, write_split

    s = from_mapping(SplitSettings, parse_json(a.settings), "split")
    write_split(a.index, a.grid, a.gpkg, a.raster, a.areas, s)


def cmd_train(a: argparse.Namespace) -> None:
    from .models import ModelSettings
    from .train import TrainSettings, train_net, train_ridge

    ms = from_mapping(ModelSettings, parse_json(a.model_settings), f"models.{a.model}")
    if ms.is_net:
        ts = from_mapping(TrainSettings, parse_json(a.settings), "training")
        train_net(
            a.store, a.split, a.split_raster, ms, ts, a.seed, a.out_dir, a.threads, a.model
        )
    else:
        train_ridge(a.store, a.split, a.split_raster, ms, a.seed, a.out_dir)


def cmd_predict(a: argparse.Namespace) -> None:
    from .predict import PredictSettings, predict_raster

    s = from_mapping(PredictSettings, parse_json(a.settings), "prediction")
    predict_raster(
        a.embeddings,
        a.checkpoint,
        a.out,
        s,
        a.threads,
        meta={"model": a.model, "seed": str(a.seed)},
    )


def cmd_evaluate(a: argparse.Namespace) -> None:
    from .metrics import evaluate
    from .raster import write_csv

    ev = evaluate(a.prediction, a.dsm, a.split, a.landcover, seed=a.seed)
    for df in (ev.metrics, ev.by_height, ev.by_class, ev.seams):
        df.insert(0, "seed", a.seed)
        df.insert(0, "model", a.model)
    write_csv(ev.metrics, a.out_csv)
    write_csv(ev.seams, a.out_seams)
    write_csv(ev.sample, a.out_samples)
    write_csv(ev.by_height, a.out_by_height)
    write_csv(ev.by_class, a.out_by_class)


def cmd_shift(a: argparse.Namespace) -> None:
    from .metrics import height_histograms, shift_statistics
    from .raster import write_csv

    hist = height_histograms(a.dsm, a.split, a.embeddings)
    quantiles, stats = shift_statistics(hist)
    write_csv(hist, a.out_hist)
    write_csv(quantiles, a.out_quantiles)
    write_csv(stats, a.out_stats)


def cmd_tables(a: argparse.Namespace) -> None:
    import pandas as pd

    from . import tables
    from .findings import findings_rst
    from .metrics import crossover_height
    from .raster import write_csv

    metrics = pd.read_csv(a.metrics)
    t = tables.metrics_table(metrics)
    tables.write_text(tables.to_markdown(t, tables.NOTE), a.out_md)
    tables.write_text(
        tables.to_latex(t, "Accuracy per model and split. " + tables.NOTE, "tab:metrics"), a.out_tex
    )
    head = tables.headline(metrics)
    comps = tables.comparisons(metrics, a.nets, a.baselines)
    write_csv(comps, a.out_comparisons)
    train = tables.training_summary([pd.read_csv(p) for p in a.histories], a.max_epochs)
    write_csv(train, a.out_training)
    tables.write_text(tables.to_markdown(tables.plain_table(train, 2)), a.out_training_md)
    seams = pd.concat([pd.read_csv(p) for p in a.seams], ignore_index=True)
    write_csv(seams, a.out_seams)
    quant, stats = pd.read_csv(a.quantiles), pd.read_csv(a.shift_stats)
    cross = []
    for p in a.by_height:
        bh = pd.read_csv(p)
        for split in ("test", "all"):
            sub = bh if split == "all" else bh[bh["split"] == split]
            g = sub.assign(s1=sub["n"] * sub["bias_m"], s2=sub["n"] * sub["rmse_m"] ** 2)
            g = g.groupby(["height_lo_m", "height_hi_m"], as_index=False)[["n", "s1", "s2"]].sum()
            g["bias_m"] = g["s1"] / g["n"]
            cross.append(
                {
                    "model": bh["model"].iloc[0],
                    "seed": bh["seed"].iloc[0],
                    "split": split,
                    "crossover_height_m": crossover_height(g),
                }
            )
    cross = pd.DataFrame(cross)
    write_csv(cross, a.out_crossover)
    text = (
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
    tables.write_text(text, a.out_shift_md)
    tables.write_text(
        tables.to_latex(tables.plain_table(quant, 1), "Reference height per split.", "tab:heights")
        + tables.to_latex(tables.plain_table(stats, 3), "Train vs test height shift.", "tab:shift"),
        a.out_shift_tex,
    )
    areas = pd.read_csv(a.areas)
    tables.write_text(
        findings_rst(a.aoi, head, comps, train, areas, seams, stats), a.out_findings
    )


def cmd_front(a: argparse.Namespace) -> None:
    from .findings import front_page
    from .tables import write_text

    fragments = [Path(p).read_text(encoding="utf-8") for p in a.findings]
    write_text(front_page(fragments, a.methods.read_text(encoding="utf-8")), a.out)


def cmd_collect(a: argparse.Namespace) -> None:
    import pandas as pd

    from .raster import write_csv

    df = pd.concat([pd.read_csv(p).assign(aoi=a.aoi) for p in a.inputs], ignore_index=True)
    write_csv(df[["aoi", *[c for c in df.columns if c != "aoi"]]], a.out)


def cmd_plot(a: argparse.Namespace) -> None:
    import pandas as pd

    from . import figures

    def by_model(paths: list[Path]) -> dict[str, pd.DataFrame]:
        return {Path(p).stem.rsplit("_seed", 1)[0]: pd.read_csv(p) for p in paths}

    if a.kind == "split-map":
        figures.split_map(a.split, a.split_raster, a.dsm, a.out)
    elif a.kind == "pred-vs-ref":
        figures.pred_vs_ref(pd.read_csv(a.samples[0]), pd.read_csv(a.metrics), a.model, a.out)
    elif a.kind == "loss-curves":
        hist = {str((h := pd.read_csv(p))["model"].iloc[0]): h for p in a.histories}
        figures.loss_curves(hist, a.out)
    elif a.kind == "residual-map":
        figures.residual_map(a.prediction, a.dsm, a.model, a.out)
    elif a.kind == "dh-hist":
        figures.dh_histograms(by_model(a.samples), a.out)
    elif a.kind == "height-shift":
        figures.height_shift(pd.read_csv(a.hist), pd.read_csv(a.stats), a.out)
    elif a.kind == "error-by-height":
        figures.error_by_height(by_model(a.by_height), a.out)


def cmd_download(a: argparse.Namespace) -> None:
    from .sources import steps

    downloads = parse_json(a.downloads, "--downloads")
    if a.kind == "index":
        steps.run_index(a.source, downloads, a.out)
        return
    section = parse_json(a.settings)
    if a.kind == "embeddings":
        steps.run_embeddings(
            a.aoi, section, downloads, a.out, a.cache_dir, a.index, a.threads, a.provenance
        )
    else:
        steps.run_dsm(a.aoi, section, downloads, a.out, a.cache_dir, a.provenance)


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = argparse.ArgumentParser(prog="aefheight", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synthesize", parents=[common], help="make the synthetic demo AOI")
    _settings(p)
    p.add_argument("--section", default="synthetic", help="config path named in messages")
    p.add_argument("--embeddings", type=Path, required=True)
    p.add_argument("--dsm", type=Path, required=True)
    p.add_argument("--landcover", type=Path)
    p.set_defaults(func=cmd_synthesize)

    p = sub.add_parser("tile", parents=[common], help="cut patches into the patch store")
    _settings(p)
    p.add_argument("--embeddings", type=Path, required=True)
    p.add_argument("--dsm", type=Path, required=True)
    p.add_argument("--out-dir", type=Path, required=True)
    p.set_defaults(func=cmd_tile)

    p = sub.add_parser("split", parents=[common], help="spatial train/val/test split")
    _settings(p)
    p.add_argument("--index", type=Path, required=True)
    p.add_argument("--grid", type=Path, required=True, help="a raster on the AOI grid")
    p.add_argument("--gpkg", type=Path, required=True)
    p.add_argument("--raster", type=Path, required=True)
    p.add_argument("--areas", type=Path, required=True, help="realized areas (CSV)")
    p.set_defaults(func=cmd_split)

    p = sub.add_parser("train", parents=[common], help="train one model (net or ridge)")
    _settings(p)
    p.add_argument("--model", required=True, help="model name (config key under models)")
    p.add_argument("--model-settings", default="{}")
    p.add_argument("--store", type=Path, required=True)
    p.add_argument("--split", type=Path, required=True, help="split.gpkg")
    p.add_argument("--split-raster", type=Path, required=True, help="split.tif (loss masks)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out-dir", type=Path, required=True)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("predict", parents=[common], help="predict the whole AOI into a COG")
    _settings(p)
    p.add_argument("--model", default="")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--embeddings", type=Path, required=True)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser("evaluate", parents=[common], help="metrics per split")
    p.add_argument("--model", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prediction", type=Path, required=True)
    p.add_argument("--dsm", type=Path, required=True)
    p.add_argument("--split", type=Path, required=True, help="split.tif")
    p.add_argument("--landcover", type=Path, help="optional land-cover classes raster")
    p.add_argument("--out-csv", type=Path, required=True)
    p.add_argument("--out-samples", type=Path, required=True)
    p.add_argument("--out-by-height", type=Path, required=True)
    p.add_argument("--out-by-class", type=Path, required=True)
    p.add_argument("--out-seams", type=Path, required=True)
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("shift", parents=[common], help="height distribution per split")
    p.add_argument("--dsm", type=Path, required=True)
    p.add_argument("--split", type=Path, required=True, help="split.tif")
    p.add_argument("--embeddings", type=Path, required=True, help="valid pixels as the metrics")
    p.add_argument("--out-hist", type=Path, required=True)
    p.add_argument("--out-quantiles", type=Path, required=True)
    p.add_argument("--out-stats", type=Path, required=True)
    p.set_defaults(func=cmd_shift)

    p = sub.add_parser("tables", parents=[common], help="tables, comparisons and findings")
    p.add_argument("--aoi", required=True)
    p.add_argument("--metrics", type=Path, required=True)
    p.add_argument("--quantiles", type=Path, required=True)
    p.add_argument("--shift-stats", type=Path, required=True)
    p.add_argument("--areas", type=Path, required=True)
    p.add_argument("--histories", nargs="*", default=[])
    p.add_argument("--by-height", nargs="*", default=[])
    p.add_argument("--seams", nargs="+", required=True)
    p.add_argument("--nets", nargs="*", default=[], help="model names of the nets")
    p.add_argument("--baselines", nargs="*", default=[], help="model names of the baselines")
    p.add_argument("--max-epochs", type=int, required=True)
    for name in ("md", "tex", "comparisons", "training", "training-md", "seams", "crossover"):
        p.add_argument(f"--out-{name}", type=Path, required=True)
    for name in ("shift-md", "shift-tex", "findings"):
        p.add_argument(f"--out-{name}", type=Path, required=True)
    p.set_defaults(func=cmd_tables)

    p = sub.add_parser("front", parents=[common], help="the report's first page")
    p.add_argument("--findings", nargs="+", required=True, help="per-AOI findings.rst")
    p.add_argument("--methods", type=Path, required=True, help="workflow/report/workflow.rst")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_front)

    p = sub.add_parser("collect", parents=[common], help="concatenate metric CSVs")
    p.add_argument("--aoi", required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("inputs", nargs="+", type=Path)
    p.set_defaults(func=cmd_collect)

    p = sub.add_parser("plot", parents=[common], help="draw one figure")
    p.add_argument(
        "kind",
        choices=[
            "split-map",
            "pred-vs-ref",
            "loss-curves",
            "residual-map",
            "dh-hist",
            "height-shift",
            "error-by-height",
        ],
    )
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--split", type=Path)
    p.add_argument("--split-raster", type=Path)
    p.add_argument("--dsm", type=Path)
    p.add_argument("--prediction", type=Path)
    p.add_argument("--samples", nargs="*", default=[])
    p.add_argument("--metrics", type=Path)
    p.add_argument("--hist", type=Path)
    p.add_argument("--stats", type=Path)
    p.add_argument("--by-height", nargs="*", default=[])
    p.add_argument("--model", default="")
    p.add_argument("--histories", nargs="*", default=[])
    p.set_defaults(func=cmd_plot)

    p = sub.add_parser(
        "download",
        parents=[common],
        help="fetch real data: the AEF index, an AOI's embeddings or its DSM",
    )
    p.add_argument("kind", choices=["index", "embeddings", "dsm"])
    _settings(p)  # the AOI's section (aois.<name>) for embeddings/dsm
    p.add_argument("--downloads", default="{}", help="JSON object of the downloads section")
    p.add_argument("--aoi", default="", help="AOI name (config key under aois)")
    p.add_argument("--source", default="source_coop", help="index: source_coop or gcs")
    p.add_argument("--index", type=Path, help="embeddings: the cached AEF index parquet")
    p.add_argument(
        "--cache-dir",
        type=Path,
        default=Path("resources"),
        help="where downloads are cached (resumable)",
    )
    p.add_argument("--provenance", type=Path, help="write a provenance JSON here")
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(func=cmd_download)
    return parser


def _low_disk(args: argparse.Namespace, below: int = 64 * 2**20) -> str:
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


def main(argv: Sequence[str] | None = None) -> int:
    """Run one step; a user error ends with one line on stderr and exit code 2."""
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
    except AefHeightError as exc:
        print(f"aefheight {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RasterioIOError as exc:  # GDAL failed to read or write a raster mid-way
        print(
            f"aefheight {args.command}: error: raster I/O failed: {exc}{_low_disk(args)}",
            file=sys.stderr,
        )
        return 2
    except OSError as exc:
        if exc.errno in (
            errno.ENOSPC,
            errno.EACCES,
            errno.EROFS,
            errno.EDQUOT,
            errno.ENOTDIR,
            errno.EEXIST,
        ):
            print(
                f"aefheight {args.command}: error: cannot write "
                f"{exc.filename or 'output'}: {exc.strerror}",
                file=sys.stderr,
            )
            return 2
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
