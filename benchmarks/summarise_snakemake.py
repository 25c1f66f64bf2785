"""Item 4: one table of per-rule wall time and peak memory from Snakemake's benchmark files.

Every rule of the workflow has a ``benchmark:`` file, ``results/<aoi>/benchmarks/<job>.tsv``
(columns s, h:m:s, max_rss, max_vms, max_uss, max_pss, io_in, io_out, mean_load, cpu_time;
memory in MB). This reads all of them under each folder given and prints one Markdown table,
in pipeline order, with the totals.

Run:  .venv/bin/python benchmarks/summarise_snakemake.py results/demo [more AOI folders]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

# the order of the steps in the study, for the rows (others follow, by name)
ORDER = [
    "fetch_aef_index",
    "fetch_embeddings",
    "fetch_dsm",
    "synthesize",
    "tile",
    "split",
    "split_map",
    "train",
    "predict",
    "evaluate",
    "collect_metrics",
    "height_shift",
    "tables",
    "plot",
]


def load(folder: Path) -> pd.DataFrame:
    """One row per job: the mean over a benchmark file's repeats."""
    bench = folder / "benchmarks" if (folder / "benchmarks").is_dir() else folder
    rows = []
    for tsv in sorted(bench.rglob("*.tsv")):
        df = pd.read_csv(tsv, sep="\t")
        if df.empty:
            continue
        job = tsv.relative_to(bench).with_suffix("").as_posix()
        step = job.split("/")[0]
        rank = ORDER.index(step) if step in ORDER else len(ORDER)
        r = df.mean(numeric_only=True)
        rows.append(
            {
                "aoi": folder.name,
                "job": job,
                "rank": rank,
                "wall s": r["s"],
                "cpu s": r.get("cpu_time", float("nan")),
                "peak RSS MB": r["max_rss"],
                "peak USS MB": r.get("max_uss", float("nan")),
                "read MB": r.get("io_in", float("nan")),
                "written MB": r.get("io_out", float("nan")),
                "mean load %": r.get("mean_load", float("nan")),
            }
        )
    if not rows:
        sys.exit(f"no benchmark files under {bench}")
    return pd.DataFrame(rows).sort_values(["rank", "job"]).drop(columns="rank")


def markdown(df: pd.DataFrame) -> str:
    cols = list(df.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for _, r in df.iterrows():
        cells = []
        for col in cols:
            v = r[col]
            if isinstance(v, float):
                v = "" if pd.isna(v) else (f"{v:.1f}" if abs(v) < 1000 else f"{v:.0f}")
            cells.append(str(v))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("folders", type=Path, nargs="+", help="results/<aoi> folders")
    a = ap.parse_args()
    for folder in a.folders:
        df = load(folder)
        print(f"\n### {folder}: {len(df)} jobs\n")
        print(markdown(df.drop(columns="aoi")))
        print(
            f"\nsum of wall times {df['wall s'].sum():.0f} s "
            f"({df['wall s'].sum() / 60:.1f} min, jobs may overlap on 2 cores); "
            f"largest peak RSS {df['peak RSS MB'].max():.0f} MB "
            f"({df.loc[df['peak RSS MB'].idxmax(), 'job']})"
        )


if __name__ == "__main__":
    main()
