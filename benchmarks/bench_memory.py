"""Peak memory of the AOI-sized steps against the AOI's size (issue: flat memory in every step).

Each step runs in a fresh process (``_common.run_measured``: peak RSS from ``wait4`` through a
small launcher) on AOIs of growing size, with ``GDAL_CACHEMAX=256`` as ``python -m aefheight``
sets it; the ratio is taken against the smallest AOI of the same invocation:

* ``tile``: ``aefheight.patches.tile`` (the rule's function) on the mirrored benchmark AOIs
  (``_common.make_aoi``), 256 px patches, into a scratch store.
* ``synthesize``: ``aefheight.synthetic.write_synthetic`` (the rule's function) at the demo's
  settings but the given size. It builds whole-AOI fields, so it is expected to grow.

Prediction has its own sweep (``bench_predict.py --part memory``).

Run:  .venv/bin/python benchmarks/bench_memory.py [--sizes 2048 4096 8192] [--synth 1024 2048 4096]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

import _common as c

SYNTH = """
import sys
sys.path.insert(0, {workflow!r})
from pathlib import Path
from aefheight.settings import make
from aefheight.synthetic import SyntheticSettings, write_synthetic
out = Path({out!r})
s = make(SyntheticSettings, width={size}, height={size})
write_synthetic(s, out / "e.tif", out / "d.tif", out / "lc.tif", out / "dem.tif")
"""


def measure(step: str, code: str, size: int, out) -> dict:
    """Run one step in its own process; its wall time and peak RSS."""
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    env = {**os.environ, "GDAL_CACHEMAX": "256", "OMP_NUM_THREADS": "2"}
    load = os.getloadavg()[0]
    wall, rss, _ = c.run_measured([sys.executable, "-c", code], env=env)
    shutil.rmtree(out, ignore_errors=True)
    row = {"step": step, "AOI px": f"{size}^2", "Mpx": size * size / 1e6, "peak RSS MiB": rss}
    c.log(row | {"s": wall})
    return row | {"s": wall, "load at start": load}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="*", default=[2048, 4096, 8192])
    ap.add_argument("--synth", type=int, nargs="*", default=[1024, 2048, 4096])
    a = ap.parse_args()
    c.log(c.machine())
    workflow = str(c.ROOT / "workflow")
    scratch = c.DATA / "memory_scratch"
    rows = []
    for size in a.sizes:
        paths = c.make_aoi(size, size, f"aoi_{size}")
        code = c.tile_code(paths, scratch, patch=256)
        rows.append(measure("tile", code, size, scratch))
    for size in a.synth:
        code = SYNTH.format(workflow=workflow, out=str(scratch), size=size)
        rows.append(measure("synthesize", code, size, scratch))
    for r in rows:
        first = next(q for q in rows if q["step"] == r["step"])
        r["RSS / smallest"] = r["peak RSS MiB"] / first["peak RSS MiB"]
        r["px / smallest"] = r["Mpx"] / first["Mpx"]
    print(f"\n## Peak RSS against AOI size ({c.machine()})\n")
    print(c.table(rows, ["step", "AOI px", "Mpx", "peak RSS MiB", "RSS / smallest",
                         "px / smallest", "s", "load at start"]))  # fmt: skip


if __name__ == "__main__":
    main()
