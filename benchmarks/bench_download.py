"""Item 6: AEF download throughput against the local fixture server, with and without faults.

Runs the fetch_embeddings rule's entry point (``python -m aefheight fetch-embeddings``, the
rule's 4 threads) against the test suite's fixture server on 127.0.0.1 (the Source Cooperative
layout, band-interleaved COGs), first with no fault, then with every 2nd request answered
HTTP 500, alternating the two ``--repeats`` times. Prints MB/s of int8 codes written (median)
and the faulty/clean ratio, plus the run's request summary line.

Run:  .venv/bin/python benchmarks/bench_download.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "sources"), str(ROOT / "workflow")]

from aefheight.inputs.sources import steps  # noqa: E402
from fixture_server import serve  # noqa: E402
from fixture_world import aoi_section, build, downloads  # noqa: E402


def run_once(srv, index: Path, work: Path, every: int | None) -> tuple[float, float, str]:
    """(seconds, MB written, summary line) of one download."""
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    srv.clear()
    if every:
        srv.fail_every(every, "500")
    out = work / "embeddings.tif"
    cmd = [sys.executable, "-m", "aefheight", "fetch-embeddings", "--aoi", "fix"]
    cmd += ["--settings", json.dumps(aoi_section("source_coop"))]
    cmd += ["--downloads", json.dumps(downloads(srv.url, retry_delay_s=0.01))]
    cmd += ["--index", str(index), "--cache-dir", str(work / "blocks"), "--embeddings", str(out)]
    cmd += ["--provenance", str(work / "embeddings.json")]
    cmd += ["--threads", "4"]
    env = {**os.environ, "PYTHONPATH": str(ROOT / "workflow")}
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    dt = time.perf_counter() - t0
    import rasterio

    with rasterio.open(out) as ds:
        mb = ds.width * ds.height * ds.count / 1e6
    return dt, mb, proc.stderr.strip().splitlines()[-1].split(": ", 1)[-1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        world = build(tmp / "world")
        with serve(world.root) as srv:
            index = tmp / "index" / "aef_index.parquet"
            steps.run_index("source_coop", downloads(srv.url), index)
            rates: dict[str, list[float]] = {"clean": [], "every 2nd 500": []}
            last = {}
            for _ in range(a.repeats):
                for name, every in (("clean", None), ("every 2nd 500", 2)):
                    dt, mb, summary = run_once(srv, index, tmp / "run", every)
                    rates[name].append(mb / dt)
                    last[name] = summary
    for name, r in rates.items():
        print(f"{name:14s} {statistics.median(r):6.2f} MB/s (median of {len(r)}); {last[name]}")
    ratio = statistics.median(rates["every 2nd 500"]) / statistics.median(rates["clean"])
    print(f"faulty / clean throughput: {ratio:.2f}")


if __name__ == "__main__":
    main()
